"""How Python types cross the wire: request and response schemas from type hints.

Beside JSON types and pydantic models, tiffin reads and writes numpy arrays, pandas
DataFrames, files (``pathlib.Path``), images (``PIL.Image.Image``) and text; a package adds
more by registering a ``Codec`` (see ``tiffin.io.codec``).

Example:
    from typing import Annotated
    import numpy as np
    import pandas as pd
    from tiffin.io import Columns, DType, Shape

    Features = Annotated[np.ndarray, Shape(-1, 4), DType("float32")]

    @tiffin.api
    def predict(self, features: Features) -> np.ndarray: ...

    @tiffin.api
    def score(self, rows: Annotated[pd.DataFrame, Columns("age", "income")]) -> pd.DataFrame: ...
"""

from tiffin.io.codec import Codec, Upload, codec_for, negotiate, refresh
from tiffin.io.numpy import DType, Shape
from tiffin.io.pandas import Columns
from tiffin.io.spec import ApiIO, Param, dumps

__all__ = [
    "ApiIO",
    "Codec",
    "Columns",
    "DType",
    "Param",
    "Shape",
    "Upload",
    "codec_for",
    "dumps",
    "negotiate",
    "refresh",
]
