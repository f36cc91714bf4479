"""Finding protocol plugins through their entry points, and refusing broken ones."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import tiffin
from tests.server.asgi import serving
from tiffin import protocols
from tiffin.exceptions import ConfigError, ServiceDefinitionError
from tiffin.protocols.oip import OpenInferenceProtocol


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def plugin_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A directory on sys.path where a test writes an installed distribution by hand."""
    monkeypatch.syspath_prepend(str(tmp_path))
    protocols.refresh()
    yield tmp_path
    monkeypatch.undo()
    protocols.refresh()
    for name in ("not_a_protocol",):
        sys.modules.pop(name, None)


def install(directory: Path, entry: str) -> None:
    info = directory / "broken_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[tiffin.protocols]\nbroken = {entry}\n")


def test_tiffins_own_protocol_is_registered() -> None:
    assert protocols.installed()["oip"] is OpenInferenceProtocol
    assert protocols.enabled(("all",))[0] is OpenInferenceProtocol
    assert protocols.enabled(("none",)) == []


def test_a_plugin_that_fails_to_import(plugin_dir: Path) -> None:
    install(plugin_dir, "no_such_module:Thing")
    with pytest.raises(ServiceDefinitionError) as raised:
        protocols.installed()
    assert raised.value.message == (
        "The protocol plugin 'broken' (no_such_module:Thing) failed to import: No module "
        "named 'no_such_module'. Reinstall the package that provides it, or leave it out "
        "with the protocols setting (TIFFIN_PROTOCOLS)."
    )
    # naming the protocols to serve leaves the broken one unimported
    assert protocols.enabled(("oip",)) == [OpenInferenceProtocol]


def test_a_plugin_that_is_not_a_protocol(plugin_dir: Path) -> None:
    (plugin_dir / "not_a_protocol.py").write_text("class Thing:\n    pass\n")
    install(plugin_dir, "not_a_protocol:Thing")
    with pytest.raises(ServiceDefinitionError) as raised:
        protocols.installed()
    assert raised.value.message == (
        "The protocol plugin 'broken' (not_a_protocol:Thing) is not a subclass of "
        "tiffin.protocols.Protocol. Fix the plugin's entry point."
    )


def test_naming_a_protocol_that_is_not_installed() -> None:
    with pytest.raises(ConfigError) as raised:
        protocols.enabled(("oip", "soap"))
    assert raised.value.message.startswith(
        "The protocols setting names 'soap', which is not installed. Installed: "
    )
    assert "oip" in raised.value.detail["installed"]


PREFIX_PLUGIN = """
from tiffin.protocols import HttpRequest, HttpResponse, Protocol


class Catchall(Protocol):
    name = "catchall"

    def http_routes(self):
        return {"/api/*": self.handle}

    async def handle(self, request: HttpRequest) -> HttpResponse:
        if request.path == "/api/boom":
            raise RuntimeError("broken plugin code")
        return HttpResponse(200, b"caught " + request.path.encode(), "text/plain")
"""


@tiffin.service(name="keyed")
class Keyed:
    @tiffin.api(route="/api/reset")
    def reset(self) -> str:
        return "reset"


@pytest.mark.anyio
async def test_a_prefix_route_leaves_the_services_own_routes_and_keys_alone(
    plugin_dir: Path,
) -> None:
    (plugin_dir / "catchall_plugin.py").write_text(PREFIX_PLUGIN)
    install(plugin_dir, "catchall_plugin:Catchall")
    async with serving(Keyed, api_keys=("k1",), protocols=("broken",)) as (client, _):
        # the service's API under the claimed prefix still needs a key, in tiffin's shape
        refused = await client.post("/api/reset")
        assert refused.status_code == 401
        assert refused.json()["error"]["type"] == "Unauthorized"
        allowed = await client.post("/api/reset", headers={"X-API-Key": "k1"})
        assert allowed.json() == "reset"
        # the protocol's paths need it too; the refusal carries the standard header
        other = await client.get("/api/other")
        assert other.status_code == 401
        assert other.headers["www-authenticate"] == 'Bearer realm="tiffin"'
        caught = await client.get("/api/other", headers={"X-API-Key": "k1"})
        assert caught.text == "caught /api/other"
        # an exception in the protocol's code is a logged 500, not a dropped connection
        boom = await client.get("/api/boom", headers={"X-API-Key": "k1"})
        assert boom.status_code == 500
        assert boom.json()["error"]["message"] == (
            "The catchall protocol failed: its code raised RuntimeError. The server log has "
            "the traceback."
        )
        assert boom.headers["x-request-id"]
    sys.modules.pop("catchall_plugin", None)
