"""Images: PIL.Image.Image parameters from multipart parts or raw image bodies, results as
PNG (or JPEG/WebP when asked), and a 422 for anything that is not a whole image."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import httpx
import pytest
from PIL import Image

import tiffin
from tests.server.asgi import serving
from tiffin.exceptions import ServiceDefinitionError

FORMATS = "image/png, image/jpeg, image/webp, image/gif, image/bmp, image/tiff"


@tiffin.service(name="images")
class Images:
    """Images for tests."""

    @tiffin.api
    def rotate(self, image: Image.Image) -> Image.Image:
        """Turn an image a quarter to the left."""
        return image.transpose(Image.Transpose.ROTATE_90)

    @tiffin.api
    def measure(self, image: Image.Image, label: str = "") -> dict[str, Any]:
        return {
            "size": list(image.size),
            "mode": image.mode,
            "format": image.format,
            "label": label,
        }

    @tiffin.api
    def blank(self, mode: str) -> Image.Image:
        return Image.new(mode, (3, 2))

    @tiffin.api
    def broken(self) -> Image.Image:
        return "a picture"  # type: ignore[return-value]


def encoded(image: Image.Image, fmt: str) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt)
    return out.getvalue()


def picture() -> Image.Image:
    """A 4x2 RGB image with a different colour in every pixel."""
    image = Image.new("RGB", (4, 2))
    image.putdata([(i * 60, 255 - i * 30, i * 7) for i in range(8)])
    return image


def decoded(response: httpx.Response) -> Image.Image:
    image = Image.open(io.BytesIO(response.content))
    image.load()
    return image


def run(test: Callable[[httpx.AsyncClient], Coroutine[Any, Any, None]]) -> None:
    async def main() -> None:
        async with serving(Images) as (client, _):
            await test(client)

    asyncio.run(main())


def error_of(response: httpx.Response) -> dict[str, Any]:
    error: dict[str, Any] = response.json()["error"]
    return error


def test_an_image_body_in_and_png_out() -> None:
    source = picture()
    expected = source.transpose(Image.Transpose.ROTATE_90)

    async def test(client: httpx.AsyncClient) -> None:
        for fmt, media_type in [("PNG", "image/png"), ("BMP", "image/bmp"), ("TIFF", "image/tiff")]:
            response = await client.post(
                "/rotate", content=encoded(source, fmt), headers={"content-type": media_type}
            )
            assert response.status_code == 200, fmt
            assert response.headers["content-type"] == "image/png"
            result = decoded(response)
            assert result.format == "PNG"
            assert result.size == (2, 4)
            assert result.tobytes() == expected.tobytes()

        form = await client.post("/rotate", files={"image": ("cat.png", encoded(source, "PNG"))})
        assert form.status_code == 200
        assert decoded(form).tobytes() == expected.tobytes()

    run(test)


def test_jpeg_or_webp_when_asked() -> None:
    async def test(client: httpx.AsyncClient) -> None:
        png = encoded(picture(), "PNG")
        for accept, media_type, fmt in [
            ("image/jpeg", "image/jpeg", "JPEG"),
            ("image/webp", "image/webp", "WEBP"),
            ("image/jpeg;q=0.5, image/webp", "image/webp", "WEBP"),
            ("image/*", "image/png", "PNG"),
            ("application/json", "image/png", "PNG"),
        ]:
            response = await client.post(
                "/rotate", content=png, headers={"content-type": "image/png", "accept": accept}
            )
            assert response.status_code == 200, accept
            assert response.headers["content-type"] == media_type, accept
            assert decoded(response).format == fmt
            assert decoded(response).size == (2, 4)

        # JPEG has no alpha channel or palette: such images are flattened to RGB
        for mode in ("RGBA", "P", "LA"):
            jpeg = await client.post(
                "/blank", json={"mode": mode}, headers={"accept": "image/jpeg"}
            )
            assert jpeg.status_code == 200, mode
            assert decoded(jpeg).mode == "RGB"
            png_out = await client.post("/blank", json={"mode": mode})
            assert decoded(png_out).mode == mode
        cmyk = await client.post("/blank", json={"mode": "CMYK"})
        assert decoded(cmyk).mode == "RGB"

    run(test)


def test_an_image_part_beside_other_fields() -> None:
    async def test(client: httpx.AsyncClient) -> None:
        jpeg = encoded(picture(), "JPEG")
        response = await client.post(
            "/measure",
            files={"image": ("photo.jpg", jpeg, "image/jpeg")},
            data={"label": "holiday"},
        )
        assert response.status_code == 200
        assert response.json() == {
            "size": [4, 2],
            "mode": "RGB",
            "format": "JPEG",
            "label": "holiday",
        }
        # the decoder follows the bytes, not the label the client put on them
        mislabelled = await client.post(
            "/measure", files={"image": ("photo.png", encoded(picture(), "GIF"), "image/png")}
        )
        assert mislabelled.json()["format"] == "GIF"

    run(test)


def test_anything_but_a_whole_image_is_422() -> None:
    png = encoded(picture(), "PNG")
    rotate_hint = "Send multipart/form-data with the part 'image'"
    measure_hint = "Send multipart/form-data with the parts 'image', 'label'"
    formats = "send a PNG, JPEG, WebP, GIF, BMP or TIFF file"

    def invalid(api: str, msg: str, hint: str) -> dict[str, Any]:
        return {
            "type": "ValidationFailed",
            "message": f"Invalid request to API '{api}': 'image' {msg}. {hint}; /docs shows the "
            "schema.",
            "detail": {"errors": [{"loc": "image", "msg": msg}]},
        }

    async def test(client: httpx.AsyncClient) -> None:
        cases = [
            (
                b"not an image at all",
                f"is not a valid image (its format is not recognised); {formats}",
            ),
            (png[:60], f"is not a valid image (image file is truncated); {formats}"),
            (b"", "is an empty file; send the image's bytes"),
            # a format Pillow reads but a request may not use
            (
                encoded(picture(), "PPM"),
                f"is not a valid image (its format is not recognised); {formats}",
            ),
        ]
        for body, msg in cases:
            raw = await client.post("/rotate", content=body, headers={"content-type": "image/png"})
            assert raw.status_code == 422, body[:20]
            assert error_of(raw) == invalid("rotate", msg, rotate_hint), body[:20]
            part = await client.post("/measure", files={"image": ("x.png", body, "image/png")})
            assert part.status_code == 422, body[:20]
            assert error_of(part) == invalid("measure", msg, measure_hint), body[:20]

        as_json = await client.post("/rotate", json={"image": "aGVsbG8="})
        assert as_json.status_code == 422
        assert error_of(as_json) == invalid(
            "rotate", "is a file; send it as a part of a multipart/form-data request", rotate_hint
        )

        svg = await client.post(
            "/rotate", content=b"<svg/>", headers={"content-type": "image/svg+xml"}
        )
        assert svg.status_code == 415
        assert error_of(svg) == {
            "type": "UnsupportedMediaType",
            "message": "API 'rotate' does not take 'image/svg+xml' bodies. Send "
            "multipart/form-data, image/png, image/jpeg, image/webp, image/gif, image/bmp or "
            "image/tiff (set the Content-Type header).",
            "detail": {
                "content_type": "image/svg+xml",
                "accepted": [
                    "multipart/form-data",
                    "image/png",
                    "image/jpeg",
                    "image/webp",
                    "image/gif",
                    "image/bmp",
                    "image/tiff",
                ],
            },
        }

    run(test)


def test_a_result_that_is_not_an_image_is_a_500() -> None:
    async def test(client: httpx.AsyncClient) -> None:
        response = await client.post("/broken", json={})
        assert response.status_code == 500
        assert error_of(response) == {
            "type": "ServiceError",
            "message": "API 'broken' returned a value of type str that cannot be sent "
            "(TypeError: an image result must be a PIL.Image.Image, not str). Fix the service "
            "to return what its annotation says (Image).",
            "detail": {"api": "broken"},
        }

    run(test)


def test_openapi_describes_images() -> None:
    async def test(client: httpx.AsyncClient) -> None:
        doc = (await client.get("/openapi.json")).json()
        rotate = doc["paths"]["/rotate"]["post"]
        content = rotate["requestBody"]["content"]
        binary = {"schema": {"type": "string", "format": "binary"}}
        assert content["multipart/form-data"]["encoding"] == {"image": {"contentType": FORMATS}}
        assert content["multipart/form-data"]["schema"]["properties"]["image"]["format"] == "binary"
        for media_type in FORMATS.split(", "):
            assert content[media_type] == binary
        assert "application/json" not in content
        assert rotate["responses"]["200"] == {
            "description": "The API's result. image/png unless the Accept header asks for "
            "image/jpeg or image/webp.",
            "content": {"image/png": binary, "image/jpeg": binary, "image/webp": binary},
        }

    run(test)


def test_a_stream_of_images_is_refused_at_definition() -> None:
    with pytest.raises(ServiceDefinitionError, match="streams image items"):

        class Frames:
            @tiffin.api
            def frames(self, n: int) -> Iterator[Image.Image]:
                yield Image.new("L", (n, n))
