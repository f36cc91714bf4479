"""The OpenAPI 3.1 document of a service, built once from its APIs' type hints.

Each ``@tiffin.task`` adds five operations under ``/tasks/<name>`` (submit, list, status,
result, cancel), tagged ``tasks`` and marked ``x-tiffin-task: {"task", "action"}`` so a
client can tell them from APIs; ``tiffin.server.app`` describes what each answers.
"""

from __future__ import annotations

import inspect
from typing import Any

from tiffin.service import Api, ServiceSpec, Task
from tiffin.tasks.queue import MAX_LIST
from tiffin.tasks.store import STATUSES

__all__ = ["build"]

_REF = "#/components/schemas/"


def _hoist(schema: dict[str, Any], components: dict[str, Any]) -> dict[str, Any]:
    """Move a schema's ``$defs`` into the document's components and point refs there."""
    defs = schema.pop("$defs", {})
    for name, definition in defs.items():
        components[name] = _retarget(definition)
    retargeted: dict[str, Any] = _retarget(schema)
    return retargeted


def _retarget(node: Any) -> Any:
    if isinstance(node, dict):
        return {
            key: (value.replace("#/$defs/", _REF) if key == "$ref" else _retarget(value))
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [_retarget(item) for item in node]
    return node


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": _REF + "Error"}}},
    }


_ERRORS = {
    "400": _error("The body cannot be parsed."),
    "401": _error("An API key is needed and was missing or wrong."),
    "413": _error("The body is over the server's size limit."),
    "415": _error("The body's Content-Type is not accepted."),
    "422": _error("The body does not match the request schema; `detail.errors` says where."),
    "500": _error("The service's code failed; `detail.request_id` finds it in the log."),
    "503": _error("The server is busy or not ready; retry after `Retry-After` seconds."),
    "504": _error("The API did not answer within its timeout."),
}

_ERROR_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["type", "message", "detail"],
            "properties": {
                "type": {"type": "string", "description": "the tiffin error class"},
                "message": {"type": "string", "description": "what went wrong, and what to do"},
                "detail": {"type": "object"},
            },
        }
    },
}


def _body_schema(media_type: str) -> dict[str, Any]:
    """The schema of a whole body of a non-JSON media type: text or bytes."""
    if media_type.startswith("text/"):
        return {"type": "string"}
    return {"type": "string", "format": "binary"}


def _request_content(api: Api[Any, Any], components: dict[str, Any]) -> dict[str, Any]:
    io = api.io
    request = _hoist(io.request_schema(), components)
    content: dict[str, Any] = {}
    for media_type in io.request_media_types:
        if media_type == "application/json":
            content[media_type] = {"schema": request}
        elif media_type == "multipart/form-data":
            # one part per parameter; files list the types they take, other values are
            # JSON (OpenAPI's default for a part), or a file of their codec's own type
            encoding = {
                param.name: {"contentType": ", ".join(param.codec.media_types)}
                for param in io.files
                if param.codec is not None and param.codec.media_types
            }
            content[media_type] = {"schema": request, "encoding": encoding}
        else:
            content[media_type] = {"schema": _body_schema(media_type)}
    return content


def _response_content(api: Api[Any, Any], components: dict[str, Any]) -> dict[str, Any]:
    io = api.io
    media: dict[str, Any] = {}
    for media_type in io.response_media_types:
        if media_type == "application/json":
            media[media_type] = {"schema": _hoist(io.response_schema(), components)}
        else:
            media[media_type] = {"schema": _body_schema(media_type)}
    return media


