"""One worker process of ``tiffin serve``: uvicorn serving the service's app on the
listening socket the supervisor owns.

The supervisor forks it (``run_forked``: the service is imported already) or, when it
must start from a fresh interpreter (``start_method: spawn``, ``--reload``), starts it as
``python -m tiffin.server.worker '<options as JSON>'``. Either way the worker holds two
file descriptors from the supervisor: the listening socket, and one end of a socket pair
(the *channel*). Over the channel the worker says ``{"ready": true}`` once its service has
started, or ``{"failed": ...}`` with the reason it could not; the worker reads EOF from
it when the supervisor is gone, and then stops as if sent SIGTERM, so no worker outlives
its supervisor. ``PROMETHEUS_MULTIPROC_DIR`` is in the worker's environment before it
creates any metric.

The cyclic garbage collector is off while the worker starts and back on once it is ready,
after ``gc.freeze()``: what start-up made (the service's imports, its models) lives as
long as the server, and a collection then walks only what requests allocate. With the
collector on, the quickstart's start-up ran four full collections, each walking every
object scikit-learn and its libraries had made so far (28 to 65 ms each), and together
they found 335 objects to free. Python's documentation advises the same for servers that
fork.
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
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn, cast

import uvicorn

# What uvicorn would import as the worker starts: imported with this module, it is in
# the supervisor before workers are forked, and shared with them.
import uvicorn.lifespan.on
import uvicorn.loops.uvloop
import uvicorn.protocols.http.httptools_impl

from tiffin import config
from tiffin.bundles.serving import load_bundle
from tiffin.bundles.store import BundleStore
from tiffin.config import Settings
from tiffin.exceptions import TiffinError, describe
from tiffin.models import ModelStore
from tiffin.observability import tracing
from tiffin.observability.alerts import check as check_alerts
from tiffin.observability.logging import configure as configure_logging
from tiffin.observability.metrics import use_multiprocess
from tiffin.server.app import create_app
from tiffin.service import ServiceSpec
from tiffin.service.loader import load_service, locate

__all__ = ["STARTUP_FAILED", "WorkerOptions", "main", "run", "run_forked", "service_settings"]

STARTUP_FAILED = 3
"""The exit code of a worker whose service could not start."""

_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
_UVICORN_LOG = logging.getLogger("uvicorn.error")
log = logging.getLogger("tiffin.server")


def service_settings(
    spec: ServiceSpec, directory: Path, flags: Mapping[str, Any] | None = None
) -> Settings:
    """The settings a service is served with: its ``@tiffin.service`` arguments, then
    ``directory``'s tiffin.yaml, the ``TIFFIN_*`` environment and ``flags``."""
    settings = config.load(code=spec.config, directory=directory, environ=os.environ, flags=flags)
    check_alerts(settings.alerts, spec.name, spec.apis)  # before anything starts
    return settings


@dataclass(frozen=True)
class WorkerOptions:
    """What the supervisor tells a worker, as one command-line argument.

    Args:
        target: the service reference, as given to ``tiffin serve``.
        directory: the serve directory.
        flags: settings given on the command line.
        listen_fd: the listening socket's file descriptor.
        channel_fd: the worker's end of the channel to the supervisor.
        bundle: the bundle's tag and tiffin home, when serving a built bundle.
    """

    target: str
    directory: str
    listen_fd: int
    channel_fd: int
    flags: dict[str, Any] = field(default_factory=dict)
    bundle: tuple[str, str] | None = None

    def to_argument(self) -> str:
        """The options as JSON, for the worker's command line."""
        return json.dumps(asdict(self), default=str)

    @classmethod
    def from_argument(cls, argument: str) -> WorkerOptions:
        """Read options written by ``to_argument``."""
        data = json.loads(argument)
        bundle = data.pop("bundle", None)
        return cls(**data, bundle=None if bundle is None else (bundle[0], bundle[1]))


