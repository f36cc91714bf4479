"""One HTTP request as the app reads it, and the ASGI types the app's handlers take.

``Request`` reads everything the app needs from a request's scope in one pass over its
headers: content type, accepted type, declared length, API key, CORS origin and request
id. A request id the client sent is kept when it is a plain label of up to 128
characters; otherwise a new one is drawn.

    request = Request(scope)
    request.request_id        # '9f0c...' (32 hex digits) unless X-Request-ID was sent
"""

from __future__ import annotations

import os
import random
import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

__all__ = ["Handler", "Message", "Receive", "Request", "Scope", "Send", "new_request_id"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_REQUEST_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")

# Request ids come from a private generator seeded from os.urandom: uuid.uuid4() reads
# os.urandom per call, which releases the GIL, and under load a worker thread then takes
# it for a whole model call before the loop gets it back (this alone took the iris
# quickstart from 3,729 to 4,042 requests/s). Private, so a service calling random.seed()
# cannot make ids repeat; reseeded in a forked child, so workers differ.
_ids = random.Random()  # noqa: S311 - request ids are labels, not secrets
os.register_at_fork(after_in_child=_ids.seed)


def new_request_id() -> str:
    """A new request id: 32 hex digits."""
    return f"{_ids.getrandbits(128):032x}"


class Request:
    """What the app reads from one request's scope, in one pass over its headers."""

    __slots__ = ("accept", "api_key", "content_length", "content_type", "origin", "request_id")

    def __init__(self, scope: Scope) -> None:
        self.content_type = ""
        self.accept = ""
        self.content_length = -1
        self.api_key = ""
        self.origin = ""
        request_id = ""
        for name, value in scope["headers"]:
            if name == b"content-type":
                self.content_type = value.decode("latin-1")
            elif name == b"accept":
                self.accept = value.decode("latin-1")
            elif name == b"content-length":
                self.content_length = int(value) if value.isdigit() else -1
            elif name == b"x-request-id":
                request_id = value.decode("latin-1")
            elif name == b"authorization":
                scheme, _, token = value.decode("latin-1").partition(" ")
                if scheme.lower() == "bearer":
                    self.api_key = token.strip()
            elif name == b"x-api-key":
                self.api_key = value.decode("latin-1").strip()
            elif name == b"origin":
                self.origin = value.decode("latin-1")
        if not (request_id and _REQUEST_ID.fullmatch(request_id)):
            request_id = f"{_ids.getrandbits(128):032x}"
        self.request_id = request_id


# A route's handler: answers the request, and returns the status it answered with.
Handler = Callable[[Scope, Receive, Send, Request], Awaitable[int]]
