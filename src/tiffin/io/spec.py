"""An API's request and response, derived once from its function's type hints.

Wire convention: a request is a JSON object with one key per parameter; a response body
is the return value itself (a pydantic model as its object, an array as nested lists,
a scalar as a scalar). A generator returns a stream of Server-Sent Events, one event per
item. Other bodies are chosen by the types:

- an API whose only parameter has a codec with its own media types takes that body as
  it is: a ``.npy`` array, a CSV table, a ``text/plain`` string, an image, a raw file;
- an API with a file parameter (``pathlib.Path``, an image), or one whose codec has its
  own media types, takes ``multipart/form-data``: one part per parameter, named after
  it; a file part goes to the codec, a plain field is read as JSON, or as text where
  it is not JSON (and always as text for a ``str``);
- a result whose codec has its own media types is sent in one when the client's
  ``Accept`` names it (``text/csv``, ``image/jpeg``); a file or an image always is.

Everything that can be decided from the signature is decided here, at decoration time,
so a JSON request costs one JSON parse, one pydantic validation and one JSON dump, and
nothing else.
"""

from __future__ import annotations

import collections.abc
import inspect
import logging
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, get_args, get_origin

import orjson
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    TypeAdapter,
    WithJsonSchema,
    create_model,
)
from pydantic import ValidationError as PydanticValidationError

from tiffin.exceptions import (
    MalformedRequest,
    ServiceDefinitionError,
    ServiceError,
    TiffinError,
    UnsupportedMediaType,
    ValidationFailed,
    describe,
)
from tiffin.io import multipart
from tiffin.io.codec import Codec, Upload, codec_for, either

__all__ = ["ApiIO", "Param", "dumps"]

_STREAMS = (
    collections.abc.Iterator,
    collections.abc.Iterable,
    collections.abc.Generator,
    collections.abc.AsyncIterator,
    collections.abc.AsyncIterable,
    collections.abc.AsyncGenerator,
)
_JSON = "application/json"
_FORM = "application/x-www-form-urlencoded"
_OCTET_STREAM = "application/octet-stream"
_TEXT = "text/plain"

log = logging.getLogger("tiffin.io")


def _default(obj: Any) -> Any:
    if isinstance(obj, BaseModel):
        return obj.model_dump(mode="json")
    tolist = getattr(obj, "tolist", None)  # numpy arrays orjson cannot take directly
    if callable(tolist):
        return tolist()
    if isinstance(obj, set | frozenset | tuple):
        return list(obj)
    isoformat = getattr(obj, "isoformat", None)  # pandas.Timestamp, other datetime-likes
    if callable(isoformat):
        return isoformat()
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def dumps(value: Any) -> bytes:
    """JSON bytes for a result: fast for numpy arrays, pydantic models and plain data."""
    return orjson.dumps(value, default=_default, option=orjson.OPT_SERIALIZE_NUMPY)


def _split(annotation: Any) -> tuple[Any, tuple[Any, ...]]:
    if get_origin(annotation) is Annotated:
        base, *metadata = get_args(annotation)
        return base, tuple(metadata)
    return annotation, ()


def _optional(annotation: Any) -> Any | None:
    """``X`` for ``X | None`` (or ``Optional[X]``), else None."""
    if get_origin(annotation) in (typing.Union, types.UnionType):
        args = get_args(annotation)
        if len(args) == 2 and type(None) in args:
            return args[0] if args[1] is type(None) else args[1]
    return None


def _codec(annotation: Any) -> tuple[Codec | None, bool]:
    """The codec of a parameter's annotation, and whether it may also be None."""
    base, metadata = _split(annotation)
    inner = _optional(base)
    if inner is not None:
        inner_base, inner_metadata = _split(inner)
        codec = codec_for(inner_base, (*metadata, *inner_metadata))
        if codec is not None:
            return codec, True
    return codec_for(base, metadata), False


def _is_json(media_type: str) -> bool:
    return media_type in ("", _JSON) or media_type.endswith("+json")


@dataclass(frozen=True)
class Param:
    """One API parameter: its name, annotation, default and codec (None: pydantic's own).

    ``nullable`` is True for ``X | None`` where ``X`` has the codec: the value may be null.
    """

    name: str
    annotation: Any
    default: Any
    codec: Codec | None
    nullable: bool = False

    @property
    def required(self) -> bool:
        return self.default is inspect.Parameter.empty


def _refuse_json(value: Any) -> Any:
    raise ValueError("is a file; send it as a part of a multipart/form-data request")


