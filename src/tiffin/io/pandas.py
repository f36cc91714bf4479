"""``pandas.DataFrame`` parameters and results (``pip install 'tiffin[pandas]'``).

    def score(self, rows: Annotated[pd.DataFrame, Columns("age", "income")]) -> pd.DataFrame

In JSON a table is a list of records, one object per row (``[{"age": 31, "income": 5.2},
...]``), or, in split form, ``{"columns": ["age", "income"], "data": [[31, 5.2], ...]}``;
every record must have the same keys and every row one value per column (``null`` for a
missing value). A result is answered as records; its index is not sent.

An API whose only parameter is a DataFrame also takes a CSV body (``Content-Type:
text/csv``, a header row then one line per row), a CSV file part in a multipart request
does for any DataFrame parameter, and an API returning a DataFrame answers with CSV when
the client asks for it (``Accept: text/csv``).

``Columns("a", "b")`` makes a parameter take exactly those columns: a table missing one,
or carrying another, is a 422 naming them, and the service gets the columns in the
declared order, whatever order they were sent in.
"""

from __future__ import annotations

import io
import sys
from dataclasses import dataclass
from typing import Any, Self

from tiffin.exceptions import ServiceDefinitionError
from tiffin.io.codec import Codec, Upload, negotiate

__all__ = ["CSV", "Columns", "DataFrameCodec"]

CSV = "text/csv"
_OFFERED = ("application/json", CSV)
_SHAPES = (
    'a list of records ([{"a": 1, "b": 2}, ...]) or {"columns": ["a", "b"], "data": [[1, 2], ...]}'
)


@dataclass(frozen=True, init=False)
class Columns:
    """The columns a DataFrame parameter takes, in the order the service gets them.

    A request whose table misses one of them, or has another, is refused with a message
    naming the columns; one that sends them in another order is reordered.

    Example:
        rows: Annotated[pd.DataFrame, Columns("age", "income")]
    """

    names: tuple[str, ...]

    def __init__(self, *names: str) -> None:
        if not names or not all(isinstance(n, str) and n for n in names):
            raise ServiceDefinitionError(
                f"Columns{names!r} is not valid: name each column as a non-empty string, e.g. "
                "Columns('age', 'income').",
            )
        if len(set(names)) != len(names):
            twice = sorted({n for n in names if names.count(n) > 1})
            raise ServiceDefinitionError(
                f"Columns{names!r} names {_quoted(twice)} more than once. Name each column once.",
            )
        object.__setattr__(self, "names", tuple(names))


def _quoted(names: list[str] | tuple[str, ...]) -> str:
    return ", ".join(f"'{n}'" for n in names)


def _plural(names: list[str]) -> str:
    return "column" if len(names) == 1 else "columns"


def _kind(value: Any) -> str:
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    return "a string" if isinstance(value, str) else "a scalar"


def _is_dataframe(annotation: Any) -> bool:
    pandas = sys.modules.get("pandas")
    return pandas is not None and annotation is pandas.DataFrame


