"""How an API's method runs for one request, whoever asked (an HTTP route or a protocol).

``async def`` methods run on the event loop; ``def`` methods run inline on it while
their calls are short, else in the thread pool (``tiffin.server.inline`` decides); a
batched API's request goes to its batcher, which calls the method once for many. Each
call holds a slot of ``max_concurrency`` (a batcher has its own admission), ends within
``timeout`` or becomes a 504, and an exception of the service's code becomes a 500 whose
traceback is logged under the request id. Code that runs in a thread sees the request's
context (``tiffin.observability.context``), as it would inline.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

from prometheus_client import CollectorRegistry

from tiffin.batching import Batcher, BatchMetrics
from tiffin.config import Settings
from tiffin.exceptions import RequestTimeout, ServiceError, TiffinError
from tiffin.server.inline import InlinePolicy
from tiffin.server.limits import ConcurrencyLimit
from tiffin.server.runtime import ServiceRuntime
from tiffin.service import Api, ServiceSpec

__all__ = ["Calls"]

log = logging.getLogger("tiffin.server")


class Calls:
    """Runs a service's API methods for requests, in one worker.

    Args:
        spec: the service.
        settings: the server's settings (``timeout``, ``max_concurrency``, ``max_queue``).
        runtime: the service's runtime; its instance is the one called.
        registry: where the batchers' metrics go.
        tracer: the tracer when tracing is on, else None.

    Attributes:
        limit: the concurrency limit of unbatched calls.
        executor: the thread pool ``def`` methods (and batches) run in.
        inline: each unbatched ``def`` API's inline policy, by name.
        batchers: each batched API's batcher, by name.
    """

    def __init__(
        self,
        spec: ServiceSpec,
        settings: Settings,
        runtime: ServiceRuntime,
        registry: CollectorRegistry,
        tracer: Any,
    ) -> None:
        self.runtime = runtime
        self.timeout = settings.timeout
        self.tracer = tracer
        self.limit = ConcurrencyLimit(settings.max_concurrency, settings.max_queue)
        self.executor = ThreadPoolExecutor(
            settings.max_concurrency, thread_name_prefix=f"tiffin-{spec.name}"
        )
        self.inline = {
            api.name: InlinePolicy(timeout=settings.timeout, offload=api.offload)
            for api in spec.apis.values()
            if not api.is_async and api.batch is None
        }
        batch_metrics = BatchMetrics(registry)
        self.batchers = {
            api.name: Batcher(
                api.name,
                tuple(param.name for param in api.io.params),
                max_size=api.batch.max_size,
                max_latency_ms=api.batch.max_latency_ms,
                dim=api.batch.dim,
                call=partial(self._call_batch, api),
                metrics=batch_metrics,
                tracer=tracer,
            )
            for api in spec.apis.values()
            if api.batch is not None
        }

    async def run(self, api: Api[Any, Any], kwargs: dict[str, Any], request_id: str) -> Any:
        """Call an API's method with a request's arguments and return its result; raises
        ``RequestTimeout``, ``ServiceUnavailable`` or ``ServiceError`` as the module
        docstring says."""
        if api.batch is not None:  # the batcher has its own admission and concurrency
            return await self._run_batched(api, kwargs, request_id)
        method = getattr(self.runtime.instance, api.attribute)
        if self.tracer is not None:
            method = self.tracer.call(api, method)
        timeout = self.timeout
        policy = self.inline.get(api.name)
        await self.limit.acquire()
        deadline: asyncio.Timeout | None = None
        try:
            if policy is not None and policy.inline():
                result, seconds = self._call_inline(method, kwargs, policy)
                if seconds > timeout:  # it could not be stopped, but it still is too late
                    raise self.timed_out(api)
                return result
            async with asyncio.timeout(timeout) as deadline:
                if policy is not None:
                    return await self._call_in_thread(method, kwargs, policy)
                try:
                    return await method(**kwargs)
                finally:
                    self.limit.release()
        except TiffinError:
            raise
        except Exception as exc:
            if isinstance(exc, TimeoutError) and deadline is not None and deadline.expired():
                raise self.timed_out(api) from None
            raise self.failed(api, request_id, exc) from exc

    def failed(self, api: Api[Any, Any], request_id: str, exc: BaseException) -> ServiceError:
        """Log an exception of the service's code with its request id; the 500 to answer."""
        log.error(
            "API %s raised %s (request %s)",
            api.name,
            type(exc).__name__,
            request_id,
            exc_info=exc,
            extra={"request_id": request_id, "api": api.name},
        )
        return ServiceError(
            f"API '{api.name}' failed: the service's code raised {type(exc).__name__}. The "
            f"server log has the traceback under request id {request_id}.",
            detail={"request_id": request_id, "api": api.name},
        )

    def timed_out(self, api: Api[Any, Any]) -> RequestTimeout:
        """The 504 for a call past the timeout."""
        return RequestTimeout(
            f"API '{api.name}' did not answer within {self.timeout:g} s. Send less work per "
            "request, or raise the limit with TIFFIN_TIMEOUT or @tiffin.service(timeout=...).",
            detail={"timeout": self.timeout, "api": api.name},
        )

    def shutdown(self) -> None:
        """Stop the thread pool: queued calls are dropped; running ones finish alone."""
        self.executor.shutdown(wait=False, cancel_futures=True)

    async def _call_batch(self, api: Api[Any, Any], merged: dict[str, Any]) -> Any:
        """One call of a batched API's method with the merged rows of several requests:
        ``async def`` on the event loop, ``def`` in a thread (a batch is the heavy kind of
        call the thread pool is for). It runs in the batcher's context, not a request's:
        its log lines name no request."""
        method = getattr(self.runtime.instance, api.attribute)
        if api.is_async:
            return await method(**merged)
        loop = asyncio.get_running_loop()
        call = partial(contextvars.copy_context().run, method, **merged)
        return await loop.run_in_executor(self.executor, call)

    async def _run_batched(
        self, api: Api[Any, Any], kwargs: dict[str, Any], request_id: str
    ) -> Any:
        try:
            return await asyncio.wait_for(self.batchers[api.name].submit(kwargs), self.timeout)
        except TimeoutError:
            raise self.timed_out(api) from None
        except TiffinError:
            raise
        except Exception as exc:
            raise self.failed(api, request_id, exc) from exc

    def _call_inline(
        self, method: Callable[..., Any], kwargs: dict[str, Any], policy: InlinePolicy
    ) -> tuple[Any, float]:
        # Like a call in a thread, the method sees no running event loop.
        loop = asyncio._get_running_loop()
        asyncio._set_running_loop(None)
        started = time.perf_counter()
        try:
            return method(**kwargs), time.perf_counter() - started
        finally:
            seconds = time.perf_counter() - started
            asyncio._set_running_loop(loop)
            self.limit.release()
            policy.observe(seconds, inline=True)

    async def _call_in_thread(
        self, method: Callable[..., Any], kwargs: dict[str, Any], policy: InlinePolicy
    ) -> Any:
        call = _Timed(method, kwargs)
        # run_in_executor does not carry the context over: the call's log lines would
        # not name its request
        future = asyncio.get_running_loop().run_in_executor(
            self.executor, contextvars.copy_context().run, call
        )

        def finished(_: object) -> None:
            # The slot is held until the thread really finishes, even after a 504: a
            # thread cannot be stopped, so its work still counts against max_concurrency.
            self.limit.release()
            policy.observe(call.seconds, inline=False)

        future.add_done_callback(finished)
        return await asyncio.shield(future)


class _Timed:
    """A sync API call for a worker thread, timed where it runs (so the time excludes
    the wait for a thread and for the GIL before it starts)."""

    __slots__ = ("kwargs", "method", "seconds")

    def __init__(self, method: Callable[..., Any], kwargs: dict[str, Any]) -> None:
        self.method = method
        self.kwargs = kwargs
        self.seconds = 0.0

    def __call__(self) -> Any:
        started = time.perf_counter()
        try:
            return self.method(**self.kwargs)
        finally:
            self.seconds = time.perf_counter() - started