def _operation(api: Api[Any, Any], components: dict[str, Any]) -> dict[str, Any]:
    if api.io.stream:
        item = _hoist(api.io.response_schema(), components)
        ok = {
            "description": "A stream of Server-Sent Events; each event's data is one item, "
            "as JSON, matching this schema. A failure mid-stream ends it with an event "
            "named 'error' whose data is the error body.",
            "content": {
                "text/event-stream": {
                    # before OpenAPI 3.2, `schema` describes one event
                    "schema": {
                        "type": "object",
                        "required": ["data"],
                        "properties": {
                            "event": {"enum": ["message", "error"]},
                            "data": {
                                "type": "string",
                                "contentMediaType": "application/json",
                                "contentSchema": item,
                            },
                        },
                    },
                    "x-item": item,
                }
            },
        }
    else:
        description = "The API's result."
        alternatives = [t for t in api.io.response_media_types[1:] if t != "*/*"]
        if api.io.response_media_types[0] == "*/*":
            description = "The file the API returned, with a Content-Type guessed from its name."
        elif alternatives:
            description += (
                f" {api.io.response_media_types[0]} unless the Accept header asks for "
                f"{' or '.join(alternatives)}."
            )
        ok = {"description": description, "content": _response_content(api, components)}
    summary = api.doc.splitlines()[0] if api.doc else api.name
    return {
        "operationId": api.name,
        "summary": summary,
        "description": api.doc,
        "requestBody": {"required": True, "content": _request_content(api, components)},
        "responses": {"200": ok, **_ERRORS},
    }


_STAMP = {"type": ["string", "null"], "format": "date-time"}
_TASK_STATUS = {
    "type": "object",
    "description": "A task's status (not its arguments or result).",
    "required": [
        "id",
        "task",
        "status",
        "attempts",
        "submitted_at",
        "started_at",
        "finished_at",
        "expires_at",
        "cancel_requested",
        "error",
        "callback",
        "callback_status",
    ],
    "properties": {
        "id": {"type": "string", "description": "the task's id"},
        "task": {"type": "string", "description": "the task's name"},
        "status": {"enum": list(STATUSES)},
        "attempts": {"type": "integer", "minimum": 0, "description": "runs started"},
        "submitted_at": {"type": "string", "format": "date-time"},
        "started_at": {**_STAMP, "description": "when its last run started"},
        "finished_at": _STAMP,
        "expires_at": {**_STAMP, "description": "when its status and result are removed"},
        "cancel_requested": {"type": "boolean"},
        "error": {
            "description": "why its last run failed, if it did",
            "anyOf": [
                {"type": "null"},
                {
                    "type": "object",
                    "required": ["type", "message"],
                    "properties": {"type": {"type": "string"}, "message": {"type": "string"}},
                },
            ],
        },
        "callback": {"type": ["string", "null"], "description": "the URL told when it ends"},
        "callback_status": {"enum": ["pending", "delivered", "failed", None]},
    },
}
_TASK_STATUS_REF = {"$ref": _REF + "TaskStatus"}
_TASK_ID = {
    "name": "task_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string"},
    "description": "the id the submission answered with",
}


def _status_response(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": _TASK_STATUS_REF}},
    }


