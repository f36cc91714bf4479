"""The gRPC server of one worker: the protocols' gRPC methods on ``--grpc-port``.

It runs on the worker's event loop (``grpc.aio``), beside the HTTP server, so a gRPC call
reaches the same service instance, batchers, limits and metrics as an HTTP request.
Every worker listens on the same port with ``SO_REUSEPORT`` and the kernel spreads
connections over them; the supervisor holds the port from the start (binding it without
listening), so it is known, and taken, before any worker runs. When API keys are set, a
call needs one in its ``authorization: Bearer <key>`` or ``x-api-key`` metadata.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import grpc

from tiffin.exceptions import ConfigError

__all__ = ["GrpcServer", "address"]

log = logging.getLogger("tiffin.server")

_NEEDS_KEY = (
    "This server needs an API key. Send it as 'authorization: Bearer <key>' or "
    "'x-api-key: <key>' metadata."
)


def address(host: str, port: int) -> str:
    """``host:port`` as gRPC writes it (IPv6 hosts in brackets)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _key_of(metadata: Sequence[tuple[str, Any]]) -> str:
    for name, value in metadata:
        if name == "x-api-key":
            return str(value).strip()
        if name == "authorization":
            scheme, _, token = str(value).partition(" ")
            if scheme.lower() == "bearer":
                return token.strip()
    return ""


async def _refuse(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
    await context.abort(grpc.StatusCode.UNAUTHENTICATED, _NEEDS_KEY)


class _KeyCheck(grpc.aio.ServerInterceptor):
    """Refuses a call without one of the server's API keys in its metadata."""

    def __init__(self, authorized: Callable[[str], bool]) -> None:
        self.authorized = authorized
        self.refuse: grpc.RpcMethodHandler[Any, Any] = grpc.unary_unary_rpc_method_handler(_refuse)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Any],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        metadata = handler_call_details.invocation_metadata or ()
        if self.authorized(_key_of(metadata)):
            return await continuation(handler_call_details)
        return self.refuse


class GrpcServer:
    """A ``grpc.aio`` server for the handlers of every protocol.

    Args:
        handlers: ``grpc.GenericRpcHandler`` objects.
        host, port: where to listen.
        max_message: the largest message taken, in bytes (the server's ``max_body_size``).
        authorized: whether a key is one of the server's API keys; None when there are none.
    """

    def __init__(
        self,
        handlers: Sequence[grpc.GenericRpcHandler],
        *,
        host: str,
        port: int,
        max_message: int,
        authorized: Callable[[str], bool] | None = None,
    ) -> None:
        self.address = address(host, port)
        self._server = grpc.aio.server(
            interceptors=[] if authorized is None else [_KeyCheck(authorized)],
            options=[
                ("grpc.so_reuseport", 1),
                ("grpc.max_receive_message_length", max_message),
                ("grpc.max_send_message_length", -1),
            ],
        )
        self._server.add_generic_rpc_handlers(tuple(handlers))

    async def start(self) -> None:
        """Listen and take calls; ``ConfigError`` when the address cannot be listened on."""
        try:
            bound = self._server.add_insecure_port(self.address)
        except RuntimeError:
            bound = 0
        if not bound:
            raise ConfigError(
                f"Cannot serve gRPC on {self.address}: the port is taken by another program, "
                "or the host is not an address of this machine. Pick another port with "
                "--grpc-port, or check --host.",
                detail={"address": self.address},
            )
        await self._server.start()
        log.debug("gRPC listening on %s", self.address)

    async def stop(self, grace: float) -> None:
        """Stop taking calls; calls in flight get ``grace`` seconds to finish."""
        await self._server.stop(grace)