class DataFrameCodec(Codec):
    """Reads a table (JSON records, split JSON or CSV) into a ``pandas.DataFrame`` and
    writes frames back as records, or as CSV when asked.

    Example:
        curl -d '{"rows": [{"age": 31, "income": 5.2}]}' localhost:3000/score
        curl --data-binary @rows.csv -H 'Content-Type: text/csv' -H 'Accept: text/csv' \\
            localhost:3000/score
    """

    name = "dataframe"
    media_types = (CSV,)

    def __init__(self, columns: Columns | None) -> None:
        self.columns = columns

    @classmethod
    def create(cls, annotation: Any, metadata: tuple[Any, ...]) -> Self | None:
        if not _is_dataframe(annotation):
            return None
        return cls(next((m for m in metadata if isinstance(m, Columns)), None))

    # -- schema ----------------------------------------------------------------------

    def _records_schema(self) -> dict[str, Any]:
        row: dict[str, Any] = {"type": "object"}
        if self.columns is not None:
            row["properties"] = {name: {} for name in self.columns.names}
            row["required"] = list(self.columns.names)
            row["additionalProperties"] = False
        return {"type": "array", "items": row, "description": "records: one object per row"}

    def json_schema(self) -> dict[str, Any]:
        names: dict[str, Any] = {"type": "array", "items": {"type": "string"}}
        if self.columns is not None:
            names["items"] = {"enum": list(self.columns.names)}
        split = {
            "type": "object",
            "description": "split form: column names, then one list of values per row",
            "required": ["columns", "data"],
            "properties": {
                "columns": names,
                "data": {"type": "array", "items": {"type": "array"}},
            },
            "additionalProperties": False,
        }
        return {"anyOf": [self._records_schema(), split]}

    def response_schema(self) -> dict[str, Any]:
        return self._records_schema()

    # -- requests --------------------------------------------------------------------

    def _check(self, frame: Any) -> Any:
        if self.columns is None:
            return frame
        want = self.columns.names
        have = [str(c) for c in frame.columns]
        missing = [n for n in want if n not in have]
        if missing:
            raise ValueError(
                f"is missing the {_plural(missing)} {_quoted(missing)}; send the columns "
                f"{_quoted(want)}"
            )
        extra = [n for n in have if n not in want]
        if extra:
            raise ValueError(
                f"has the {_plural(extra)} {_quoted(extra)}, which this API does not take; send "
                f"only the columns {_quoted(want)}"
            )
        return frame if tuple(have) == want else frame[list(want)]

    def _from_records(self, records: list[Any]) -> Any:
        import pandas as pd

        if not records:
            return pd.DataFrame(columns=list(self.columns.names) if self.columns else None)
        first = records[0]
        if not isinstance(first, dict):
            raise ValueError(
                f"has row 0 as {_kind(first)}, not an object; send {_SHAPES}",
            )
        keys = first.keys()
        for index, row in enumerate(records):
            if not isinstance(row, dict):
                raise ValueError(
                    f"has row {index} as {_kind(row)}, not an object; send every record as an "
                    "object of column names to values"
                )
            if row.keys() != keys:
                raise ValueError(
                    f"has row {index} with the keys {_quoted(list(row))} where row 0 has "
                    f"{_quoted(list(keys))}; give every record the same keys (null for a "
                    "missing value)"
                )
        return pd.DataFrame(records)

    def _from_split(self, table: dict[str, Any]) -> Any:
        import pandas as pd

        unknown = [key for key in table if key not in ("columns", "data")]
        if unknown or "columns" not in table or "data" not in table:
            raise ValueError(
                "must be a list of records, or an object with exactly the keys 'columns' (the "
                f"column names) and 'data' (the rows); send {_SHAPES}"
            )
        columns, data = table["columns"], table["data"]
        if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
            raise ValueError("has 'columns' that are not a list of column names (strings)")
        if len(set(columns)) != len(columns):
            twice = sorted({c for c in columns if columns.count(c) > 1})
            raise ValueError(f"names the {_plural(twice)} {_quoted(twice)} more than once")
        if not isinstance(data, list):
            raise ValueError("has 'data' that is not a list of rows (lists of values)")
        width = len(columns)
        for index, row in enumerate(data):
            if not isinstance(row, list):
                raise ValueError(f"has row {index} of 'data' as {_kind(row)}, not a list of values")
            if len(row) != width:
                raise ValueError(
                    f"has {len(row)} values in row {index} for {width} columns; give every row "
                    "one value per column (null for a missing value)"
                )
        return pd.DataFrame(data, columns=columns)

    def from_json(self, value: Any) -> Any:
        if isinstance(value, list):
            return self._check(self._from_records(value))
        if isinstance(value, dict):
            return self._check(self._from_split(value))
        raise ValueError(f"must be a table: {_SHAPES}")

    def from_body(self, body: bytes, media_type: str) -> Any:
        import pandas as pd

        try:
            frame = pd.read_csv(io.BytesIO(body))
        except pd.errors.EmptyDataError:
            raise ValueError(
                "is an empty CSV file; send a header row of column names, then one line per row"
            ) from None
        except (ValueError, OverflowError) as exc:  # ParserError, UnicodeDecodeError
            reason = " ".join(str(exc).split())
            raise ValueError(
                f"is not valid CSV ({reason}); send a header row of column names, then one "
                "line per row with as many values"
            ) from None
        if not isinstance(frame.index, pd.RangeIndex):
            # pandas reads rows one value longer than the header as index + values
            raise ValueError(
                "is not valid CSV (its rows have more values than its header has column "
                "names); send a header row of column names, then one line per row with as "
                "many values"
            )
        return self._check(frame)

    def from_upload(self, upload: Upload) -> Any:
        if upload.media_type != CSV and (upload.filename or "").lower().endswith(".csv"):
            return self.from_body(upload.data, CSV)
        return super().from_upload(upload)

    # -- responses -------------------------------------------------------------------

    @staticmethod
    def _frame(obj: Any) -> Any:
        import pandas as pd

        if not isinstance(obj, pd.DataFrame):
            raise TypeError(
                f"a DataFrame result must be a pandas.DataFrame, not {type(obj).__name__}"
            )
        if not all(isinstance(c, str) for c in obj.columns):
            obj = obj.rename(columns=str)
        return obj

    def to_json(self, obj: Any) -> Any:
        import numpy as np

        frame = self._frame(obj)
        # numeric columns convert as they are (NaN is written as null); anything else
        # (dates, nullable or string dtypes) goes through objects with None for missing
        if not all(isinstance(t, np.dtype) and t.kind in "biuf" for t in frame.dtypes):
            frame = frame.astype(object).where(frame.notna(), None)
        return frame.to_dict(orient="records")

    def to_body(self, obj: Any, accept: str) -> tuple[bytes, str] | None:
        if negotiate(accept, _OFFERED) != CSV:
            return None
        text: str = self._frame(obj).to_csv(index=False)
        return text.encode("utf-8"), "text/csv; charset=utf-8"
