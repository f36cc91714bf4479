"""Tasks through the real ASGI app, in-process: the routes, their answers and errors,
retries, cancelling, callbacks, metrics, and the separate budget that keeps APIs free."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

import tiffin
from tests.server.asgi import serving
from tiffin.server import openapi
from tiffin.service import spec_of


@tiffin.service(name="jobs")
class Jobs:
    """Tasks for the tests; ``held`` runs until the test releases it (or cancels it)."""

    def __init__(self) -> None:
        self.started: list[str] = []
        self.released: set[str] = set()

    @tiffin.api(offload=True)  # always in a thread of the API pool
    def ping(self) -> str:
        return "pong"

    @tiffin.task
    def add(self, a: int, b: int = 1) -> int:
        """Add two numbers, later."""
        return a + b

    @tiffin.task(retries=2, retry_backoff=0.05)
    def flaky(self, fails: int) -> dict[str, int]:
        context = tiffin.task_context()
        if context.attempt <= fails:
            raise ValueError(f"attempt {context.attempt} fails")
        return {"attempt": context.attempt}

    @tiffin.task
    def held(self, key: str) -> str:
        context = tiffin.task_context()
        self.started.append(key)
        while not context.wait_cancelled(0.01):
            if key in self.released:
                return key
        return "stopped early"

    @tiffin.task
    async def sleeper(self, seconds: float) -> float:
        await asyncio.sleep(seconds)
        return seconds

    @tiffin.task(timeout=0.1)
    async def too_slow(self) -> None:
        await asyncio.sleep(5)


def run(main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(main())


async def settled(
    client: httpx.AsyncClient, path: str, statuses: tuple[str, ...], timeout: float = 10.0
) -> dict[str, Any]:
    """Poll a task's status until it is one of ``statuses``."""
    deadline = time.monotonic() + timeout
    while True:
        body: dict[str, Any] = (await client.get(path)).json()
        if body["status"] in statuses:
            return body
        assert time.monotonic() < deadline, f"{path} is still {body['status']}"
        await asyncio.sleep(0.02)


