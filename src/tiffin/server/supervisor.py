"""The supervisor: one process that owns the listening socket and keeps N workers alive.

    tiffin serve ──> supervisor ──┬── worker 1: uvicorn + the service's app
        (binds host:port,         ├── worker 2
         owns the socket)         └── ...      every worker accepts on the same socket

- **One worker.** With ``workers: 1`` (the default) and no ``--reload``, there is no
  supervisor: the ``tiffin serve`` process imports the service, binds the socket and
  serves it itself, as a worker would. A second process would only add its memory (the
  worker touches, and so copies, most of what it would share with its parent: about
  40 MiB here) and its start-up to the server's, for one thing the process itself cannot
  do: replace itself after a crash. Whatever runs the server does that (Kubernetes, the
  container runtime's restart policy, systemd); ``workers: 2`` or more brings the
  supervisor back, with restarts in place.

- **Starting workers.** The supervisor imports the service (so a wrong reference or a
  module that fails to import is reported before anything starts) and then forks each
  worker from itself: a worker starts without a second interpreter or a second import,
  and shares the imported code's memory with the supervisor until either writes to it.
  With ``start_method: spawn``, with ``--reload`` (which must import edited code), and
  when the service's module set up a GPU context while being imported (CUDA cannot be
  used in a forked child), each worker is a fresh interpreter instead.
- **The socket.** The supervisor binds ``host:port`` (port 0: the system picks one) and
  hands the listening socket to each worker as an inherited file descriptor; the kernel
  gives each new connection to whichever worker accepts first. While a worker restarts,
  the socket stays open, so new connections wait in its backlog instead of being refused.
- **gRPC.** With ``grpc_port``, the supervisor binds that port too (port 0: the system
  picks one) without listening on it, which claims it for the server's lifetime; each
  worker then listens on the same port with ``SO_REUSEPORT`` (a gRPC server cannot take
  an inherited socket), and the kernel spreads connections over the workers.
- **Metrics.** Each worker starts with ``PROMETHEUS_MULTIPROC_DIR`` pointing at a fresh
  directory the supervisor made (and removes at exit), so ``/metrics`` on any worker
  reports the sum over all of them.
- **Restarts.** A worker that exits after it was ready is replaced at once, with a log
  line giving its exit code. A worker that fails while starting (the service's
  ``__init__`` or a startup hook raised) is not retried in a loop: if no worker has been
  ready yet the supervisor stops and raises the worker's error; later, it retries with
  growing pauses and gives up after a few failures in a row.
- **Stopping.** On SIGTERM or SIGINT the supervisor closes its copy of the socket and
  sends SIGTERM to every worker; each stops accepting, finishes the requests in flight
  (up to ``grace_period`` seconds) and exits. A worker still running ``grace_period`` plus
  a margin later is killed. A second SIGINT kills the workers at once.
- **Reload.** With ``reload=True`` one worker runs, and is replaced whenever a ``.py``
  file under the serve directory changes; if the new code fails to start, the supervisor
  logs why and waits for the next change.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import os
import signal
import socket
import sys
import tempfile
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, NoReturn

from prometheus_client.multiprocess import mark_process_dead

from tiffin import config
from tiffin.bundles.serving import find_bundle, load_bundle
from tiffin.bundles.store import BundleStore, ensure_bundle
from tiffin.config import Settings
from tiffin.exceptions import (
    ConfigError,
    InvalidArgument,
    ServiceError,
    TiffinError,
    describe,
    error_class,
)
from tiffin.models import ModelStore
from tiffin.observability.logging import configure as configure_logging
from tiffin.server.worker import WorkerOptions, run_forked, service_settings
from tiffin.server.worker import run as run_worker
from tiffin.service import ServiceSpec
from tiffin.service.loader import load_service

__all__ = ["GRACE_MARGIN", "MAX_START_FAILURES", "Supervisor", "ready_line", "serve"]

GRACE_MARGIN = 5.0
"""Seconds past ``grace_period`` a worker gets to exit before it is killed."""
MAX_START_FAILURES = 5
"""Start-up failures in a row, once the service has been up, after which the server stops."""

log = logging.getLogger("tiffin.server")


def serve(
    target: str,
    *,
    directory: Path,
    flags: Mapping[str, Any] | None = None,
    reload: bool = False,
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Serve a service until SIGTERM or SIGINT: in this process with one worker, else with
    worker processes under this one as their supervisor.

    Imports the service here first, so a wrong reference or a module that fails to
    import is reported before anything starts. Blocks; returns after a clean stop.

    Args:
        target: the service, as ``module:Class`` or ``path/to/file.py:Class``.
        directory: where the module is found and tiffin.yaml read; watched by ``reload``.
        flags: settings given on the command line (``host``, ``port``, ``workers``, ...).
        reload: restart the worker when a .py file under ``directory`` changes (one worker).
        on_ready: called with the "Serving ..." line once every worker is ready; when
            omitted, the line is logged.

    Raises:
        TiffinError: the service cannot be loaded, the address cannot be listened on, or
            the service fails to start in its workers.

    Example:
        serve("service:Iris", directory=Path.cwd(), flags={"port": 3000, "workers": 2})
    """
    collect = gc.isenabled()
    gc.disable()  # while the service starts: see tiffin.server.worker
    try:
        _serve(
            target,
            directory=directory,
            flags=dict(flags or {}),
            reload=reload,
            on_ready=on_ready,
            collect=collect,
        )
    finally:
        if collect:
            gc.enable()


