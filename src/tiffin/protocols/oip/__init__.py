"""The Open Inference Protocol (KServe V2), over HTTP and gRPC, for every tiffin service.

Any client of the protocol (KServe's, Triton's, a generated gRPC stub, ``curl``) calls a
tiffin service unchanged. Each API whose parameters are tensor-like is a model named
after the API (``tiffin.protocols.oip.tensors`` says which are, and how values map)::

    GET  /v2                                 server metadata
    GET  /v2/health/live, /v2/health/ready   liveness, readiness
    GET  /v2/models/{api}                    model metadata: input and output tensors
    GET  /v2/models/{api}/ready              model readiness
    POST /v2/models/{api}/infer              inference

and the same as ``inference.GRPCInferenceService`` on ``tiffin serve --grpc-port N``
(``tiffin[grpc]``). A call runs the API the way its own HTTP route does: batched when it
batches, within the same timeout and concurrency limit, counted in the same metrics.
Errors are the protocol's ``{"error": "..."}`` with 400 for a bad request, 404 for an
unknown model, 503 when busy or not ready, 504 past the timeout, and 500 when the
service's code raised; over gRPC, ``INVALID_ARGUMENT``, ``NOT_FOUND``, ``UNAVAILABLE``,
``DEADLINE_EXCEEDED`` and ``INTERNAL``.

This protocol is a plugin like any other (``tiffin.protocols``): the entry point
``oip`` in tiffin's own package metadata registers it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from tiffin.exceptions import RouteNotFound, TiffinError, ValidationFailed
from tiffin.protocols import HttpHandler, HttpResponse, Protocol, Server

if TYPE_CHECKING:
    import numpy as np

    from tiffin.protocols.oip.tensors import Model

__all__ = ["OpenInferenceProtocol"]

EXTENSIONS = ("binary_tensor_data",)
OUTPUT = "output"

log = logging.getLogger("tiffin.server")


class OpenInferenceProtocol(Protocol):
    """The Open Inference Protocol: see the module docstring.

    Attributes:
        models: the APIs served as models, by name.
    """

    name: ClassVar[str] = "oip"

    def __init__(self, server: Server) -> None:
        super().__init__(server)
        self.models: dict[str, Model] = {}
        try:
            from tiffin.protocols.oip.tensors import models_of
        except ImportError:  # tensors are numpy arrays
            log.info(
                "The Open Inference Protocol needs numpy, so /v2 serves no models. Install "
                "it with: pip install 'tiffin[numpy]'"
            )
            return
        self.models = models_of(server.apis)

    # -- what HTTP and gRPC share ----------------------------------------------------

    def model(self, name: str, version: str = "") -> Model:
        """The model of that name (and version, if one is given), or ``RouteNotFound``."""
        model = self.models.get(name)
        if model is None:
            served = ", ".join(sorted(self.models)) or "none"
            raise RouteNotFound(
                f"Model '{name}' is not served here. This server's models are: {served}.",
                detail={"model": name},
            )
        if version and version != self.server.version:
            have = f"version '{self.server.version}'" if self.server.version else "no version"
            raise RouteNotFound(
                f"Model '{name}' has no version '{version}'; this server serves {have}. Leave "
                "the version out to call the one served.",
                detail={"model": name, "version": version},
            )
        return model

    def server_metadata(self) -> dict[str, Any]:
        from tiffin import __version__

        return {"name": self.server.name, "version": __version__, "extensions": list(EXTENSIONS)}

    async def infer(
        self,
        model: Model,
        tensors: Mapping[str, np.ndarray],
        request_id: str,
        wanted: Sequence[str] = (),
    ) -> list[tuple[str, np.ndarray, str]]:
        """Run a model on input tensors; its output tensors as ``(name, array, datatype)``.

        Raises ``ValidationFailed`` (with a message about tensors, not JSON keys) for
        inputs that do not fit, and what ``Server.call`` raises otherwise."""
        unknown = [name for name in wanted if name != OUTPUT]
        if unknown:
            raise ValidationFailed(
                f"Model '{model.name}' has no output {', '.join(repr(n) for n in unknown)}; "
                f"its output is '{OUTPUT}'.",
                detail={"errors": [{"loc": unknown[0], "msg": "is not an output"}]},
            )
        arguments = model.arguments(tensors)
        try:
            result = await self.server.call(model.name, arguments, request_id=request_id)
        except ValidationFailed as exc:
            raise _about_tensors(model, exc) from None
        array, datatype = model.output(result)
        return [(OUTPUT, array, datatype)]

    # -- transports ------------------------------------------------------------------

    def http_error(self, error: TiffinError) -> HttpResponse:
        from tiffin.protocols.oip.http import error_response

        return error_response(error)

    def http_routes(self) -> Mapping[str, HttpHandler]:
        from tiffin.protocols.oip.http import HttpRoutes

        return HttpRoutes(self).routes()

    def grpc_handlers(self) -> Sequence[Any]:
        from tiffin.protocols.oip.grpc_service import handlers

        return handlers(self)


def _about_tensors(model: Model, exc: ValidationFailed) -> ValidationFailed:
    """The API's own validation error, said in terms of the model's inputs."""
    errors = exc.detail.get("errors") or [{"loc": "(inputs)", "msg": "is not valid"}]
    first = errors[0]
    loc = str(first["loc"])
    name, _, inner = loc.partition("[")
    where = f"Input '{name}'" + (f" at [{inner}" if inner else "")
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return ValidationFailed(
        f"{where} of model '{model.name}' {first['msg']}{more}. Its metadata (GET "
        f"/v2/models/{model.name}, or ModelMetadata over gRPC) lists the inputs it takes.",
        detail={"errors": errors},
    )


def status_of(exc: TiffinError) -> int:
    """The HTTP status of an error in this protocol: 400 for every bad request body."""
    status = exc.status_code
    return 400 if status in (413, 415, 422) else status
