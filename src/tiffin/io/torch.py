"""``torch.Tensor`` parameters and results: read like arrays (nested JSON lists, or a
``.npy`` body), with the same ``Shape`` and ``DType`` constraints; floats default to
``float32``, torch's own default. Results go back as arrays: any tensor is moved to the
CPU and detached first.

    def forward(self, x: Annotated[torch.Tensor, Shape(-1, 256)]) -> torch.Tensor
"""

from __future__ import annotations

import sys
from typing import Any, Self

from tiffin.io.numpy import DType, NDArrayCodec, Shape

__all__ = ["TensorCodec"]


def _numpy(tensor: Any) -> Any:
    return tensor.detach().cpu().numpy()


class TensorCodec(NDArrayCodec):
    """Reads a tensor as an array then hands it to torch without a copy; writes it back as
    an array."""

    name = "tensor"
    priority = 1

    @classmethod
    def create(cls, annotation: Any, metadata: tuple[Any, ...]) -> Self | None:
        torch = sys.modules.get("torch")
        if torch is None or annotation is not torch.Tensor:
            return None
        import numpy as np

        codec = cls(next((m for m in metadata if isinstance(m, Shape)), None), None)
        marker = next((m for m in metadata if isinstance(m, DType)), None)
        if marker is not None:
            base = NDArrayCodec.create(np.ndarray, (marker,))
            assert base is not None
            codec.dtype = base.dtype
        else:
            codec.dtype = np.dtype("float32")
        return codec

    def _tensor(self, array: Any) -> Any:
        return sys.modules["torch"].from_numpy(array)

    def from_json(self, value: Any) -> Any:
        return self._tensor(super().from_json(value))

    def from_body(self, body: bytes, media_type: str) -> Any:
        return self._tensor(super().from_body(body, media_type))

    def to_json(self, obj: Any) -> Any:
        return _numpy(obj) if hasattr(obj, "detach") else obj

    def to_body(self, obj: Any, accept: str) -> tuple[bytes, str] | None:
        return super().to_body(_numpy(obj) if hasattr(obj, "detach") else obj, accept)