def _serve(
    target: str,
    *,
    directory: Path,
    flags: dict[str, Any],
    reload: bool,
    on_ready: Callable[[str], None] | None,
    collect: bool,
) -> None:
    directory = directory.resolve()
    loaded = config.load(directory=directory, environ=os.environ, flags=flags)
    home = loaded.home
    # a bundle in the local store, else one pulled (with its models) from the remote
    bundle = find_bundle(target, directory, BundleStore(home)) or ensure_bundle(
        target, directory, loaded
    )
    if bundle is None:
        spec = load_service(target, directory)
    else:
        if reload:
            raise InvalidArgument(
                f"'{target}' is a built bundle; --reload watches source. Serve the project's "
                "source to reload on changes (tiffin serve module:Class), or build it again.",
                detail={"bundle": str(bundle.tag)},
            )
        spec = load_bundle(bundle, ModelStore(home))
        target, directory = bundle.info.service, bundle.source
    settings = service_settings(spec, directory, flags)
    configure_logging(settings)
    if reload and settings.workers != 1:
        log.info("Reloading runs one worker, not %d.", settings.workers)
        settings = settings.model_copy(update={"workers": 1})
    if settings.workers == 1 and not reload:
        with (
            _listen(settings.host, settings.port) as listener,
            _claim_grpc(settings, flags) or contextlib.nullcontext(),
        ):
            _serve_alone(
                target=target,
                name=spec.name if bundle is None else str(bundle.tag),
                bundle=None if bundle is None else (str(bundle.tag), str(home)),
                spec=spec,
                directory=directory,
                flags=flags,
                listener=listener,
                on_ready=on_ready,
                collect=collect,
            )
        return
    fork = settings.start_method == "fork" and not reload and _fork_is_safe()
    if fork:
        gc.freeze()  # the collector leaves what exists now alone, so workers share its pages
    if collect:
        gc.enable()  # for the supervisor's own loop; each worker turns it off as it starts
    listener = _listen(settings.host, settings.port)
    grpc_claim = _claim_grpc(settings, flags)
    with (
        listener,
        grpc_claim or contextlib.nullcontext(),
        tempfile.TemporaryDirectory(
            prefix="tiffin-metrics-", ignore_cleanup_errors=True
        ) as metrics_dir,
    ):
        supervisor = Supervisor(
            target=target,
            name=spec.name if bundle is None else str(bundle.tag),
            bundle=None if bundle is None else (str(bundle.tag), str(home)),
            spec=spec if fork else None,
            directory=directory,
            flags=flags,
            settings=settings,
            listener=listener,
            metrics_dir=metrics_dir,
            reload=reload,
            on_ready=on_ready,
        )
        asyncio.run(supervisor.run())


