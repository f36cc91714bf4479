"""pandas.DataFrame parameters and results: JSON records and split form, CSV bodies and
answers, column constraints, and the errors a client gets for a bad table."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Coroutine
from typing import Annotated, Any

import httpx
import pandas as pd
import pytest

import tiffin
from tests.server.asgi import serving
from tiffin.exceptions import ServiceDefinitionError
from tiffin.io import Columns

Pair = Annotated[pd.DataFrame, Columns("a", "b")]
CSV = {"content-type": "text/csv"}


@tiffin.service(name="tables")
class Tables:
    """Tables for tests."""

    @tiffin.api
    def total(self, rows: Pair) -> pd.DataFrame:
        """Add up each row."""
        assert list(rows.columns) == ["a", "b"]
        return rows.assign(total=rows["a"] + rows["b"])

    @tiffin.api
    def shape(self, rows: pd.DataFrame, label: str = "-") -> dict[str, Any]:
        return {"columns": list(rows.columns), "rows": len(rows), "label": label}

    @tiffin.api
    def kinds(self) -> pd.DataFrame:
        frame = pd.DataFrame(
            {
                "when": pd.to_datetime(["2024-05-01 12:30", None]),
                "score": [0.1 + 0.2, math.nan],
                "count": pd.array([3, None], dtype="Int64"),
                "name": ["ä", None],
            }
        )
        frame[7] = [True, False]
        return frame

    @tiffin.api
    def wrong(self) -> pd.DataFrame:
        result: Any = [1, 2]
        return result


def run(test: Callable[[httpx.AsyncClient], Coroutine[Any, Any, None]]) -> None:
    async def main() -> None:
        async with serving(Tables) as (client, _):
            await test(client)

    asyncio.run(main())


def error_of(response: httpx.Response) -> dict[str, Any]:
    error: dict[str, Any] = response.json()["error"]
    return error


def invalid(api: str, loc: str, msg: str, hint: str) -> dict[str, Any]:
    return {
        "type": "ValidationFailed",
        "message": f"Invalid request to API '{api}': '{loc}' {msg}. {hint}; /docs shows the "
        "schema.",
        "detail": {"errors": [{"loc": loc, "msg": msg}]},
    }


def test_records_and_split_form_in_records_out() -> None:
    async def test(client: httpx.AsyncClient) -> None:
        records = await client.post("/total", json={"rows": [{"a": 1, "b": 2}, {"a": 3, "b": 4}]})
        assert records.status_code == 200
        assert records.headers["content-type"] == "application/json"
        assert records.content == b'[{"a":1,"b":2,"total":3},{"a":3,"b":4,"total":7}]'

        # columns come in any order; the service gets them in the declared one
        swapped = await client.post("/total", json={"rows": [{"b": 2.5, "a": 1}]})
        assert swapped.json() == [{"a": 1.0, "b": 2.5, "total": 3.5}]

        split = await client.post(
            "/total", json={"rows": {"columns": ["b", "a"], "data": [[2, 1], [4, 3]]}}
        )
        assert split.status_code == 200
        assert split.json() == [{"a": 1, "b": 2, "total": 3}, {"a": 3, "b": 4, "total": 7}]

        empty = await client.post("/total", json={"rows": []})
        assert empty.status_code == 200
        assert empty.content == b"[]"

        free = await client.post("/shape", json={"rows": [{"x": 1, "y": None}], "label": "l"})
        assert free.json() == {"columns": ["x", "y"], "rows": 1, "label": "l"}
        no_rows = await client.post("/shape", json={"rows": {"columns": ["x"], "data": []}})
        assert no_rows.json() == {"columns": ["x"], "rows": 0, "label": "-"}

    run(test)


def test_csv_body_and_csv_answer() -> None:
    async def test(client: httpx.AsyncClient) -> None:
        both = await client.post(
            "/total", content=b"b,a\n2,1\n4,3\n", headers={**CSV, "accept": "text/csv"}
        )
        assert both.status_code == 200
        assert both.headers["content-type"] == "text/csv; charset=utf-8"
        assert both.content == b"a,b,total\n1,2,3\n3,4,7\n"

        csv_in = await client.post(
            "/total", content=b"a,b\n1,2\n", headers={"content-type": "text/csv; charset=utf-8"}
        )
        assert csv_in.headers["content-type"] == "application/json"
        assert csv_in.json() == [{"a": 1, "b": 2, "total": 3}]

        csv_out = await client.post(
            "/total", json={"rows": [{"a": 1, "b": 2}]}, headers={"accept": "text/csv"}
        )
        assert csv_out.content == b"a,b,total\n1,2,3\n"

        # the client's preference decides; wildcards do not ask for CSV
        for accept in ("application/json, text/csv;q=0.5", "*/*", "text/*", "text/csv;q=0"):
            answer = await client.post(
                "/total", json={"rows": [{"a": 1, "b": 2}]}, headers={"accept": accept}
            )
            assert answer.headers["content-type"] == "application/json", accept

        # a CSV file in a multipart request works for any DataFrame parameter
        form = await client.post(
            "/shape",
            files={"rows": ("rows.csv", b"x,y,z\n1,2,3\n", "application/octet-stream")},
            data={"label": "upload"},
        )
        assert form.status_code == 200
        assert form.json() == {"columns": ["x", "y", "z"], "rows": 1, "label": "upload"}
        as_json = await client.post(
            "/shape", files={"rows": ("rows.json", b'[{"x": 1}]', "application/json")}
        )
        assert as_json.json() == {"columns": ["x"], "rows": 1, "label": "-"}
        field = await client.post(
            "/shape", files={"rows": (None, b'{"columns": ["x"], "data": [[1]]}')}
        )
        assert field.json() == {"columns": ["x"], "rows": 1, "label": "-"}

    run(test)


def test_values_of_every_kind_are_sent_as_json() -> None:
    async def test(client: httpx.AsyncClient) -> None:
        answer = await client.post("/kinds", json={})
        assert answer.status_code == 200
        assert answer.json() == [
            {
                "when": "2024-05-01T12:30:00",
                "score": 0.30000000000000004,
                "count": 3,
                "name": "ä",
                "7": True,
            },
            {"when": None, "score": None, "count": None, "name": None, "7": False},
        ]
        csv = await client.post("/kinds", json={}, headers={"accept": "text/csv"})
        assert csv.text == (
            "when,score,count,name,7\n2024-05-01 12:30:00,0.30000000000000004,3,ä,True\n,,,,False\n"
        )

    run(test)


def test_bad_tables_are_422_naming_the_problem() -> None:
    hint = "Send a JSON object with the key 'rows'"
    shapes = (
        'a list of records ([{"a": 1, "b": 2}, ...]) or '
        '{"columns": ["a", "b"], "data": [[1, 2], ...]}'
    )
    cases: list[tuple[Any, str]] = [
        (5, f"must be a table: {shapes}"),
        ("a,b", f"must be a table: {shapes}"),
        ([[1, 2]], f"has row 0 as a list, not an object; send {shapes}"),
        (
            [{"a": 1, "b": 2}, 3],
            "has row 1 as a scalar, not an object; send every record as an object of column "
            "names to values",
        ),
        (
            [{"a": 1, "b": 2}, {"a": 1, "b": 2}, {"a": 3}],
            "has row 2 with the keys 'a' where row 0 has 'a', 'b'; give every record the same "
            "keys (null for a missing value)",
        ),
        (
            {"columns": ["a", "b"], "data": [[1, 2], [3]]},
            "has 1 values in row 1 for 2 columns; give every row one value per column (null "
            "for a missing value)",
        ),
        (
            {"columns": ["a", "b"], "data": [[1, 2], {"a": 1}]},
            "has row 1 of 'data' as an object, not a list of values",
        ),
        (
            {"columns": ["a", "b"], "rows": [[1, 2]]},
            "must be a list of records, or an object with exactly the keys 'columns' (the "
            f"column names) and 'data' (the rows); send {shapes}",
        ),
        (
            {"columns": "a,b", "data": []},
            "has 'columns' that are not a list of column names (strings)",
        ),
        ({"columns": ["a", "a"], "data": []}, "names the column 'a' more than once"),
        (
            {"columns": ["a", "b"], "data": 3},
            "has 'data' that is not a list of rows (lists of values)",
        ),
        ([{"a": 1}], "is missing the column 'b'; send the columns 'a', 'b'"),
        (
            [{"a": 1, "b": 2, "c": 3, "d": 4}],
            "has the columns 'c', 'd', which this API does not take; send only the columns "
            "'a', 'b'",
        ),
    ]

    async def test(client: httpx.AsyncClient) -> None:
        for rows, msg in cases:
            response = await client.post("/total", json={"rows": rows})
            assert response.status_code == 422, rows
            assert error_of(response) == invalid("total", "rows", msg, hint), rows

        missing = await client.post("/total", json={})
        assert error_of(missing)["detail"]["errors"] == [{"loc": "rows", "msg": "is required"}]

    run(test)


def test_bad_csv_bodies() -> None:
    hint = "Send a JSON object with the key 'rows'"
    cases = [
        (
            b"a,b\n1,2\n3,4,5\n",
            "is not valid CSV (Error tokenizing data. C error: Expected 2 fields in line 3, saw "
            "3); send a header row of column names, then one line per row with as many values",
        ),
        (
            b"",
            "is an empty CSV file; send a header row of column names, then one line per row",
        ),
        (
            b"a,\xff\n1,2\n",
            "is not valid CSV ('utf-8' codec can't decode byte 0xff in position 0: invalid start "
            "byte); send a header row of column names, then one line per row with as many values",
        ),
        (
            b"a,b\n1,2,3\n",
            "is not valid CSV (its rows have more values than its header has column names); "
            "send a header row of column names, then one line per row with as many values",
        ),
        (b"a,c\n1,2\n", "is missing the column 'b'; send the columns 'a', 'b'"),
    ]

    async def test(client: httpx.AsyncClient) -> None:
        for body, msg in cases:
            response = await client.post("/total", content=body, headers=CSV)
            assert response.status_code == 422, body
            assert error_of(response) == invalid("total", "rows", msg, hint), body

        # only an API whose one parameter is a DataFrame takes a whole CSV body
        other = await client.post("/shape", content=b"x\n1\n", headers=CSV)
        assert other.status_code == 415
        assert error_of(other) == {
            "type": "UnsupportedMediaType",
            "message": "API 'shape' does not take 'text/csv' bodies. Send application/json or "
            "multipart/form-data (set the Content-Type header).",
            "detail": {
                "content_type": "text/csv",
                "accepted": ["application/json", "multipart/form-data"],
            },
        }
        xml = await client.post("/total", content=b"<a/>", headers={"content-type": "text/xml"})
        assert xml.status_code == 415
        assert error_of(xml)["message"] == (
            "API 'total' does not take 'text/xml' bodies. Send application/json, "
            "multipart/form-data or text/csv (set the Content-Type header)."
        )
        bad_part = await client.post(
            "/shape", files={"rows": ("rows.csv", b"x,y\n1,2,3\n", "text/csv")}
        )
        assert bad_part.status_code == 422
        assert error_of(bad_part)["detail"]["errors"][0]["msg"].startswith("is not valid CSV (")
        odd_part = await client.post("/shape", files={"rows": ("rows.xls", b"\x00", "x/xls")})
        assert error_of(odd_part)["detail"]["errors"] == [
            {
                "loc": "rows",
                "msg": "is a part of type 'x/xls'; send it as text/csv or application/json",
            }
        ]

    run(test)


def test_a_result_that_is_not_a_dataframe_is_a_500() -> None:
    async def test(client: httpx.AsyncClient) -> None:
        response = await client.post("/wrong", json={})
        assert response.status_code == 500
        assert error_of(response) == {
            "type": "ServiceError",
            "message": "API 'wrong' returned a value of type list that cannot be sent "
            "(TypeError: a DataFrame result must be a pandas.DataFrame, not list). Fix the "
            "service to return what its annotation says (DataFrame).",
            "detail": {"api": "wrong"},
        }

    run(test)


def test_openapi_describes_tables() -> None:
    async def test(client: httpx.AsyncClient) -> None:
        doc = (await client.get("/openapi.json")).json()
        operation = doc["paths"]["/total"]["post"]
        content = operation["requestBody"]["content"]
        assert list(content) == ["application/json", "multipart/form-data", "text/csv"]
        records = {
            "type": "array",
            "description": "records: one object per row",
            "items": {
                "type": "object",
                "properties": {"a": {}, "b": {}},
                "required": ["a", "b"],
                "additionalProperties": False,
            },
        }
        rows = content["application/json"]["schema"]["properties"]["rows"]
        assert rows["anyOf"][0] == records
        assert rows["anyOf"][1]["required"] == ["columns", "data"]
        assert rows["anyOf"][1]["properties"]["columns"]["items"] == {"enum": ["a", "b"]}
        assert content["text/csv"] == {"schema": {"type": "string"}}
        assert content["multipart/form-data"]["encoding"] == {}

        ok = operation["responses"]["200"]
        assert ok["description"] == (
            "The API's result. application/json unless the Accept header asks for text/csv."
        )
        assert ok["content"]["application/json"]["schema"] == {
            **records,
            "items": {"type": "object"},
        }
        assert ok["content"]["text/csv"] == {"schema": {"type": "string"}}

    run(test)


def test_columns_must_be_named() -> None:
    with pytest.raises(ServiceDefinitionError, match=r"name each column as a non-empty string"):
        Columns()
    with pytest.raises(ServiceDefinitionError, match=r"Columns\(1,\) is not valid"):
        Columns(1)  # type: ignore[arg-type]
    with pytest.raises(ServiceDefinitionError) as caught:
        Columns("a", "b", "a")
    assert caught.value.message == (
        "Columns('a', 'b', 'a') names 'a' more than once. Name each column once."
    )