class _Decoded:
    """A value a codec has already made from a body or a file part: the request model
    passes it through instead of reading it as JSON."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value


def _field_type(param: Param) -> Any:
    codec = param.codec
    if codec is None or codec.native:
        return param.annotation
    nullable = param.nullable
    from_json: Callable[[Any], Any] = _refuse_json if codec.file else codec.from_json

    def convert(value: Any) -> Any:
        if type(value) is _Decoded:
            return value.value
        if value is None and nullable:
            return None
        return from_json(value)

    schema = codec.json_schema()
    if nullable:
        schema = {"anyOf": [schema, {"type": "null"}]}
    return Annotated[Any, BeforeValidator(convert), WithJsonSchema(schema)]


def _location(loc: tuple[int | str, ...]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(body)"


class ApiIO:
    """The request and response handling of one API, built from its function.

    Attributes:
        params: the parameters, in order.
        request_model: the pydantic model a request's values are validated with.
        stream: whether the API returns a stream (a generator).
        output: the return annotation (for a stream, the type of one item).
        output_codec: the codec of the return type, if it has one.
        raw_param: the one parameter that may be sent as a whole non-JSON body, if any.
        files: the parameters whose values are files (``pathlib.Path``, images).
        uploads: the parameters that may be sent as a file part: files, and types whose
            codec reads bodies of its own (a CSV table, a ``.npy`` array).
        multipart: whether the API takes ``multipart/form-data`` requests (it has uploads).
        request_media_types: the request bodies it takes, the most fitting first.
        response_media_types: the response bodies it may answer with, the default first.
    """

    def __init__(self, func: Callable[..., Any], api_name: str) -> None:
        self.api_name = api_name
        try:
            hints = typing.get_type_hints(func, include_extras=True)
        except (NameError, TypeError) as exc:
            raise ServiceDefinitionError(
                f"The type hints of API '{api_name}' cannot be resolved ({exc}). Import every "
                "type used in its annotations at module level.",
            ) from None
        self.params: tuple[Param, ...] = self._params(func, hints)
        self._by_name = {param.name: param for param in self.params}
        self.request_model = self._request_model()

        returns = hints.get("return", Any)
        base, metadata = _split(returns)
        self.stream = get_origin(base) in _STREAMS or base in _STREAMS
        if self.stream:
            args = get_args(base)
            base, metadata = _split(args[0] if args else Any)
        self.output: Any = base
        self.output_codec = out = codec_for(base, metadata)
        if self.stream and out is not None and out.file:
            raise ServiceDefinitionError(
                f"API '{api_name}' streams {out.name} items, but each event of a stream is JSON "
                f"and a {out.name} has no JSON form. Return one {out.name} instead, or stream "
                "JSON values.",
            )
        self._output_adapter = TypeAdapter(base) if out is None or out.native else None
        self._file_out = out is not None and out.file
        self._body_out = out is not None and bool(out.response_media_types())
        if self.stream:
            self.response_media_types: tuple[str, ...] = ("text/event-stream",)
        elif out is None:
            self.response_media_types = (_JSON,)
        elif out.file:
            self.response_media_types = out.response_media_types()
        else:
            self.response_media_types = (_JSON, *out.response_media_types())

        raw = [p for p in self.params if p.codec is not None and p.codec.media_types]
        self.raw_param = raw[0] if len(self.params) == 1 and raw else None
        self.files = tuple(p for p in self.params if p.codec is not None and p.codec.file)
        self.uploads = tuple(
            p
            for p in self.params
            if p.codec is not None
            and (p.codec.file or (p.codec.media_types and not p.codec.native))
        )
        self.multipart = bool(self.uploads)
        self.request_media_types: tuple[str, ...] = self._request_media_types()
        self._releasing = tuple(
            (p.name, p.codec)
            for p in self.params
            if p.codec is not None and type(p.codec).release is not Codec.release
        )
        if self.files:
            part = "part" if len(self.params) == 1 else "parts"
            self._hint = f"Send multipart/form-data with the {part} {self._names()}"
        else:
            self._hint = f"Send a JSON object with {self._expected()}"

    def _params(self, func: Callable[..., Any], hints: dict[str, Any]) -> tuple[Param, ...]:
        params = []
        for name, parameter in list(inspect.signature(func).parameters.items())[1:]:
            if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
                raise ServiceDefinitionError(
                    f"API '{self.api_name}' takes *{name}; an API's parameters are named fields "
                    "of its request. List each parameter explicitly.",
                )
            if name not in hints:
                raise ServiceDefinitionError(
                    f"Parameter '{name}' of API '{self.api_name}' has no type annotation; the "
                    "request schema is built from annotations. Annotate it, e.g. "
                    f"'{name}: list[float]'.",
                )
            codec, nullable = _codec(hints[name])
            params.append(Param(name, hints[name], parameter.default, codec, nullable))
        return tuple(params)

    def _request_media_types(self) -> tuple[str, ...]:
        # a JSON body cannot carry a file, so an API that needs one does not list JSON
        media_types = [] if any(p.required for p in self.files) else [_JSON]
        if self.multipart:
            media_types.append(multipart.MULTIPART)
        if self.raw_param is not None and self.raw_param.codec is not None:
            media_types.extend(self.raw_param.codec.media_types)
        return tuple(media_types)

    def _request_model(self) -> type[BaseModel]:
        fields: dict[str, Any] = {}
        for param in self.params:
            default = ... if param.required else param.default
            fields[param.name] = (_field_type(param), default)
        title = "".join(part.capitalize() for part in self.api_name.split("_")) + "Request"
        try:
            return create_model(
                title,
                __config__=ConfigDict(extra="forbid", arbitrary_types_allowed=True),
                **fields,
            )
        except Exception as exc:
            raise ServiceDefinitionError(
                f"The parameters of API '{self.api_name}' cannot form a request schema: {exc}. "
                "Use JSON types, pydantic models, or a type with a registered codec.",
            ) from None

    # -- requests --------------------------------------------------------------------

    def _invalid(self, errors: list[dict[str, Any]]) -> ValidationFailed:
        first = errors[0]
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        return ValidationFailed(
            f"Invalid request to API '{self.api_name}': '{first['loc']}' {first['msg']}{more}. "
            f"{self._hint}; /docs shows the schema.",
            detail={"errors": errors},
        )

    def _names(self) -> str:
        return ", ".join(f"'{p.name}'" for p in self.params)

    def _expected(self, kind: str = "key") -> str:
        if not self.params:
            return f"no {kind}s"
        return f"the {kind}{'s' if len(self.params) > 1 else ''} {self._names()}"

    def _validation_errors(self, exc: PydanticValidationError, kind: str) -> ValidationFailed:
        errors = []
        for error in exc.errors(include_url=False):
            message = str(error["msg"])
            if error["type"] == "value_error":
                message = message.removeprefix("Value error, ")
            elif error["type"] == "extra_forbidden":
                message = f"is not a parameter of this API (it takes {self._expected(kind)})"
            elif error["type"] == "missing":
                message = "is required"
            errors.append({"loc": _location(error["loc"]), "msg": message})
        return self._invalid(errors)

    def decode(self, body: bytes, content_type: str) -> dict[str, Any]:
        """Keyword arguments for the API function from a request body; raises a
        ``RequestError`` saying exactly what is wrong.

        Values that hold resources (an uploaded file on disk) are freed by ``cleanup``
        once the API has answered; when ``decode`` raises, it has freed them already.
        """
        media_type = content_type.partition(";")[0].strip().lower()
        # `curl -d '{...}'` labels a JSON body as a form: that one is read as the JSON it is
        curl_json = media_type == _FORM and body.lstrip().startswith(b"{")
        if media_type not in ("", _JSON) and not media_type.endswith("+json") and not curl_json:
            return self._decode_other(body, content_type, media_type)
        if not body.strip():
            data: Any = {}
        else:
            try:
                data = orjson.loads(body)
            except orjson.JSONDecodeError as exc:
                raise MalformedRequest(
                    f"The request body is not valid JSON ({exc}). Send a JSON object with "
                    f"{self._expected()}.",
                    detail={"problem": str(exc)},
                ) from None
        if not isinstance(data, dict):
            raise ValidationFailed(
                f"The request body must be a JSON object with {self._expected()}, not "
                f"{type(data).__name__ if data is not None else 'null'}.",
                detail={"errors": [{"loc": "(body)", "msg": "must be a JSON object"}]},
            )
        try:
            model = self.request_model.model_validate(data)
        except PydanticValidationError as exc:
            raise self._validation_errors(exc, "key") from None
        return {param.name: getattr(model, param.name) for param in self.params}

    def _decode_other(self, body: bytes, content_type: str, media_type: str) -> dict[str, Any]:
        raw = self.raw_param
        if raw is not None and raw.codec is not None and media_type in raw.codec.media_types:
            codec = raw.codec
            try:
                value = codec.from_body(body, media_type)
            except ValueError as exc:
                raise self._invalid([{"loc": raw.name, "msg": str(exc)}]) from None
            if codec.native:  # pydantic checks the value, as it would in JSON
                return self._validate({raw.name: value}, "key")
            return {raw.name: value}
        if media_type == multipart.MULTIPART and self.multipart:
            return self._decode_multipart(body, content_type)
        raise UnsupportedMediaType(
            f"API '{self.api_name}' does not take '{media_type}' bodies. Send "
            f"{either(self.request_media_types)} (set the Content-Type header).",
            detail={"content_type": media_type, "accepted": list(self.request_media_types)},
        )

    def validate(self, arguments: Mapping[str, Any]) -> dict[str, Any]:
        """Keyword arguments for the API function from values given in code (by a
        protocol, say), checked and converted as a JSON request's would be; raises
        ``ValidationFailed`` with ``detail["errors"]``, each a ``{"loc", "msg"}``."""
        return self._validate(dict(arguments), "argument")

    def _validate(self, data: dict[str, Any], kind: str) -> dict[str, Any]:
        try:
            model = self.request_model.model_validate(data)
        except PydanticValidationError as exc:
            raise self._validation_errors(exc, kind) from None
        return {param.name: getattr(model, param.name) for param in self.params}

    def _decode_multipart(self, body: bytes, content_type: str) -> dict[str, Any]:
        parts = multipart.parse(body, content_type)
        errors = []
        seen: set[str] = set()
        for part in parts:
            if part.name not in self._by_name:
                message = f"is not a parameter of this API (it takes {self._expected('part')})"
                errors.append({"loc": part.name, "msg": message})
            elif part.name in seen:
                message = "was sent in more than one part; send one part per parameter"
                errors.append({"loc": part.name, "msg": message})
            seen.add(part.name)
        if errors:  # before any file is written
            raise self._invalid(errors)
        made: list[tuple[Codec, Any]] = []
        try:
            data = {part.name: self._part_value(part, made) for part in parts}
            return self._validate(data, "part")
        except BaseException:
            self._release(made)
            raise

    def _part_value(self, part: multipart.Part, made: list[tuple[Codec, Any]]) -> Any:
        param = self._by_name[part.name]
        codec = param.codec
        media_type = part.media_type or (_OCTET_STREAM if part.filename is not None else _TEXT)
        if codec is not None and (
            codec.file or part.filename is not None or media_type in codec.media_types
        ):
            try:
                value = codec.from_upload(Upload(part.data, media_type, part.filename))
            except ValueError as exc:
                raise self._invalid([{"loc": param.name, "msg": str(exc)}]) from None
            if codec.native:
                return value
            made.append((codec, value))
            return _Decoded(value)
        # a form field: a JSON value, or text where it is not JSON
        try:
            return orjson.loads(part.data)
        except orjson.JSONDecodeError as exc:
            if _is_json(media_type):
                message = f"is not valid JSON ({exc})"
                raise self._invalid([{"loc": param.name, "msg": message}]) from None
        try:
            return part.data.decode("utf-8")
        except UnicodeDecodeError:
            message = "is neither JSON nor UTF-8 text; send the value as JSON"
            raise self._invalid([{"loc": param.name, "msg": message}]) from None

    def cleanup(self, kwargs: dict[str, Any]) -> None:
        """Release what ``decode`` made for one request (e.g. uploaded files on disk),
        once the API has answered."""
        for name, codec in self._releasing:
            value = kwargs.get(name)
            if value is not None:
                self._release([(codec, value)])

    def _release(self, made: list[tuple[Codec, Any]]) -> None:
        for codec, value in made:
            try:
                codec.release(value)
            except Exception:
                log.exception(
                    "The %s codec failed to release a value of API %s", codec.name, self.api_name
                )

    # -- responses -------------------------------------------------------------------

    def encode(self, result: Any, accept: str = "") -> tuple[bytes, str]:
        """The response body and media type for a result.

        Raises ``ServiceError`` when the result cannot be sent (it is not what the API's
        return annotation says).
        """
        codec = self.output_codec
        try:
            if codec is None:
                return dumps(result), _JSON
            if self._file_out or (accept and self._body_out):
                body = codec.to_body(result, accept)
                if body is not None:
                    return body
            return dumps(codec.to_json(result)), _JSON
        except TiffinError:
            raise
        except Exception as exc:
            raise self._unsendable(result, exc) from exc

    def _unsendable(self, result: Any, exc: Exception) -> ServiceError:
        log.error("API %s returned a result that cannot be sent", self.api_name, exc_info=exc)
        returns = getattr(self.output, "__name__", None) or repr(self.output)
        return ServiceError(
            f"API '{self.api_name}' returned a value of type {type(result).__name__} that "
            f"cannot be sent ({describe(exc)}). Fix the service to return what its annotation "
            f"says ({returns}).",
            detail={"api": self.api_name},
        )

    def encode_item(self, item: Any) -> bytes:
        """One stream item as JSON (the data of one Server-Sent Event)."""
        codec = self.output_codec
        return dumps(codec.to_json(item) if codec is not None else item)

    # -- schema ----------------------------------------------------------------------

    def request_schema(self) -> dict[str, Any]:
        """The JSON schema of a request's values (with its own ``$defs``): the JSON body,
        and the fields of a multipart body, where files are ``format: binary`` strings."""
        return self.request_model.model_json_schema()

    def response_schema(self) -> dict[str, Any]:
        """The JSON schema of a JSON response body, or of one stream event's data."""
        if self._output_adapter is None:
            assert self.output_codec is not None
            return self.output_codec.response_schema()
        try:
            return self._output_adapter.json_schema()
        except Exception:
            return {}
