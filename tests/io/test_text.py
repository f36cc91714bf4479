"""Text: a str-only API takes a text/plain body; a str result is text/plain when asked."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Annotated, Any

import httpx
from pydantic import Field

import tiffin
from tests.server.asgi import serving

TEXT = {"content-type": "text/plain"}
PLAIN = "text/plain; charset=utf-8"


@tiffin.service(name="texts")
class Texts:
    """Text for tests."""

    @tiffin.api
    def shout(self, text: str) -> str:
        """Say it louder."""
        return text.upper() + "!"

    @tiffin.api
    def short(self, word: Annotated[str, Field(max_length=5)]) -> int:
        return len(word)

    @tiffin.api
    def join(self, a: str, b: str | None = None) -> str:
        return a + (b or "")

    @tiffin.api
    def number(self) -> int:
        return 7

    @tiffin.api
    def liar(self) -> str:
        return 7  # type: ignore[return-value]


def run(test: Callable[[httpx.AsyncClient], Coroutine[Any, Any, None]]) -> None:
    async def main() -> None:
        async with serving(Texts) as (client, _):
            await test(client)

    asyncio.run(main())


def error_of(response: httpx.Response) -> dict[str, Any]:
    error: dict[str, Any] = response.json()["error"]
    return error


def test_text_in_and_out() -> None:
    async def test(client: httpx.AsyncClient) -> None:
        both = await client.post(
            "/shout", content="grüß dich".encode(), headers={**TEXT, "accept": "text/plain"}
        )
        assert both.status_code == 200
        assert both.headers["content-type"] == PLAIN
        assert both.content == "GRÜSS DICH!".encode()

        text_in = await client.post(
            "/shout",
            content=b'{"text": "x"}',
            headers={"content-type": "text/plain; charset=utf-8"},
        )
        assert text_in.headers["content-type"] == "application/json"
        assert text_in.json() == '{"TEXT": "X"}!'

        json_in = await client.post("/shout", json={"text": "hi"}, headers={"accept": "text/plain"})
        assert json_in.content == b"HI!"
        for accept in ("*/*", "text/*", "application/json", "text/plain;q=0", ""):
            answer = await client.post("/shout", json={"text": "hi"}, headers={"accept": accept})
            assert answer.headers["content-type"] == "application/json", accept
            assert answer.content == b'"HI!"'

        # text/plain is only for str results; other results stay JSON
        number = await client.post("/number", json={}, headers={"accept": "text/plain"})
        assert number.headers["content-type"] == "application/json"
        assert number.content == b"7"
        empty = await client.post("/shout", content=b"", headers=TEXT)
        assert empty.json() == "!"

    run(test)


def test_bad_text_bodies() -> None:
    async def test(client: httpx.AsyncClient) -> None:
        latin1 = await client.post("/shout", content="grüß".encode("latin-1"), headers=TEXT)
        assert latin1.status_code == 422
        msg = "is not UTF-8 text (byte 2 cannot be decoded); send text encoded as UTF-8"
        assert error_of(latin1) == {
            "type": "ValidationFailed",
            "message": f"Invalid request to API 'shout': 'text' {msg}. Send a JSON object with "
            "the key 'text'; /docs shows the schema.",
            "detail": {"errors": [{"loc": "text", "msg": msg}]},
        }

        # the annotation's constraints hold for a text body as for JSON
        for request in (
            client.post("/short", content=b"toolong", headers=TEXT),
            client.post("/short", json={"word": "toolong"}),
        ):
            response = await request
            assert response.status_code == 422
            assert error_of(response)["detail"]["errors"] == [
                {"loc": "word", "msg": "String should have at most 5 characters"}
            ]
        assert (await client.post("/short", content=b"ok", headers=TEXT)).json() == 2

        wrong_type = await client.post("/shout", json={"text": 5})
        assert error_of(wrong_type)["detail"]["errors"] == [
            {"loc": "text", "msg": "Input should be a valid string"}
        ]

        # with two parameters a body of text cannot say which it is
        two = await client.post("/join", content=b"a", headers=TEXT)
        assert two.status_code == 415
        assert error_of(two)["message"] == (
            "API 'join' does not take 'text/plain' bodies. Send application/json (set the "
            "Content-Type header)."
        )
        assert (await client.post("/join", json={"a": "x", "b": None})).json() == "x"

        liar = await client.post("/liar", json={}, headers={"accept": "text/plain"})
        assert liar.status_code == 500
        assert error_of(liar)["message"] == (
            "API 'liar' returned a value of type int that cannot be sent (TypeError: a text "
            "result must be a str, not int). Fix the service to return what its annotation "
            "says (str)."
        )

    run(test)


def test_openapi_describes_text() -> None:
    async def test(client: httpx.AsyncClient) -> None:
        doc = (await client.get("/openapi.json")).json()
        shout = doc["paths"]["/shout"]["post"]
        content = shout["requestBody"]["content"]
        assert list(content) == ["application/json", "text/plain"]
        assert content["text/plain"] == {"schema": {"type": "string"}}
        assert content["application/json"]["schema"]["properties"] == {
            "text": {"title": "Text", "type": "string"}
        }
        assert shout["responses"]["200"] == {
            "description": "The API's result. application/json unless the Accept header asks "
            "for text/plain.",
            "content": {
                "application/json": {"schema": {"type": "string"}},
                "text/plain": {"schema": {"type": "string"}},
            },
        }
        short = doc["paths"]["/short"]["post"]["requestBody"]["content"]
        assert short["application/json"]["schema"]["properties"]["word"]["maxLength"] == 5
        assert list(doc["paths"]["/join"]["post"]["requestBody"]["content"]) == ["application/json"]

    run(test)
