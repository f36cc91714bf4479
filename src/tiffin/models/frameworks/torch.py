"""PyTorch modules: whole ``torch.nn.Module`` objects, and TorchScript modules."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tiffin.exceptions import FrameworkError
from tiffin.extras import import_optional
from tiffin.models.frameworks import Framework
from tiffin.storage import Staging

__all__ = ["TorchFramework"]

MODEL_FILE = "model.pt"


class TorchFramework(Framework):
    """PyTorch models, saved whole to ``model.pt``.

    A ``torch.nn.Module`` is written with ``torch.save`` (options ``{"format": "module"}``)
    and comes back as the same class with the same parameters, buffers and train/eval
    mode; its class must be importable where it is loaded. A TorchScript module
    (``torch.jit.script`` / ``torch.jit.trace``) is written with ``torch.jit.save``
    (``{"format": "torchscript"}``) and loads without its Python source. Any other object
    given with ``framework="torch"``, such as a ``state_dict``, is written with
    ``torch.save`` too (``{"format": "object"}``).

    ``load(map_location="cpu")``: where tensors are placed, as in ``torch.load``; the
    default puts them on the CPU so a model saved on a GPU loads anywhere. Loading a
    ``module`` runs a pickle, so load only models you or your registry trust.

    The default signature is ``__call__``, not batchable: whether requests can be
    concatenated depends on the network (batch norm in training mode, batch-second
    sequence models); pass ``signatures={"__call__": {"batchable": True}}`` when they can.

    Example:
        model = tiffin.models.save("mlp", net.eval())  # detected: framework "torch"
        net = model.load(map_location="cuda:0")
        net(torch.randn(8, 4))
    """

    name = "torch"
    modules = ("torch",)
    package = "torch"
    extra = "torch"

    def handles(self, obj: Any) -> bool:
        torch = sys.modules.get("torch")
        return torch is not None and isinstance(obj, torch.nn.Module)

    def signatures(self, obj: Any) -> dict[str, dict[str, Any]]:
        return {"__call__": {"batchable": False, "batch_dim": 0}}

    def save(self, obj: Any, target: Staging) -> dict[str, Any]:
        torch = import_optional("torch", "torch", purpose="to save a torch model")
        with target.open(MODEL_FILE) as stream:
            if isinstance(obj, torch.jit.ScriptModule):
                torch.jit.save(obj, stream)
                return {"format": "torchscript"}
            torch.save(obj, stream)
        return {"format": "module" if isinstance(obj, torch.nn.Module) else "object"}

    def load(
        self, path: Path, options: Mapping[str, Any], *, map_location: Any = "cpu", **kwargs: Any
    ) -> Any:
        self.reject_unknown(kwargs, "a torch model", ("map_location",))
        torch = import_optional("torch", "torch", purpose="to load a torch model")
        file = path / MODEL_FILE
        kind = options.get("format")
        if kind == "torchscript":
            return torch.jit.load(str(file), map_location=map_location)
        if kind in ("module", "object"):
            return torch.load(file, map_location=map_location, weights_only=False)
        raise FrameworkError(
            f"This torch model was saved in the format {kind!r}, which this version of tiffin "
            "does not know. Upgrade tiffin, or save the model again.",
            detail={"framework": self.name, "format": kind},
        )
