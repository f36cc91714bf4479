"""The codec plugin point: a third-party IO type installed through a real entry point, used
by a service's parameter and result; content negotiation; optional extras stay unloaded."""

from __future__ import annotations

import asyncio
import importlib
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

import tiffin
from tests.server.asgi import serving
from tiffin.exceptions import ServiceDefinitionError
from tiffin.io import codec
from tiffin.io.codec import either, negotiate

PLUGIN = '''
"""A third-party IO type: fractions.Fraction, written "3/4"."""

from __future__ import annotations

from fractions import Fraction
from typing import Any

from tiffin.io import Codec, negotiate

FRACTION = "text/x-fraction"
released: list[Fraction] = []


class FractionCodec(Codec):
    name = "fraction"
    media_types = (FRACTION,)

    @classmethod
    def create(cls, annotation: Any, metadata: tuple[Any, ...]) -> FractionCodec | None:
        return cls() if annotation is Fraction else None

    def json_schema(self) -> dict[str, Any]:
        return {"type": "string", "pattern": "^-?[0-9]+(/[0-9]+)?$"}

    def from_json(self, value: Any) -> Any:
        if not isinstance(value, str):
            raise ValueError("must be a fraction written as a string, e.g. '3/4'")
        try:
            return Fraction(value)
        except (ValueError, ZeroDivisionError):
            raise ValueError(f"is not a fraction ({value!r}); write it as '3/4'") from None

    def to_json(self, obj: Any) -> Any:
        return f"{obj.numerator}/{obj.denominator}"

    def from_body(self, body: bytes, media_type: str) -> Any:
        return self.from_json(body.decode())

    def to_body(self, obj: Any, accept: str) -> tuple[bytes, str] | None:
        if negotiate(accept, ("application/json", FRACTION)) != FRACTION:
            return None
        return self.to_json(obj).encode(), FRACTION

    def release(self, value: Any) -> None:
        released.append(value)


class NotACodec:
    pass
'''


def install(folder: Path, monkeypatch: pytest.MonkeyPatch, entry_points: str) -> None:
    """Install a distribution into ``folder`` as pip would: its module and a dist-info
    with the entry points; then make tiffin look for codecs again."""
    (folder / "tiffin_fractions.py").write_text(PLUGIN)
    info = folder / "tiffin_fractions-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: tiffin-fractions\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[tiffin.io_types]\n{entry_points}\n")
    monkeypatch.syspath_prepend(str(folder))
    codec.refresh()


@pytest.fixture
def forget_plugins() -> Iterator[None]:
    """Forget the plugins a test installed, once its sys.path is restored."""
    yield
    codec.refresh()
    sys.modules.pop("tiffin_fractions", None)


@pytest.fixture
def plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, forget_plugins: None) -> ModuleType:
    install(tmp_path, monkeypatch, "fraction = tiffin_fractions:FractionCodec")
    return importlib.import_module("tiffin_fractions")


def error_of(response: httpx.Response) -> dict[str, Any]:
    error: dict[str, Any] = response.json()["error"]
    return error


def test_a_plugin_codec_serves_a_parameter_and_a_result(plugin: ModuleType) -> None:
    @tiffin.service(name="fractions")
    class Fractions:
        @tiffin.api
        def half(self, x: Fraction) -> Fraction:
            return x / 2

        @tiffin.api
        def crash(self, x: Fraction) -> Fraction:
            raise ZeroDivisionError("on purpose")

    async def main() -> None:
        async with serving(Fractions) as (client, _):
            as_json = await client.post("/half", json={"x": "3/4"})
            assert as_json.status_code == 200
            assert as_json.headers["content-type"] == "application/json"
            assert as_json.content == b'"3/8"'

            raw = await client.post(
                "/half",
                content=b"1/3",
                headers={"content-type": "text/x-fraction", "accept": "text/x-fraction"},
            )
            assert raw.status_code == 200
            assert raw.headers["content-type"] == "text/x-fraction"
            assert raw.content == b"1/6"

            part = await client.post("/half", files={"x": ("x.txt", b"5", "text/x-fraction")})
            assert part.json() == "5/2"
            json_field = await client.post("/half", files={"x": (None, b'"2"')})
            assert json_field.json() == "1/1"

            for value, msg in [
                ("abc", "is not a fraction ('abc'); write it as '3/4'"),
                (0.5, "must be a fraction written as a string, e.g. '3/4'"),
            ]:
                bad = await client.post("/half", json={"x": value})
                assert bad.status_code == 422
                assert error_of(bad) == {
                    "type": "ValidationFailed",
                    "message": f"Invalid request to API 'half': 'x' {msg}. Send a JSON object "
                    "with the key 'x'; /docs shows the schema.",
                    "detail": {"errors": [{"loc": "x", "msg": msg}]},
                }

            crashed = await client.post("/crash", json={"x": "1/2"})
            assert crashed.status_code == 500

            doc = (await client.get("/openapi.json")).json()["paths"]["/half"]["post"]
            request = doc["requestBody"]["content"]
            assert list(request) == ["application/json", "multipart/form-data", "text/x-fraction"]
            assert request["application/json"]["schema"]["properties"]["x"] == {
                "title": "X",
                "type": "string",
                "pattern": "^-?[0-9]+(/[0-9]+)?$",
            }
            assert request["text/x-fraction"] == {"schema": {"type": "string"}}
            assert doc["responses"]["200"]["content"] == {
                "application/json": {
                    "schema": {"type": "string", "pattern": "^-?[0-9]+(/[0-9]+)?$"}
                },
                "text/x-fraction": {"schema": {"type": "string"}},
            }

    asyncio.run(main())
    # the release hook ran once for every decoded value, the failed call's included
    released = [Fraction(3, 4), Fraction(1, 3), Fraction(5), Fraction(2), Fraction(1, 2)]
    assert plugin.released == released


