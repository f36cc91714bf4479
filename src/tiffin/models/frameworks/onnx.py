"""ONNX models, loaded as ONNX Runtime inference sessions."""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tiffin.exceptions import InvalidArgument
from tiffin.extras import import_optional
from tiffin.models.frameworks import Framework
from tiffin.storage import Staging

__all__ = ["OnnxFramework"]

MODEL_FILE = "model.onnx"
DEFAULT_PROVIDERS = ("CPUExecutionProvider",)


class OnnxFramework(Framework):
    """ONNX models (``onnx.ModelProto``), saved to ``model.onnx``.

    Records the model's ``ir_version`` and ``opset`` (domain -> version, ``""`` being the
    default domain) in the options. The whole model must fit in one protobuf message
    (2 GiB); save larger models with external data as files, with ``tiffin.models.create``.

    ``load()`` returns an ``onnxruntime.InferenceSession``. Arguments:
        providers: execution providers in order of preference, names or
            ``(name, options)`` pairs; default ``["CPUExecutionProvider"]``. A provider
            this onnxruntime build lacks is an error rather than a silent CPU fallback.
        sess_options: an ``onnxruntime.SessionOptions``.
        raw: return the ``onnx.ModelProto`` instead of a session.

    The default signature is ``run`` (``session.run(output_names, feeds)``), not batchable.

    Example:
        model = tiffin.models.save("iris-onnx", skl2onnx.to_onnx(clf, X[:1]))
        session = model.load(providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
        session.run(None, {"X": X})
    """

    name = "onnx"
    modules = ("onnx",)
    package = "onnx"
    extra = "onnx"

    def handles(self, obj: Any) -> bool:
        onnx = sys.modules.get("onnx")
        return onnx is not None and isinstance(obj, onnx.ModelProto)

    def signatures(self, obj: Any) -> dict[str, dict[str, Any]]:
        return {"run": {"batchable": False, "batch_dim": 0}}

    def save(self, obj: Any, target: Staging) -> dict[str, Any]:
        onnx = import_optional("onnx", "onnx", purpose="to save an ONNX model")
        if not isinstance(obj, onnx.ModelProto):
            raise InvalidArgument(
                f"The 'onnx' framework saves onnx.ModelProto objects, not "
                f"{type(obj).__name__}. Convert the model to ONNX first, or pass another "
                "framework=.",
                detail={"framework": self.name, "type": type(obj).__name__},
            )
        with target.open(MODEL_FILE) as stream:
            stream.write(obj.SerializeToString())
        opset = {entry.domain: int(entry.version) for entry in obj.opset_import}
        return {"ir_version": int(obj.ir_version), "opset": opset}

    def load(
        self,
        path: Path,
        options: Mapping[str, Any],
        *,
        providers: Sequence[str | tuple[str, dict[str, Any]]] | None = None,
        sess_options: Any = None,
        raw: bool = False,
        **kwargs: Any,
    ) -> Any:
        self.reject_unknown(kwargs, "an ONNX model", ("providers", "sess_options", "raw"))
        file = path / MODEL_FILE
        if raw:
            if providers is not None or sess_options is not None:
                raise InvalidArgument(
                    "raw=True returns the onnx.ModelProto, so providers= and sess_options= "
                    "do not apply. Pass either raw=True or the session arguments.",
                    detail={"framework": self.name},
                )
            onnx = import_optional("onnx", "onnx", purpose="to load an ONNX model")
            return onnx.load_model(str(file))
        ort = import_optional("onnxruntime", "onnx", purpose="to run an ONNX model")
        chosen = list(providers) if providers is not None else list(DEFAULT_PROVIDERS)
        available = ort.get_available_providers()
        missing = [
            name
            for name in (p if isinstance(p, str) else p[0] for p in chosen)
            if name not in available
        ]
        if missing:
            raise InvalidArgument(
                f"The ONNX Runtime execution provider(s) {', '.join(missing)} are not available "
                f"in this installation (available: {', '.join(available)}). Install the "
                "onnxruntime build that provides them, or choose from the available ones.",
                detail={"framework": self.name, "missing": missing, "available": available},
            )
        return ort.InferenceSession(str(file), sess_options=sess_options, providers=chosen)
