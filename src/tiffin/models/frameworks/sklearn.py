"""scikit-learn estimators, saved with pickle protocol 5 (large arrays out of band)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tiffin.extras import import_optional
from tiffin.models.frameworks import Framework
from tiffin.models.frameworks.pickle import dump, load
from tiffin.storage import Staging

__all__ = ["SklearnFramework"]

# Methods offered as signatures when the estimator has them. Each maps rows of its input
# to rows of its output independently, so calls can be batched along dimension 0.
_METHODS = ("predict", "predict_proba", "transform")


class SklearnFramework(Framework):
    """scikit-learn estimators, pipelines and transformers.

    The estimator is pickled like the ``pickle`` framework does it, with its large arrays
    written out of band, so loading a big forest or embedding table costs about one copy.
    Default signatures are whichever of ``predict``, ``predict_proba`` and ``transform``
    the estimator has, batchable along dimension 0: scikit-learn computes these row by
    row, so concatenating requests and splitting the result gives the same answers. Pass
    ``signatures=`` to ``save`` when a custom estimator does not work that way.

    Loading runs the pickle, so load only models you or your registry trust. ``load``
    takes no arguments.

    Example:
        clf = LogisticRegression().fit(X, y)
        model = tiffin.models.save("iris", clf)  # detected: framework "sklearn"
        model.load().predict(X)
    """

    name = "sklearn"
    modules = ("sklearn",)
    package = "scikit-learn"
    extra = "sklearn"

    def signatures(self, obj: Any) -> dict[str, dict[str, Any]]:
        return {
            method: {"batchable": True, "batch_dim": 0}
            for method in _METHODS
            if callable(getattr(obj, method, None))
        }

    def save(self, obj: Any, target: Staging) -> dict[str, Any]:
        return dump(obj, target)

    def load(self, path: Path, options: Mapping[str, Any], **kwargs: Any) -> Any:
        self.reject_unknown(kwargs, "a scikit-learn model")
        import_optional("sklearn", "sklearn", purpose="to load a scikit-learn model")
        return load(path, options)