def test_a_broken_plugin_is_named_when_a_service_is_defined(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, forget_plugins: None
) -> None:
    install(tmp_path, monkeypatch, "missing = tiffin_fractions_gone:FractionCodec")
    with pytest.raises(ServiceDefinitionError) as caught:
        tiffin.io.codec_for(int)
    assert caught.value.message == (
        "The IO type plugin 'missing' (tiffin_fractions_gone:FractionCodec) failed to import: "
        "No module named 'tiffin_fractions_gone'. Reinstall the package that provides it."
    )


def test_a_plugin_that_is_not_a_codec_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, forget_plugins: None
) -> None:
    install(tmp_path, monkeypatch, "odd = tiffin_fractions:NotACodec")
    with pytest.raises(ServiceDefinitionError) as caught:

        class Odd:
            @tiffin.api
            def f(self, x: int) -> int:
                return x

    assert caught.value.message == (
        "The IO type plugin 'odd' (tiffin_fractions:NotACodec) is not a subclass of "
        "tiffin.io.Codec. Fix the plugin's entry point."
    )


def test_refresh_forgets_plugins_once_uninstalled(plugin: ModuleType) -> None:
    assert type(tiffin.io.codec_for(Fraction)).__name__ == "FractionCodec"
    sys.path.remove(str(Path(plugin.__file__ or "").parent))
    codec.refresh()
    assert tiffin.io.codec_for(Fraction) is None


@pytest.mark.parametrize(
    ("accept", "offered", "chosen"),
    [
        ("text/csv", ("application/json", "text/csv"), "text/csv"),
        ("TEXT/CSV; charset=utf-8", ("application/json", "text/csv"), "text/csv"),
        ("application/json, text/csv;q=0.5", ("application/json", "text/csv"), "application/json"),
        ("text/csv;q=0.4, application/json;q=0.3", ("application/json", "text/csv"), "text/csv"),
        ("text/csv;q=0", ("application/json", "text/csv"), None),
        ("text/csv;q=bad", ("application/json", "text/csv"), None),
        ("*/*", ("image/png",), None),
        ("image/*", ("image/png",), None),
        ("", ("image/png",), None),
        ("image/jpeg, image/png", ("image/png", "image/jpeg"), "image/jpeg"),
    ],
)
def test_negotiate_answers_only_types_asked_for_by_name(
    accept: str, offered: tuple[str, ...], chosen: str | None
) -> None:
    assert negotiate(accept, offered) == chosen


def test_either_lists_alternatives() -> None:
    assert either([]) == ""
    assert either(["a"]) == "a"
    assert either(["a", "b"]) == "a or b"
    assert either(["a", "b", "c"]) == "a, b or c"


def test_optional_extras_are_not_imported_by_services_that_do_not_use_them() -> None:
    code = textwrap.dedent(
        """
        import sys
        from pathlib import Path
        import tiffin
        from tiffin.io import codec_for

        @tiffin.service
        class Plain:
            @tiffin.api
            def f(self, x: int, text: str, upload: Path) -> dict[str, float]:
                return {}

        assert codec_for(int) is None
        print(sorted(m for m in ("numpy", "pandas", "PIL") if m in sys.modules))
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


class Opaque:
    """A result no codec or JSON encoder knows."""


@tiffin.service(name="results")
class Results:
    @tiffin.api
    def opaque(self) -> dict[str, Any]:
        return {"thing": Opaque()}


def test_a_result_that_cannot_be_sent_is_a_500_saying_so() -> None:
    async def main() -> None:
        async with serving(Results) as (client, _):
            response = await client.post("/opaque", json={})
            assert response.status_code == 500
            assert error_of(response) == {
                "type": "ServiceError",
                "message": "API 'opaque' returned a value of type dict that cannot be sent "
                "(TypeError: Type is not JSON serializable: Opaque). Fix the service to "
                "return what its annotation says (dict).",
                "detail": {"api": "opaque"},
            }

    asyncio.run(main())