def _serve_alone(
    *,
    target: str,
    name: str,
    bundle: tuple[str, str] | None,
    spec: ServiceSpec,
    directory: Path,
    flags: Mapping[str, Any],
    listener: socket.socket,
    on_ready: Callable[[str], None] | None,
    collect: bool,
) -> None:
    """Serve with this process as the one worker (see "One worker" above)."""
    failure: dict[str, Any] = {}

    def report(**message: Any) -> None:
        if message.get("ready"):
            url = _url(listener)
            line = ready_line(name, url, 1, flags.get("grpc_port"))
            if on_ready is not None:
                on_ready(line)
            else:
                log.info(line, extra={"url": url, "workers": 1})
        elif "failed" in message:
            failure.update(message)

    options = WorkerOptions(
        target=target,
        directory=str(directory),
        listen_fd=os.dup(listener.fileno()),  # the worker closes its socket when it stops
        channel_fd=-1,
        flags=dict(flags),
        bundle=bundle,
    )
    code = run_worker(options, spec, report=report, collect=collect)
    if code != 0:
        reason = str(failure.get("failed") or "it stopped before its service was ready.")
        raise _start_failure(name, reason, str(failure.get("type") or "ServiceError"), code)
    log.info("Stopped %s.", name)


def _start_failure(
    name: str, reason: str, error_type: str, code: int, tries: int = 1
) -> TiffinError:
    """The error for a service that failed to start, of the class its worker named."""
    cls = error_class(error_type)
    again = f" ({tries} tries in a row)" if tries > 1 else ""
    return (ServiceError if cls is TiffinError else cls)(
        f"Service '{name}' failed to start{again}: {reason}",
        detail={"service": name, "exit_code": code},
    )


def ready_line(
    name: str, url: str, workers: int, grpc_port: int | None, reload: Path | None = None
) -> str:
    """The line that says the server is up: where, with how many workers, and what else."""
    line = (
        f"Serving {name} at {url} with {workers} worker{'s' if workers != 1 else ''} "
        f"(docs: {url}/docs)"
    )
    if grpc_port is not None:
        line += f", gRPC on port {grpc_port}"
    if reload is not None:
        line += f", reloading on changes to .py files in {reload}"
    return line


def _claim_grpc(settings: Settings, flags: dict[str, Any]) -> socket.socket | None:
    """Claim the gRPC port, when there is one, and put the port claimed in ``flags``."""
    if settings.grpc_port is None:
        return None
    claim = _claim(settings.host, settings.grpc_port)
    flags["grpc_port"] = claim.getsockname()[1]
    return claim


def _listen(host: str, port: int) -> socket.socket:
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        return socket.create_server((host, port), family=found[0][0], backlog=2048)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ConfigError(
            f"Cannot listen on {host}:{port}: {reason}. Stop whatever uses the port or pick "
            "another with --port, and check --host names an address of this machine.",
            detail={"host": host, "port": port, "problem": reason},
        ) from None


