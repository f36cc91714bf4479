"""Images: ``PIL.Image.Image`` parameters and results (``pip install 'tiffin[image]'``).

    @tiffin.api
    def classify(self, image: Image.Image, top: int = 5) -> list[Label]: ...

    @tiffin.api
    def thumbnail(self, image: Image.Image) -> Image.Image: ...

An image arrives as a part of a ``multipart/form-data`` request named after the parameter
(``curl -F image=@cat.jpg``), or, for an API whose only parameter is an image, as the whole
body (``Content-Type: image/png``, ``image/jpeg``, ``image/webp``, ``image/gif``,
``image/bmp`` or ``image/tiff``). It is decoded completely before the API runs, so a
corrupt or truncated file is a 422 and never reaches the service's code; only those
formats are decoded, whatever the body claims to be.

An image result is answered as PNG, or as JPEG or WebP when the client asks for it
(``Accept: image/jpeg``); JPEG has no alpha channel, so a transparent image is flattened
to RGB first. Pillow is imported only by services that use it.
"""

from __future__ import annotations

import io
import sys
from typing import Any, Self

from tiffin.io.codec import Codec, Upload, negotiate

__all__ = ["ImageCodec"]

PNG = "image/png"
JPEG = "image/jpeg"
WEBP = "image/webp"
# media type -> Pillow's format name; only these decoders ever run on a request
_FORMATS = {
    PNG: "PNG",
    JPEG: "JPEG",
    WEBP: "WEBP",
    "image/gif": "GIF",
    "image/bmp": "BMP",
    "image/tiff": "TIFF",
}
_OUTPUT = (PNG, JPEG, WEBP)


def _is_image(annotation: Any) -> bool:
    module = sys.modules.get("PIL.Image")
    if module is None:
        return False
    return isinstance(annotation, type) and issubclass(annotation, module.Image)


class ImageCodec(Codec):
    """Decodes an uploaded PNG/JPEG/WebP/GIF/BMP/TIFF file into a ``PIL.Image.Image``, and
    answers an image result as PNG (or JPEG/WebP when asked).

    Example:
        curl -F 'image=@cat.jpg' localhost:3000/classify
        curl --data-binary @cat.png -H 'Content-Type: image/png' -H 'Accept: image/jpeg' \\
            localhost:3000/thumbnail -o thumb.jpg
    """

    name = "image"
    media_types = tuple(_FORMATS)
    file = True

    @classmethod
    def create(cls, annotation: Any, metadata: tuple[Any, ...]) -> Self | None:
        return cls() if _is_image(annotation) else None

    def json_schema(self) -> dict[str, Any]:
        return {
            "type": "string",
            "format": "binary",
            "description": "an image file: PNG, JPEG, WebP, GIF, BMP or TIFF",
        }

    def response_media_types(self) -> tuple[str, ...]:
        return _OUTPUT

    def from_json(self, value: Any) -> Any:
        raise ValueError("is an image; send it as a part of a multipart/form-data request")

    def to_json(self, obj: Any) -> Any:
        raise TypeError("an image has no JSON form")

    def from_body(self, body: bytes, media_type: str) -> Any:
        from PIL import Image, UnidentifiedImageError

        if not body:
            raise ValueError("is an empty file; send the image's bytes")
        try:
            image = Image.open(io.BytesIO(body), formats=list(_FORMATS.values()))
            image.load()
        except Image.DecompressionBombError as exc:
            raise ValueError(f"is too large to decode ({exc})") from None
        except (OSError, SyntaxError, ValueError) as exc:
            reason = "its format is not recognised"
            if not isinstance(exc, UnidentifiedImageError):
                reason = str(exc).rstrip(".") or type(exc).__name__
            raise ValueError(
                f"is not a valid image ({reason}); send a PNG, JPEG, WebP, GIF, BMP or TIFF file"
            ) from None
        return image

    def from_upload(self, upload: Upload) -> Any:
        return self.from_body(upload.data, upload.media_type)

    def to_body(self, obj: Any, accept: str) -> tuple[bytes, str] | None:
        from PIL import Image

        if not isinstance(obj, Image.Image):
            raise TypeError(f"an image result must be a PIL.Image.Image, not {type(obj).__name__}")
        media_type = negotiate(accept, _OUTPUT) or PNG
        image = obj
        if media_type == JPEG:  # no alpha channel, no palette
            flatten = image.mode not in ("RGB", "L", "CMYK")
        else:
            flatten = image.mode == "CMYK"
        if flatten:
            image = image.convert("RGB")
        out = io.BytesIO()
        image.save(out, format=_FORMATS[media_type])
        return out.getvalue(), media_type