async def until(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out waiting"
        await asyncio.sleep(0.01)


def error_of(response: httpx.Response) -> dict[str, Any]:
    body: dict[str, Any] = response.json()["error"]
    return body


def test_submit_then_status_result_and_list(tmp_path: Path) -> None:
    async def main() -> None:
        async with serving(Jobs, home=tmp_path) as (client, _):
            submitted = await client.post("/tasks/add", json={"a": 2, "b": 40})
            assert submitted.status_code == 202
            body = submitted.json()
            task_id = body["id"]
            assert submitted.headers["location"] == f"/tasks/add/{task_id}"
            assert (body["task"], body["status"], body["attempts"]) == ("add", "queued", 0)
            assert body["error"] is None
            assert body["submitted_at"].endswith("Z")

            done = await settled(client, f"/tasks/add/{task_id}", ("completed",))
            assert done["attempts"] == 1
            assert done["finished_at"] >= done["started_at"] >= done["submitted_at"]
            result = await client.get(f"/tasks/add/{task_id}/result")
            assert (result.status_code, result.json()) == (200, 42)
            assert result.headers["content-type"] == "application/json"

            other = (await client.post("/tasks/add", json={"a": 1})).json()["id"]
            await settled(client, f"/tasks/add/{other}", ("completed",))
            listed = (await client.get("/tasks/add")).json()["tasks"]
            assert [t["id"] for t in listed] == [other, task_id]
            limited = (await client.get("/tasks/add", params={"limit": 1})).json()["tasks"]
            assert [t["id"] for t in limited] == [other]
            none = await client.get("/tasks/add", params={"status": "failed"})
            assert none.json() == {"tasks": []}
            assert (tmp_path / "tasks" / "jobs.db").is_file()  # the default store

    run(main)


def test_unknown_ids_and_paths_are_404s_with_their_bodies(tmp_path: Path) -> None:
    async def main() -> None:
        async with serving(Jobs, home=tmp_path) as (client, _):
            task_id = "0123456789abcdef0123456789abcdef"
            for path in (f"/tasks/add/{task_id}", f"/tasks/add/{task_id}/result"):
                missing = await client.get(path)
                assert missing.status_code == 404
                assert missing.json() == {
                    "error": {
                        "type": "TaskNotFound",
                        "message": f"Task 'add' has no task '{task_id}': it never existed, or "
                        "it finished more than 86400 s ago and was removed. GET /tasks/add "
                        "lists its tasks.",
                        "detail": {"task": "add", "id": task_id},
                    }
                }
            assert error_of(await client.get("/tasks/add/not-an-id"))["type"] == "TaskNotFound"
            cancel = await client.post(f"/tasks/add/{task_id}/cancel")
            assert error_of(cancel)["type"] == "TaskNotFound"

            # an id of another task is not this task's
            other = (await client.post("/tasks/flaky", json={"fails": 0})).json()["id"]
            assert (await client.get(f"/tasks/add/{other}")).status_code == 404

            unknown = await client.get("/tasks/nope/123")
            assert unknown.status_code == 404
            assert error_of(unknown) == {
                "type": "RouteNotFound",
                "message": "No task endpoint at /tasks/nope/123. This service's tasks are at "
                "/tasks/add, /tasks/flaky, /tasks/held, /tasks/sleeper, /tasks/too_slow; each "
                "task's status is at /tasks/<name>/<id>, its result at .../result; /docs "
                "lists them.",
                "detail": {"path": "/tasks/nope/123"},
            }
            assert (await client.get(f"/tasks/add/{other}/bogus")).status_code == 404
            assert error_of(await client.post("/tasks/nope", json={}))["type"] == "RouteNotFound"

    run(main)


def test_bad_submissions_and_queries_are_4xx(tmp_path: Path) -> None:
    async def main() -> None:
        async with serving(Jobs, home=tmp_path) as (client, _):
            invalid = await client.post("/tasks/add", json={"a": "two"})
            assert invalid.status_code == 422
            assert error_of(invalid)["message"].startswith("Invalid request to API 'add': 'a' ")
            assert (await client.post("/tasks/add", json={"c": 1})).status_code == 422

            text = await client.post(
                "/tasks/add", content=b"a=1", headers={"content-type": "text/plain"}
            )
            assert text.status_code == 415
            assert error_of(text)["type"] == "UnsupportedMediaType"

            callback = await client.post(
                "/tasks/add", params={"callback": "ftp://example.com/x"}, json={"a": 1}
            )
            assert callback.status_code == 400
            assert error_of(callback)["message"].startswith(
                "The callback 'ftp://example.com/x' is not an http:// or https:// URL."
            )

            status = await client.get("/tasks/add", params={"status": "done"})
            assert status.status_code == 400
            assert error_of(status)["message"] == (
                "There is no task status 'done'. Use one of queued, running, completed, "
                "failed, cancelled."
            )
            for limit in ("0", "1001", "ten"):
                assert (await client.get("/tasks/add", params={"limit": limit})).status_code == 400

            wrong = await client.delete("/tasks/add")
            assert (wrong.status_code, wrong.headers["allow"]) == (405, "POST, GET")
            task_id = (await client.post("/tasks/add", json={"a": 1})).json()["id"]
            assert (await client.get(f"/tasks/add/{task_id}/cancel")).status_code == 405
            assert (await client.post(f"/tasks/add/{task_id}")).status_code == 405
            # nothing refused was queued
            assert len((await client.get("/tasks/add")).json()["tasks"]) == 1

    run(main)


def test_a_result_before_completion_says_the_state(tmp_path: Path) -> None:
    async def main() -> None:
        async with serving(Jobs, home=tmp_path, task_concurrency=1) as (client, app):
            service = app.runtime.instance
            running = (await client.post("/tasks/held", json={"key": "a"})).json()["id"]
            queued = (await client.post("/tasks/held", json={"key": "b"})).json()["id"]
            await until(lambda: service.started == ["a"])
            for task_id, state in ((running, "running"), (queued, "queued")):
                early = await client.get(f"/tasks/held/{task_id}/result")
                assert early.status_code == 409
                assert early.json() == {
                    "error": {
                        "type": "TaskNotCompleted",
                        "message": f"Task {task_id} ('held') is {state}; it has no result yet. "
                        f"Ask again later: GET /tasks/held/{task_id} shows when its status is "
                        "'completed'.",
                        "detail": {"task": "held", "id": task_id, "status": state},
                    }
                }
            service.released.update({"a", "b"})
            await settled(client, f"/tasks/held/{queued}", ("completed",))
            assert (await client.get(f"/tasks/held/{running}/result")).json() == "a"

    run(main)


def test_cancel_a_queued_and_a_running_task(tmp_path: Path) -> None:
    async def main() -> None:
        async with serving(Jobs, home=tmp_path, task_concurrency=1) as (client, app):
            service = app.runtime.instance
            running = (await client.post("/tasks/held", json={"key": "a"})).json()["id"]
            queued = (await client.post("/tasks/held", json={"key": "b"})).json()["id"]
            await until(lambda: service.started == ["a"])

            cancelled = await client.post(f"/tasks/held/{queued}/cancel")
            assert cancelled.status_code == 200
            assert (cancelled.json()["status"], cancelled.json()["cancel_requested"]) == (
                "cancelled",
                False,
            )
            again = await client.post(f"/tasks/held/{queued}/cancel")  # stays cancelled
            assert (again.status_code, again.json()["status"]) == (200, "cancelled")

            asked = await client.post(f"/tasks/held/{running}/cancel")
            assert asked.status_code == 202
            assert (asked.json()["status"], asked.json()["cancel_requested"]) == ("running", True)
            ended = await settled(client, f"/tasks/held/{running}", ("cancelled",))
            assert ended["attempts"] == 1
            result = await client.get(f"/tasks/held/{running}/result")
            assert result.status_code == 409
            assert error_of(result)["message"] == (
                f"Task {running} ('held') was cancelled, so it has no result. Submit it again "
                "to run it."
            )
            await asyncio.sleep(0.3)
            assert service.started == ["a"]  # the cancelled queued task never ran

            done = (await client.post("/tasks/add", json={"a": 1})).json()["id"]
            await settled(client, f"/tasks/add/{done}", ("completed",))
            late = await client.post(f"/tasks/add/{done}/cancel")
            assert late.status_code == 409
            assert error_of(late) == {
                "type": "Conflict",
                "message": f"Task {done} ('add') has completed already, so there is nothing "
                "to cancel.",
                "detail": {"task": "add", "id": done, "status": "completed"},
            }

    run(main)


def test_cancel_an_async_task_at_its_next_await(tmp_path: Path) -> None:
    async def main() -> None:
        async with serving(Jobs, home=tmp_path) as (client, _):
            task_id = (await client.post("/tasks/sleeper", json={"seconds": 30})).json()["id"]
            await settled(client, f"/tasks/sleeper/{task_id}", ("running",))
            started = time.monotonic()
            assert (await client.post(f"/tasks/sleeper/{task_id}/cancel")).status_code == 202
            await settled(client, f"/tasks/sleeper/{task_id}", ("cancelled",))
            assert time.monotonic() - started < 5

    run(main)


def test_retries_with_backoff_then_success_or_failure(tmp_path: Path) -> None:
    async def main() -> None:
        async with serving(Jobs, home=tmp_path) as (client, _):
            started = time.monotonic()
            recovers = (await client.post("/tasks/flaky", json={"fails": 2})).json()["id"]
            done = await settled(client, f"/tasks/flaky/{recovers}", ("completed", "failed"))
            assert (done["status"], done["attempts"], done["error"]) == ("completed", 3, None)
            assert time.monotonic() - started >= 0.05 + 0.1  # backed off 0.05 s, then 0.1 s
            result = await client.get(f"/tasks/flaky/{recovers}/result")
            assert result.json() == {"attempt": 3}

            gives_up = (await client.post("/tasks/flaky", json={"fails": 9})).json()["id"]
            failed = await settled(client, f"/tasks/flaky/{gives_up}", ("completed", "failed"))
            assert (failed["status"], failed["attempts"]) == ("failed", 3)
            message = (
                "The task's code raised ValueError. The server log has the traceback under "
                f"task id {gives_up}."
            )
            assert failed["error"] == {"type": "ValueError", "message": message}
            answer = await client.get(f"/tasks/flaky/{gives_up}/result")
            assert answer.status_code == 500
            assert answer.json() == {
                "error": {
                    "type": "TaskFailed",
                    "message": f"Task {gives_up} ('flaky') failed after 3 attempts: {message}",
                    "detail": {
                        "task": "flaky",
                        "id": gives_up,
                        "status": "failed",
                        "attempts": 3,
                        "error": {"type": "ValueError", "message": message},
                    },
                }
            }

            slow = (await client.post("/tasks/too_slow", json={})).json()["id"]
            timed_out = await settled(client, f"/tasks/too_slow/{slow}", ("failed",))
            assert timed_out["error"]["type"] == "TimeoutError"

            metrics = (await client.get("/metrics")).text
            for line in (
                'tiffin_tasks_submitted_total{task="flaky"} 2.0',
                'tiffin_tasks_completed_total{task="flaky"} 1.0',
                'tiffin_tasks_failed_total{task="flaky"} 1.0',
                'tiffin_tasks_retried_total{task="flaky"} 4.0',
                'tiffin_tasks_failed_total{task="too_slow"} 1.0',
                'tiffin_tasks_cancelled_total{task="held"} 0.0',
                'tiffin_task_duration_seconds_count{task="flaky"} 6.0',
                'tiffin_tasks_running{task="flaky"} 0.0',
            ):
                assert line in metrics

    run(main)


def test_sync_apis_answer_while_the_task_budget_is_full(tmp_path: Path) -> None:
    """Two tasks hold both task slots (and a third waits); with only two API slots and
    two API threads, APIs still answer at once: tasks have threads of their own."""

    async def main() -> None:
        async with serving(Jobs, home=tmp_path, task_concurrency=2, max_concurrency=2) as (
            client,
            app,
        ):
            service = app.runtime.instance
            ids = [
                (await client.post("/tasks/held", json={"key": key})).json()["id"]
                for key in ("a", "b", "c")
            ]
            await until(lambda: len(service.started) == 2)
            started = time.monotonic()
            answers = await asyncio.gather(*(client.post("/ping") for _ in range(20)))
            assert [a.status_code for a in answers] == [200] * 20
            assert time.monotonic() - started < 2
            await asyncio.sleep(0.2)
            assert len(service.started) == 2  # the budget holds the third back
            third = (await client.get(f"/tasks/held/{ids[2]}")).json()
            assert third["status"] == "queued"
            service.released.update({"a", "b", "c"})
            for task_id in ids:
                await settled(client, f"/tasks/held/{task_id}", ("completed",))

    run(main)


def test_task_routes_need_the_api_key_like_apis(tmp_path: Path) -> None:
    async def main() -> None:
        async with serving(Jobs, home=tmp_path, api_keys=("k",)) as (client, _):
            assert (await client.post("/tasks/add", json={"a": 1})).status_code == 401
            assert (await client.get(f"/tasks/add/{'0' * 32}")).status_code == 401
            keyed = await client.post("/tasks/add", json={"a": 1}, headers={"x-api-key": "k"})
            assert keyed.status_code == 202

    run(main)


class _Hooks(BaseHTTPRequestHandler):
    """Records callback POSTs; answers 500 to the first one, to be retried."""

    received: list[tuple[dict[str, str], dict[str, Any]]]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["content-length"]))
        headers = {name.lower(): value for name, value in self.headers.items()}
        self.received.append((headers, json.loads(body)))
        self.send_response(500 if len(self.received) == 1 else 204)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def hook_server() -> Iterator[tuple[str, list[tuple[dict[str, str], dict[str, Any]]]]]:
    received: list[tuple[dict[str, str], dict[str, Any]]] = []
    handler = type("Hooks", (_Hooks,), {"received": received})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/done", received
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_a_callback_is_posted_when_the_task_ends_and_retried(tmp_path: Path) -> None:
    async def main() -> None:
        with hook_server() as (url, received):
            async with serving(Jobs, home=tmp_path) as (client, _):
                task_id = (
                    await client.post("/tasks/add", params={"callback": url}, json={"a": 4})
                ).json()["id"]
                await until(lambda: len(received) == 2)  # refused once, then taken
                ended = await settled(client, f"/tasks/add/{task_id}", ("completed",))
                for _ in range(100):
                    status = (await client.get(f"/tasks/add/{task_id}")).json()
                    if status["callback_status"] != "pending":
                        break
                    await asyncio.sleep(0.02)
                assert (status["callback"], status["callback_status"]) == (url, "delivered")

                headers, body = received[-1]
                assert headers["content-type"] == "application/json"
                assert headers["x-tiffin-task-id"] == task_id
                assert body["result"] == 5
                assert {k: body[k] for k in ("id", "task", "status", "attempts")} == {
                    "id": task_id,
                    "task": "add",
                    "status": "completed",
                    "attempts": ended["attempts"],
                }
                assert received[0][1] == received[1][1]

                queued = (
                    await client.post(
                        "/tasks/held", params={"callback": url}, json={"key": "never"}
                    )
                ).json()["id"]
                await client.post(f"/tasks/held/{queued}/cancel")
                await until(lambda: len(received) >= 3)
                assert (received[2][1]["id"], received[2][1]["status"]) == (queued, "cancelled")
                assert "result" not in received[2][1]

    run(main)