def _claim(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` with ``SO_REUSEPORT`` and not listening: the port
    is taken for other programs, and open to the workers' gRPC servers."""
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        sock = socket.socket(found[0][0], socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(found[0][4])
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ConfigError(
            f"Cannot serve gRPC on {host}:{port}: {reason}. Stop whatever uses the port or "
            "pick another with --grpc-port.",
            detail={"host": host, "port": port, "problem": reason},
        ) from None
    return sock


def _fork_is_safe() -> bool:
    """Whether workers may be forked: not once this process has set up CUDA."""
    torch = sys.modules.get("torch")
    try:
        return torch is None or not torch.cuda.is_initialized()
    except Exception:  # a torch without CUDA support, or a broken one
        return True


def _url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _how(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


async def _first(*waits: Awaitable[Any], timeout: float | None = None) -> None:
    """Wait until one of ``waits`` finishes (or ``timeout`` passes); cancel the rest."""
    tasks = [asyncio.ensure_future(w) for w in waits]
    try:
        await asyncio.wait(tasks, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()


class _Forked:
    """A worker forked from this process, waited for through a pidfd: no thread and no
    SIGCHLD handler."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.pidfd = os.pidfd_open(pid)
        self._loop = asyncio.get_running_loop()
        self._exit: asyncio.Future[int] = self._loop.create_future()
        self._loop.add_reader(self.pidfd, self._reap)

    def _reap(self) -> None:
        self._loop.remove_reader(self.pidfd)
        _, status = os.waitpid(self.pid, 0)
        os.close(self.pidfd)
        self._exit.set_result(os.waitstatus_to_exitcode(status))

    def send_signal(self, sig: int) -> None:
        if not self._exit.done():  # once reaped, the pid may be someone else's
            os.kill(self.pid, sig)

    async def wait(self) -> int:
        return await asyncio.shield(self._exit)


class _Worker:
    """One worker process and what it has said over its channel."""

    def __init__(
        self, process: asyncio.subprocess.Process | _Forked, channel: socket.socket
    ) -> None:
        self.process = process
        self.pid = process.pid
        self.ready = False
        self.retiring = False  # stopped on purpose, to be replaced (reload)
        self.error: str | None = None
        self.error_type = "ServiceError"
        self.generation = 0
        self.channel = channel
        self._listening: asyncio.Task[None] | None = None

    def listen(self, on_message: Callable[[_Worker, dict[str, Any]], None]) -> None:
        async def read() -> None:
            reader, writer = await asyncio.open_connection(sock=self.channel)
            try:
                async for line in reader:
                    with contextlib.suppress(ValueError):
                        on_message(self, json.loads(line))
            finally:
                writer.close()

        self._listening = asyncio.create_task(read())

    def signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(sig)

    async def finished(self) -> int:
        """Wait for the process to exit, and for the last of its messages."""
        code = await self.process.wait()
        if self._listening is not None:
            with contextlib.suppress(TimeoutError, OSError):
                await asyncio.wait_for(self._listening, 1.0)
        self.channel.close()
        return code


class Supervisor:
    """Keeps ``settings.workers`` workers serving one service; see the module docstring.

    Args:
        target: the service reference each worker imports.
        name: the service's name, for messages.
        spec: the imported service, to fork workers from; None starts each worker as a
            fresh interpreter that imports ``target`` itself.
        bundle: the bundle's tag and tiffin home, when serving a bundle: a fresh worker
            loads it (and pins its models) instead of importing ``target``.
        directory: the serve directory.
        flags: settings given on the command line, passed on to the workers.
        settings: the resolved settings (host, workers, grace period, logging).
        listener: the bound, listening socket.
        metrics_dir: the directory for the workers' metrics files.
        reload: replace the worker when a .py file under ``directory`` changes.
        on_ready: called with the "Serving ..." line once every worker is ready.
    """

    def __init__(
        self,
        *,
        target: str,
        name: str,
        spec: ServiceSpec | None = None,
        bundle: tuple[str, str] | None = None,
        directory: Path,
        flags: Mapping[str, Any],
        settings: Settings,
        listener: socket.socket,
        metrics_dir: str,
        reload: bool = False,
        on_ready: Callable[[str], None] | None = None,
    ) -> None:
        self.target = target
        self.name = name
        self.spec = spec
        self.bundle = bundle
        self.directory = directory
        self.flags = dict(flags)
        self.settings = settings
        self.listener = listener
        self.metrics_dir = metrics_dir
        self.reload = reload
        self.on_ready = on_ready
        self.url = _url(listener)
        self.workers: list[_Worker | None] = [None] * settings.workers
        self._listen_fd = listener.fileno()
        self._env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": metrics_dir}
        if reload:
            # bytecode cached from a file edited twice within a second could be stale
            self._env["PYTHONDONTWRITEBYTECODE"] = "1"
        self._stopping = asyncio.Event()
        self._failure: TiffinError | None = None
        self._announced = False
        self._generation = 0  # bumped by every file change when reloading
        self._changed = asyncio.Event()

    async def run(self) -> None:
        """Start the workers and keep them running until a stop signal or a failure;
        raises the failure."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal, sig)
        try:
            slots = [asyncio.create_task(self._keep(i)) for i in range(len(self.workers))]
            watcher = asyncio.create_task(self._watch()) if self.reload else None
            await self._stopping.wait()
            await self._stop(slots)
            if watcher is not None:
                await watcher
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
        if self._failure is not None:
            raise self._failure
        log.info("Stopped %s.", self.name)

    # -- workers -----------------------------------------------------------------

    async def _spawn(self) -> _Worker:
        ours, theirs = socket.socketpair()
        options = WorkerOptions(
            target=self.target,
            directory=str(self.directory),
            listen_fd=self._listen_fd,
            channel_fd=theirs.fileno(),
            flags=self.flags,
            bundle=self.bundle,
        )
        try:
            process: asyncio.subprocess.Process | _Forked
            if self.spec is not None:
                process = self._fork(options, ours, theirs)
            else:
                process = await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    "tiffin.server.worker",
                    options.to_argument(),
                    pass_fds=(self._listen_fd, theirs.fileno()),
                    env=self._env,
                    stdin=asyncio.subprocess.DEVNULL,
                )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        worker = _Worker(process, ours)
        worker.generation = self._generation
        worker.listen(self._on_message)
        log.debug("Started worker %d.", worker.pid, extra={"worker": worker.pid})
        return worker

    def _fork(self, options: WorkerOptions, ours: socket.socket, theirs: socket.socket) -> _Forked:
        pid = os.fork()
        if pid == 0:
            self._become_worker(options, ours, theirs)
        return _Forked(pid)

    def _become_worker(
        self, options: WorkerOptions, ours: socket.socket, theirs: socket.socket
    ) -> NoReturn:
        assert self.spec is not None
        # The child keeps only the listening socket and its own end of its channel: a
        # supervisor's end left open here would hide the supervisor's exit from a worker.
        theirs.detach()
        held = [ours, *(w.channel for w in self.workers if w is not None)]
        for sock in held:
            with contextlib.suppress(OSError):
                os.close(sock.detach())
        for worker in self.workers:
            if worker is not None and isinstance(worker.process, _Forked):
                with contextlib.suppress(OSError):
                    os.close(worker.process.pidfd)
        run_forked(options, self.spec, self.metrics_dir)

    async def _keep(self, slot: int) -> None:
        """Keep one worker running in ``slot`` until the server stops."""
        try:
            await self._keep_running(slot)
        except Exception as exc:  # e.g. no more processes or file descriptors
            log.exception("Keeping worker %d of %d running failed.", slot + 1, len(self.workers))
            self._fail(
                TiffinError(
                    f"Could not keep a worker process running: {describe(exc)}. Check the "
                    "machine's process and file limits (ulimit -u, ulimit -n).",
                )
            )

    async def _keep_running(self, slot: int) -> None:
        failures = 0
        while not self._stopping.is_set():
            worker = await self._spawn()
            self.workers[slot] = worker
            if self._stopping.is_set():  # a stop came while it was being started
                worker.signal(signal.SIGTERM)
            code = await worker.finished()
            self.workers[slot] = None
            mark_process_dead(worker.pid, self.metrics_dir)  # type: ignore[no-untyped-call]
            if self._stopping.is_set():
                return
            if worker.retiring:
                continue
            if worker.ready:
                failures = 0
                log.warning(
                    "Worker %d %s; starting a new one.",
                    worker.pid,
                    _how(code),
                    extra={"worker": worker.pid, "exit_code": code},
                )
                continue
            failures += 1
            reason = worker.error or (
                f"its worker process {_how(code)} before the service was ready. Look above for "
                "its error and fix it."
            )
            if self.reload:
                log.error("The service failed to start: %s Waiting for a file to change.", reason)
                await self._next_change(worker.generation)
                continue
            if not self._announced or failures >= MAX_START_FAILURES:
                self._fail(_start_failure(self.name, reason, worker.error_type, code, failures))
                return
            pause = min(0.5 * 2 ** (failures - 1), 10.0)
            log.error(
                "Worker %d failed to start: %s Trying again in %.1f s.",
                worker.pid,
                reason,
                pause,
                extra={"worker": worker.pid, "exit_code": code},
            )
            await _first(self._stopping.wait(), timeout=pause)

    def _on_message(self, worker: _Worker, message: dict[str, Any]) -> None:
        if message.get("ready"):
            worker.ready = True
            if self._announced:
                log.info("Worker %d is ready.", worker.pid, extra={"worker": worker.pid})
            elif all(w is not None and w.ready for w in self.workers):
                self._announced = True
                self._announce()
        elif "failed" in message:
            worker.error = str(message["failed"])
            worker.error_type = str(message.get("type") or "ServiceError")

    def _announce(self) -> None:
        count = len(self.workers)
        line = ready_line(
            self.name,
            self.url,
            count,
            self.flags.get("grpc_port"),
            self.directory if self.reload else None,
        )
        if self.on_ready is not None:
            self.on_ready(line)
        else:
            log.info(line, extra={"url": self.url, "workers": count})

    # -- stopping ----------------------------------------------------------------

    def _on_signal(self, sig: int) -> None:
        if not self._stopping.is_set():
            log.info(
                "Received %s: finishing requests in flight (at most %g s), then stopping.",
                signal.Signals(sig).name,
                self.settings.grace_period,
            )
            self._stopping.set()
        elif sig == signal.SIGINT:
            log.warning("Interrupted again: stopping the workers now.")
            for worker in self.workers:
                if worker is not None:
                    worker.signal(signal.SIGKILL)

    def _fail(self, error: TiffinError) -> None:
        if self._failure is None:
            self._failure = error
        self._stopping.set()

    async def _stop(self, slots: list[asyncio.Task[None]]) -> None:
        self.listener.close()  # no new connections from here on, once workers close theirs
        for worker in self.workers:
            if worker is not None:
                worker.signal(signal.SIGTERM)
        _, late = await asyncio.wait(slots, timeout=self.settings.grace_period + GRACE_MARGIN)
        if late:
            for worker in self.workers:
                if worker is not None:
                    log.warning(
                        "Worker %d did not stop within %g s; killing it.",
                        worker.pid,
                        self.settings.grace_period + GRACE_MARGIN,
                        extra={"worker": worker.pid},
                    )
                    worker.signal(signal.SIGKILL)
        await asyncio.gather(*slots)

    # -- reloading ---------------------------------------------------------------

    async def _watch(self) -> None:
        import watchfiles  # only when reloading

        async for changes in watchfiles.awatch(
            self.directory, watch_filter=watchfiles.PythonFilter(), stop_event=self._stopping
        ):
            names = sorted(os.path.relpath(path, self.directory) for _, path in changes)
            log.info("Changed: %s. Restarting the worker.", ", ".join(names))
            self._generation += 1
            changed, self._changed = self._changed, asyncio.Event()
            changed.set()
            for worker in self.workers:
                if worker is not None:
                    worker.retiring = True
                    worker.signal(signal.SIGTERM)

    async def _next_change(self, since: int) -> None:
        while self._generation == since and not self._stopping.is_set():
            await _first(self._changed.wait(), self._stopping.wait())