class _Channel:
    """The worker's end of its socket pair with the supervisor."""

    def __init__(self, fd: int) -> None:
        self.sock = socket.socket(fileno=fd)

    def tell(self, **message: Any) -> None:
        with contextlib.suppress(OSError):  # the supervisor is gone: nobody to tell
            self.sock.sendall(json.dumps(message).encode() + b"\n")

    def wait_for_eof(self) -> None:
        with contextlib.suppress(OSError):
            while self.sock.recv(4096):
                pass


class _Server(uvicorn.Server):
    """uvicorn's server, reporting readiness to the supervisor and exiting quietly when
    the supervisor asks it to stop. Serving alone (``alone``), it says itself that it
    received a stop signal, as the supervisor does otherwise."""

    def __init__(
        self,
        config: uvicorn.Config,
        tell: Callable[..., None],
        stop: threading.Event,
        *,
        alone: bool = False,
        collect: bool = True,
    ) -> None:
        super().__init__(config)
        self.tell = tell
        self.stop = stop
        self.alone = alone
        self.collect = collect

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        # When the service fails to start, the app logs why and the supervisor reports it;
        # uvicorn's own lines about it would only say it again.
        quiet = _UVICORN_LOG.getEffectiveLevel() > logging.DEBUG
        if quiet:
            _UVICORN_LOG.disabled = True
        try:
            await super().startup(sockets)
        finally:
            _UVICORN_LOG.disabled = False
        if self.started:
            gc.freeze()
            if self.collect:
                gc.enable()
            self.tell(ready=True)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.alone and not self.should_exit:
            log.info(
                "Received %s: finishing requests in flight (at most %g s), then stopping.",
                signal.Signals(sig).name,
                self.config.timeout_graceful_shutdown,
            )
        elif self.alone and sig == signal.SIGINT:
            log.warning("Interrupted again: stopping now.")
        super().handle_exit(sig, frame)

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # uvicorn's version re-raises the signal after a graceful stop, which would end
        # this process with the signal's default action; a worker stopped on request
        # exits 0 instead.
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in _STOP_SIGNALS}
        if self.stop.is_set():
            self.should_exit = True
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def _failure(exc: BaseException, directory: Path) -> dict[str, str]:
    if isinstance(exc, TiffinError):
        return {"failed": f"{type(exc).__name__}: {exc.message}", "type": type(exc).__name__}
    where = locate(exc, directory)
    at = f" at {where}" if where else ""
    return {
        "failed": f"{describe(exc)}{at}. Fix the error and start it again.",
        "type": "ServiceError",
    }


def _abandon_stuck_calls(deadline: float) -> None:
    """Exit now if API calls are still running in threads after the graceful stop.

    A thread cannot be stopped, and Python waits for every one before it exits; an API
    call still running past the grace period would hold the worker until the supervisor
    kills it. Its request has been answered (or dropped) by now, so exit without it.
    """
    main_thread = threading.main_thread()
    for thread in threading.enumerate():
        if thread is not main_thread and not thread.daemon:
            thread.join(max(0.0, deadline - time.monotonic()))
    stuck = [t for t in threading.enumerate() if t is not main_thread and not t.daemon]
    if stuck:
        log.warning(
            "%d API call(s) still running after the grace period; exiting without them.",
            len(stuck),
        )
        logging.shutdown()
        os._exit(0)


def _watch_supervisor(channel: _Channel, stop: threading.Event, server: _Server) -> None:
    """Stop the worker when its supervisor is gone (its end of the channel closed)."""
    channel.wait_for_eof()
    stop.set()
    server.should_exit = True


def main(argument: str) -> int:
    """Run one worker until it is told to stop; returns the process's exit code."""
    return run(WorkerOptions.from_argument(argument))


