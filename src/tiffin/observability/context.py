"""Which request the running code serves, for log lines and spans anywhere below it.

The server sets ``request_id`` when it starts handling a request, and tracing (when it is
on) sets ``trace_id`` and ``span_id``; the log formatter reads them, so a line the
service's own code logs while answering a request names that request. They are
``contextvars``: each request's task sees its own, and code the server runs in a worker
thread for it sees them too (the server runs such calls in a copy of the context).

    from tiffin.observability import context
    context.request_id.get()   # '9f0c...' inside a request, None outside
"""

from __future__ import annotations

from contextvars import ContextVar

__all__ = ["request_id", "span_id", "trace_id"]

request_id: ContextVar[str | None] = ContextVar("tiffin_request_id", default=None)
"""The id of the request being answered (its ``X-Request-ID``), or None."""

trace_id: ContextVar[str | None] = ContextVar("tiffin_trace_id", default=None)
"""The W3C trace id (32 hex digits) of the request's span when tracing is on, or None."""

span_id: ContextVar[str | None] = ContextVar("tiffin_span_id", default=None)
"""The id (16 hex digits) of the current span when tracing is on, or None."""
