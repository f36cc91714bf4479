"""How Python types cross the wire: request and response schemas from type hints.

Example:
    from typing import Annotated
    import numpy as np
    from tiffin.io import DType, Shape

    Features = Annotated[np.ndarray, Shape(-1, 4), DType("float32")]

    @tiffin.api
    def predict(self, features: Features) -> np.ndarray: ...
"""

from tiffin.io.codec import Codec, codec_for
from tiffin.io.numpy import DType, Shape
from tiffin.io.spec import ApiIO, Param, dumps

__all__ = ["ApiIO", "Codec", "DType", "Param", "Shape", "codec_for", "dumps"]