def run_forked(options: WorkerOptions, spec: ServiceSpec, metrics_dir: str) -> NoReturn:
    """Become a worker in a child just forked from the supervisor, which has imported the
    service already; never returns.

    The child leaves the supervisor's event loop and signal handlers behind, points its
    metrics at ``metrics_dir``, and exits through ``os._exit`` whatever happens, so no
    code of the supervisor's runs twice.
    """
    code = STARTUP_FAILED
    try:
        for sig in _STOP_SIGNALS:
            signal.signal(sig, signal.SIG_DFL)
        signal.set_wakeup_fd(-1)
        asyncio.events._set_running_loop(None)
        asyncio.set_event_loop_policy(None)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.close(devnull)
        use_multiprocess(metrics_dir)
        code = run(options, spec)
    except BaseException:  # nothing may escape into the supervisor's code
        with contextlib.suppress(BaseException):
            log.exception("The worker failed.")
    finally:
        with contextlib.suppress(BaseException):
            logging.shutdown()
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def run(
    options: WorkerOptions,
    spec: ServiceSpec | None = None,
    *,
    report: Callable[..., None] | None = None,
    collect: bool | None = None,
) -> int:
    """Run one worker until it is told to stop; returns the process's exit code.

    Args:
        options: what the supervisor said.
        spec: the service, when already imported (a forked worker); else it is loaded.
        report: serving alone, without a supervisor: called with what the worker would
            tell the supervisor (``ready=True``, or ``failed=`` and ``type=``);
            ``options.channel_fd`` is not used then.
        collect: whether the garbage collector runs once the service is ready (it is off
            while it starts); when omitted, whether it is on now.
    """
    if collect is None:
        collect = gc.isenabled()
    gc.disable()
    try:
        return _run(options, spec, report, collect)
    finally:
        if collect:
            gc.enable()


def _run(
    options: WorkerOptions,
    spec: ServiceSpec | None,
    report: Callable[..., None] | None,
    collect: bool,
) -> int:
    channel: _Channel | None = None
    if report is None:
        channel = _Channel(options.channel_fd)
        report = channel.tell
    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    for sig in _STOP_SIGNALS:  # until uvicorn takes over: a stop during start-up is orderly
        signal.signal(sig, request_stop)
    directory = Path(options.directory)
    try:
        if spec is None and options.bundle is not None:
            tag, home = options.bundle
            spec = load_bundle(BundleStore(Path(home)).get(tag), ModelStore(Path(home)))
        elif spec is None:
            spec = load_service(options.target, directory)
        settings = service_settings(spec, directory, options.flags)
    except TiffinError as exc:
        report(**_failure(exc, directory))
        return STARTUP_FAILED
    configure_logging(settings)
    if stop.is_set():
        return 0
    version = options.bundle[0].partition(":")[2] if options.bundle is not None else ""
    try:  # here, after the fork: the SDK's exporters run threads of their own
        settings = tracing.configure(settings, spec.name, os.environ, version=version)
    except TiffinError as exc:
        report(**_failure(exc, directory))
        return STARTUP_FAILED
    app = create_app(spec, settings, version=version)
    server = _Server(
        uvicorn.Config(
            app,
            lifespan="on",
            access_log=False,
            log_config=None,
            # annotated int, but handed to asyncio.wait_for, which takes any number
            timeout_graceful_shutdown=cast(int, settings.grace_period),
            http="httptools",
            loop="uvloop",
            ws="none",
            server_header=False,
            interface="asgi3",
        ),
        report,
        stop,
        alone=channel is None,
        collect=collect,
    )
    if channel is not None:
        threading.Thread(
            target=_watch_supervisor,
            args=(channel, stop, server),
            name="tiffin-supervisor",
            daemon=True,
        ).start()
    listener = socket.socket(fileno=options.listen_fd)
    with contextlib.suppress(SystemExit):  # uvicorn's way of saying the startup failed
        server.run(sockets=[listener])
    tracing.flush()  # a forked worker leaves by os._exit, which runs no exit hooks
    if server.started:
        _abandon_stuck_calls(time.monotonic() + 0.5)
        return 0
    error = app.startup_error
    if error is None:
        report(failed="The worker stopped before its service was ready.", type="ServiceError")
    else:
        report(**_failure(error, directory))
    return STARTUP_FAILED


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
