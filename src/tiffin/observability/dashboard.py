"""``/dashboard``: a live page of the server's recent metrics, served by tiffin itself.

The page (``tiffin/server/dashboard_assets/``, beside the ``/docs`` page's: one HTML
file, one script, one stylesheet, no build step, nothing loaded from another host, so
it works without internet) fetches ``/dashboard/data`` every ``history_interval``
seconds and draws its charts as SVG: requests per second, latency percentiles, errors,
batch sizes and drift scores, over the last 5 minutes, 15 minutes or hour, for all APIs
or one; and each alert rule's state.

``/dashboard/data`` is the history (``tiffin.observability.history``, ``History.data``)
as JSON, with the service's name, the server's time and the alert rules
(``Alerts.status``). ``?since=T`` (Unix seconds) leaves out the points at or before
``T``: the page asks for the whole hour once and then for the new points only.

The page and its assets need no API key, like ``/docs``; the page sends the key typed
into it. ``/dashboard/data`` needs one where ``/metrics`` does (``metrics_need_key``).
"""

from __future__ import annotations

import math
import time
from urllib.parse import parse_qs

import orjson

from tiffin.exceptions import InvalidArgument
from tiffin.observability.alerts import Alerts
from tiffin.observability.history import History
from tiffin.pages import page_assets

__all__ = ["Dashboard"]


class Dashboard:
    """The dashboard of one service: its page and assets, read once, and its data.

    Args:
        service: the service's name, the page's title.
        history: the server's history.
        alerts: the alert rules and their states.

    Example:
        dashboard = Dashboard("iris", history, alerts)
        body, content_type = dashboard.asset("/dashboard")
    """

    def __init__(self, service: str, history: History, alerts: Alerts) -> None:
        self.service = service
        self.history = history
        self.alerts = alerts
        self._assets = page_assets("dashboard", service)

    def asset(self, path: str) -> tuple[bytes, bytes] | None:
        """The body and content type of a dashboard path, or None."""
        return self._assets.get(path)

    def data(self, query: bytes = b"") -> bytes:
        """The JSON body of ``/dashboard/data`` for a query string (``since=T``).

        Raises:
            InvalidArgument: ``since`` is not a number.
        """
        since = 0.0
        given = parse_qs(query.decode("latin-1")).get("since")
        if given:
            try:
                since = float(given[-1])
            except ValueError:
                since = math.nan
            if not math.isfinite(since):
                raise InvalidArgument(
                    f"since={given[-1]!r} is not a time. Give Unix seconds (since=1764000000.5), "
                    "or leave it out for the last hour.",
                    detail={"since": given[-1]},
                )
        body = {
            "service": self.service,
            "now": round(time.time(), 3),
            **self.history.data(since),
            "alerts": self.alerts.status(),
        }
        return orjson.dumps(body)
