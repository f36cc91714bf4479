"""XGBoost boosters and their scikit-learn wrappers, in XGBoost's own UBJSON format."""

from __future__ import annotations

import importlib
import importlib.metadata
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tiffin.exceptions import FrameworkError, InvalidArgument
from tiffin.extras import import_optional
from tiffin.models.frameworks import Framework
from tiffin.storage import Staging

__all__ = ["XGBoostFramework"]

MODEL_FILE = "model.ubj"
# The distributions that install the ``xgboost`` module.
_DISTRIBUTIONS = ("xgboost", "xgboost-cpu")
_NAME = r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*"
_CLASS_PATH = re.compile(f"{_NAME}:{_NAME}")


class XGBoostFramework(Framework):
    """XGBoost models: ``xgboost.Booster`` and the scikit-learn wrappers (``XGBClassifier``,
    ``XGBRegressor``, ``XGBRanker``, ... and subclasses of them).

    The model is written with ``save_model`` to ``model.ubj``, which XGBoost reads back
    across versions, so no pickle is involved. The class is recorded in the options as
    ``{"class": "module:qualname"}``; ``load()`` (no arguments) creates that class and
    calls ``load_model``. Because the options come from a file, ``load`` refuses any class
    that is not a subclass of ``xgboost.Booster`` or ``xgboost.XGBModel``.

    Default signatures: ``predict`` (and ``predict_proba`` for classifiers) of a wrapper,
    batchable along dimension 0 since trees score rows independently; ``predict`` of a
    ``Booster``, not batchable as it takes a ``DMatrix``.

    Example:
        clf = xgboost.XGBClassifier(n_estimators=50).fit(X, y)
        model = tiffin.models.save("churn", clf)  # detected: framework "xgboost"
        model.load().predict_proba(X)
    """

    name = "xgboost"
    modules = ("xgboost",)
    package = "xgboost"
    extra = "xgboost"

    def version(self) -> str | None:
        # The module is the truth when it is loaded: both distributions may be installed.
        module = sys.modules.get("xgboost")
        if module is None:
            for distribution in _DISTRIBUTIONS:
                try:
                    return importlib.metadata.version(distribution)
                except importlib.metadata.PackageNotFoundError:
                    continue
            try:
                module = importlib.import_module("xgboost")
            except ImportError:
                return None
        found = getattr(module, "__version__", None)
        return found if isinstance(found, str) else None

    def handles(self, obj: Any) -> bool:
        xgb = sys.modules.get("xgboost")
        return xgb is not None and isinstance(obj, xgb.Booster | xgb.XGBModel)

    def signatures(self, obj: Any) -> dict[str, dict[str, Any]]:
        xgb = sys.modules.get("xgboost")
        if xgb is None or not isinstance(obj, xgb.XGBModel):
            return {"predict": {"batchable": False, "batch_dim": 0}}
        return {
            method: {"batchable": True, "batch_dim": 0}
            for method in ("predict", "predict_proba")
            if callable(getattr(obj, method, None))
        }

    def save(self, obj: Any, target: Staging) -> dict[str, Any]:
        xgb = import_optional("xgboost", "xgboost", purpose="to save an XGBoost model")
        cls = type(obj)
        if not isinstance(obj, xgb.Booster | xgb.XGBModel):
            raise InvalidArgument(
                f"The 'xgboost' framework saves xgboost.Booster and its scikit-learn wrappers "
                f"(XGBClassifier, XGBRegressor, ...), not {cls.__name__}. Pass another "
                "framework=, or leave it out to have one detected.",
                detail={"framework": self.name, "type": cls.__name__},
            )
        if "<locals>" in cls.__qualname__:
            raise InvalidArgument(
                f"The class {cls.__qualname__} is defined inside a function, so it cannot be "
                "created again when the model is loaded. Define it at module level.",
                detail={"framework": self.name, "type": cls.__qualname__},
            )
        obj.save_model(str(target.path / MODEL_FILE))
        return {"class": f"{cls.__module__}:{cls.__qualname__}"}

    def load(self, path: Path, options: Mapping[str, Any], **kwargs: Any) -> Any:
        self.reject_unknown(kwargs, "an XGBoost model")
        xgb = import_optional("xgboost", "xgboost", purpose="to load an XGBoost model")
        model = self._model_class(xgb, options.get("class"))()
        model.load_model(str(path / MODEL_FILE))
        return model

    def _model_class(self, xgb: Any, recorded: Any) -> type[Any]:
        """The class named in the options, if it is an XGBoost model class."""
        detail = {"framework": self.name, "class": str(recorded)}
        damaged = "The model.yaml was edited or damaged; save the model again."
        if not isinstance(recorded, str) or not _CLASS_PATH.fullmatch(recorded):
            raise FrameworkError(
                f"The options of this XGBoost model name the class {recorded!r}, which is not "
                f"of the form 'module:qualname'. {damaged}",
                detail=detail,
            )
        module_name, _, qualname = recorded.partition(":")
        try:
            found: Any = importlib.import_module(module_name)
            for part in qualname.split("."):
                found = getattr(found, part)
        except (ImportError, AttributeError) as exc:
            raise FrameworkError(
                f"The XGBoost model's class {recorded} cannot be imported ({exc}). Install the "
                "code that defines it where the model is loaded.",
                detail=detail,
            ) from exc
        if not (isinstance(found, type) and issubclass(found, xgb.Booster | xgb.XGBModel)):
            raise FrameworkError(
                f"The options of this XGBoost model name {recorded}, which is not a subclass of "
                f"xgboost.Booster or xgboost.XGBModel, so it is not loaded. {damaged}",
                detail=detail,
            )
        return found
