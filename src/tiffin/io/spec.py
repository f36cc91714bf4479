"""An API's request and response, derived once from its function's type hints.

Wire convention: a request is a JSON object with one key per parameter; a response body
is the return value itself (a pydantic model as its object, an array as nested lists,
a scalar as a scalar). An API whose only parameter has a codec with its own media types
(a ``.npy`` array, say) also takes that body as it is. A generator returns a stream of
Server-Sent Events, one event per item.

Everything that can be decided from the signature is decided here, at decoration time,
so a request costs one JSON parse, one pydantic validation and one JSON dump.
"""

from __future__ import annotations

import collections.abc
import inspect
import typing
from collections.abc import Callable
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
    UnsupportedMediaType,
    ValidationFailed,
)
from tiffin.io.codec import Codec, codec_for

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


def _default(obj: Any) -> Any:
    if isinstance(obj, BaseModel):
        return obj.model_dump(mode="json")
    tolist = getattr(obj, "tolist", None)  # numpy arrays orjson cannot take directly
    if callable(tolist):
        return tolist()
    if isinstance(obj, set | frozenset | tuple):
        return list(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def dumps(value: Any) -> bytes:
    """JSON bytes for a result: fast for numpy arrays, pydantic models and plain data."""
    return orjson.dumps(value, default=_default, option=orjson.OPT_SERIALIZE_NUMPY)


def _split(annotation: Any) -> tuple[Any, tuple[Any, ...]]:
    if get_origin(annotation) is Annotated:
        base, *metadata = get_args(annotation)
        return base, tuple(metadata)
    return annotation, ()


@dataclass(frozen=True)
class Param:
    """One API parameter: its name, annotation, default and codec (None: pydantic's own)."""

    name: str
    annotation: Any
    default: Any
    codec: Codec | None

    @property
    def required(self) -> bool:
        return self.default is inspect.Parameter.empty


def _field_type(param: Param) -> Any:
    if param.codec is None:
        return param.annotation
    codec = param.codec

    def convert(value: Any) -> Any:
        return codec.from_json(value)

    return Annotated[Any, BeforeValidator(convert), WithJsonSchema(codec.json_schema())]


def _location(loc: tuple[int | str, ...]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(body)"


class ApiIO:
    """The request and response handling of one API, built from its function.

    Attributes:
        params: the parameters, in order.
        request_model: the pydantic model a JSON request body is validated with.
        stream: whether the API returns a stream (a generator).
        output: the return annotation (for a stream, the type of one item).
        output_codec: the codec of the return type, if it has one.
        raw_param: the one parameter that may be sent as a whole non-JSON body, if any.
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
        params = []
        for name, parameter in list(inspect.signature(func).parameters.items())[1:]:
            if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
                raise ServiceDefinitionError(
                    f"API '{api_name}' takes *{name}; an API's parameters are named fields of "
                    "its request. List each parameter explicitly.",
                )
            if name not in hints:
                raise ServiceDefinitionError(
                    f"Parameter '{name}' of API '{api_name}' has no type annotation; the request "
                    f"schema is built from annotations. Annotate it, e.g. '{name}: list[float]'.",
                )
            base, metadata = _split(hints[name])
            params.append(Param(name, hints[name], parameter.default, codec_for(base, metadata)))
        self.params: tuple[Param, ...] = tuple(params)
        self.request_model = self._request_model()

        returns = hints.get("return", Any)
        base, metadata = _split(returns)
        self.stream = get_origin(base) in _STREAMS or base in _STREAMS
        if self.stream:
            args = get_args(base)
            base, metadata = _split(args[0] if args else Any)
        self.output: Any = base
        self.output_codec = codec_for(base, metadata)
        self._output_adapter = None if self.output_codec else TypeAdapter(base)
        raw = [p for p in self.params if p.codec is not None and p.codec.media_types]
        self.raw_param = raw[0] if len(self.params) == 1 and raw else None

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
            f"Send a JSON object with {self._expected()}; /docs shows the schema.",
            detail={"errors": errors},
        )

    def _expected(self) -> str:
        if not self.params:
            return "no keys"
        names = ", ".join(f"'{p.name}'" for p in self.params)
        return f"the key{'s' if len(self.params) > 1 else ''} {names}"

    def decode(self, body: bytes, content_type: str) -> dict[str, Any]:
        """Keyword arguments for the API function from a request body; raises a
        ``RequestError`` saying exactly what is wrong."""
        media_type = content_type.partition(";")[0].strip().lower()
        if self.raw_param is not None and media_type in self.raw_param.codec.media_types:  # type: ignore[union-attr]
            codec = self.raw_param.codec
            assert codec is not None
            try:
                return {self.raw_param.name: codec.from_body(body, media_type)}
            except ValueError as exc:
                raise self._invalid([{"loc": self.raw_param.name, "msg": str(exc)}]) from None
        if media_type not in ("", _JSON) and not media_type.endswith("+json"):
            accepted = [_JSON, *(self.raw_param.codec.media_types if self.raw_param else ())]  # type: ignore[union-attr]
            raise UnsupportedMediaType(
                f"API '{self.api_name}' does not take '{media_type}' bodies. Send "
                f"{' or '.join(accepted)} (set the Content-Type header).",
                detail={"content_type": media_type, "accepted": accepted},
            )
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
            errors = []
            for error in exc.errors(include_url=False):
                message = str(error["msg"])
                if error["type"] == "value_error":
                    message = message.removeprefix("Value error, ")
                elif error["type"] == "extra_forbidden":
                    message = f"is not a parameter of this API (it takes {self._expected()})"
                elif error["type"] == "missing":
                    message = "is required"
                errors.append({"loc": _location(error["loc"]), "msg": message})
            raise self._invalid(errors) from None
        return {param.name: getattr(model, param.name) for param in self.params}

    def cleanup(self, kwargs: dict[str, Any]) -> None:
        """Release what ``decode`` made for one request (e.g. uploaded files on disk),
        once the API has answered."""

    # -- responses -------------------------------------------------------------------

    def encode(self, result: Any, accept: str = "") -> tuple[bytes, str]:
        """The response body and media type for a result."""
        codec = self.output_codec
        if codec is not None:
            if accept and codec.media_types:
                body = codec.to_body(result, accept)
                if body is not None:
                    return body
            return dumps(codec.to_json(result)), _JSON
        return dumps(result), _JSON

    def encode_item(self, item: Any) -> bytes:
        """One stream item as JSON (the data of one Server-Sent Event)."""
        codec = self.output_codec
        return dumps(codec.to_json(item) if codec is not None else item)

    # -- schema ----------------------------------------------------------------------

    def request_schema(self) -> dict[str, Any]:
        """The JSON schema of a request body (with its own ``$defs``)."""
        return self.request_model.model_json_schema()

    def response_schema(self) -> dict[str, Any]:
        """The JSON schema of a response body, or of one stream event's data."""
        if self.output_codec is not None:
            return self.output_codec.json_schema()
        assert self._output_adapter is not None
        try:
            return self._output_adapter.json_schema()
        except Exception:
            return {}