def _task_paths(task: Task[Any, Any], components: dict[str, Any]) -> dict[str, Any]:
    """The five operations of one task, by path."""
    name = task.name
    summary = task.doc.splitlines()[0] if task.doc else name

    def mark(action: str, operation: dict[str, Any]) -> dict[str, Any]:
        return {
            "operationId": f"{name}.{action}",
            "tags": ["tasks"],
            "x-tiffin-task": {"task": name, "action": action},
            **operation,
        }

    request = _hoist(task.io.request_schema(), components)
    submit = mark(
        "submit",
        {
            "summary": f"Submit: {summary}",
            "description": task.doc,
            "parameters": [
                {
                    "name": "callback",
                    "in": "query",
                    "required": False,
                    "schema": {"type": "string", "format": "uri"},
                    "description": "an http(s) URL to POST the task's status and result to "
                    "when it finishes",
                }
            ],
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": request}},
            },
            "responses": {
                "202": {
                    **_status_response("Queued; the body is the task's status."),
                    "headers": {
                        "Location": {
                            "description": "the task's status",
                            "schema": {"type": "string"},
                        }
                    },
                },
                "400": _error("The body cannot be parsed, or the callback is not a URL."),
                "401": _ERRORS["401"],
                "413": _ERRORS["413"],
                "415": _error("The body is not JSON."),
                "422": _ERRORS["422"],
                "503": _error("The task store cannot be reached; retry."),
            },
        },
    )
    listing = mark(
        "list",
        {
            "summary": f"List the tasks of {name}, newest first.",
            "parameters": [
                {"name": "status", "in": "query", "schema": {"enum": list(STATUSES)}},
                {
                    "name": "limit",
                    "in": "query",
                    "schema": {
                        "type": "integer",
                        "minimum": 1,
                        "maximum": MAX_LIST,
                        "default": 100,
                    },
                },
            ],
            "responses": {
                "200": {
                    "description": "The tasks.",
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["tasks"],
                                "properties": {
                                    "tasks": {"type": "array", "items": _TASK_STATUS_REF}
                                },
                            }
                        }
                    },
                },
                "400": _error("An unknown status, or a limit out of range."),
                "401": _ERRORS["401"],
                "503": _error("The task store cannot be reached; retry."),
            },
        },
    )
    not_found = _error("No task with that id, or its result has expired.")
    status = mark(
        "status",
        {
            "summary": f"The status of a {name} task.",
            "parameters": [_TASK_ID],
            "responses": {
                "200": _status_response("The task's status."),
                "401": _ERRORS["401"],
                "404": not_found,
                "503": _error("The task store cannot be reached; retry."),
            },
        },
    )
    response = _hoist(task.io.response_schema(), components)
    result = mark(
        "result",
        {
            "summary": f"The result of a completed {name} task.",
            "parameters": [_TASK_ID],
            "responses": {
                "200": {
                    "description": "The task's result, as JSON.",
                    "content": {"application/json": {"schema": response}},
                },
                "401": _ERRORS["401"],
                "404": not_found,
                "409": _error(
                    "The task is queued or running (no result yet), or was cancelled; "
                    "`detail.status` says which."
                ),
                "500": _error("The task failed; `detail.error` is why."),
                "503": _error("The task store cannot be reached; retry."),
            },
        },
    )
    cancel = mark(
        "cancel",
        {
            "summary": f"Cancel a {name} task.",
            "description": "A queued task is cancelled at once (200). A running one is asked "
            "to stop (202); it ends as cancelled.",
            "parameters": [_TASK_ID],
            "responses": {
                "200": _status_response("Cancelled."),
                "202": _status_response("Running; asked to stop."),
                "401": _ERRORS["401"],
                "404": not_found,
                "409": _error("The task has completed or failed already."),
                "503": _error("The task store cannot be reached; retry."),
            },
        },
    )
    item = f"{task.route}/{{task_id}}"
    return {
        task.route: {"post": submit, "get": listing},
        item: {"get": status},
        f"{item}/result": {"get": result},
        f"{item}/cancel": {"post": cancel},
    }


def _probe(summary: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "get": {
            "summary": summary,
            "tags": ["health"],
            "responses": {
                "200": {"description": "OK", "content": {"application/json": {"schema": schema}}},
                "503": _error("Not ready."),
            },
        }
    }


def build(spec: ServiceSpec) -> dict[str, Any]:
    """The OpenAPI document of ``spec`` as a dict."""
    components: dict[str, Any] = {"Error": _ERROR_SCHEMA}
    paths: dict[str, Any] = {}
    for route, api in sorted(spec.routes().items()):
        paths[route] = {"post": _operation(api, components)}
    if spec.tasks:
        components["TaskStatus"] = _TASK_STATUS
        for task in sorted(spec.tasks.values(), key=lambda t: t.name):
            paths.update(_task_paths(task, components))
    status = {
        "type": "object",
        "properties": {"status": {"type": "string"}},
        "required": ["status"],
    }
    paths["/livez"] = _probe("Whether the process is alive.", status)
    paths["/readyz"] = _probe("Whether the service is started and ready for requests.", status)
    paths["/metrics"] = {
        "get": {
            "summary": "Prometheus metrics of every worker.",
            "tags": ["health"],
            "responses": {
                "200": {
                    "description": "Prometheus text format",
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                }
            },
        }
    }
    doc = inspect.cleandoc(spec.cls.__doc__ or "") or f"The {spec.name} service, served by tiffin."
    return {
        "openapi": "3.1.0",
        "info": {"title": spec.name, "version": "1.0.0", "description": doc},
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            },
        },
    }