def test_the_openapi_document_describes_each_task() -> None:
    document = openapi.build(spec_of(Jobs))
    paths = document["paths"]
    assert "/tasks/add" in paths
    submit = paths["/tasks/add"]["post"]
    assert submit["operationId"] == "add.submit"
    assert submit["x-tiffin-task"] == {"task": "add", "action": "submit"}
    assert submit["summary"] == "Submit: Add two numbers, later."
    schema = submit["requestBody"]["content"]["application/json"]["schema"]
    assert schema["required"] == ["a"]
    assert set(submit["responses"]) >= {"202", "415", "422"}
    assert paths["/tasks/add"]["get"]["operationId"] == "add.list"
    assert paths["/tasks/add/{task_id}"]["get"]["responses"]["200"]["content"]["application/json"][
        "schema"
    ] == {"$ref": "#/components/schemas/TaskStatus"}
    result = paths["/tasks/add/{task_id}/result"]["get"]["responses"]
    assert result["200"]["content"]["application/json"]["schema"] == {"type": "integer"}
    assert set(result) >= {"404", "409", "500"}
    assert set(paths["/tasks/add/{task_id}/cancel"]["post"]["responses"]) >= {"200", "202", "409"}
    assert "ping" in [op["post"].get("operationId") for op in paths.values() if "post" in op]


def test_task_concurrency_zero_takes_submissions_and_runs_nothing(tmp_path: Path) -> None:
    """``task_concurrency: 0`` (a replica that only takes submissions) queues and answers,
    and runs nothing."""

    async def main() -> None:
        async with serving(Jobs, home=tmp_path, task_concurrency=0) as (client, _):
            task_id = (await client.post("/tasks/add", json={"a": 1})).json()["id"]
            await asyncio.sleep(0.7)
            status = (await client.get(f"/tasks/add/{task_id}")).json()
            assert status["status"] == "queued"

    run(main)
