"""A service's life in one worker: create it (with its dependencies), run its hooks, ask
whether it is ready, and stop it."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from typing import Any

from tiffin.exceptions import ServiceDefinitionError
from tiffin.service import ServiceSpec, spec_of

__all__ = ["ServiceRuntime"]


async def _call(method: Callable[[], Any]) -> Any:
    if inspect.iscoroutinefunction(method):
        return await method()
    return await asyncio.to_thread(method)


class ServiceRuntime:
    """Creates and runs one service instance and, first, the services it depends on.

    Args:
        spec: the service.
        remote: makes the client for a dependency given by URL.
    """

    def __init__(
        self,
        spec: ServiceSpec,
        *,
        remote: Callable[[str], Any],
        _chain: tuple[type, ...] = (),
    ) -> None:
        if spec.cls in _chain:
            cycle = " -> ".join(c.__name__ for c in (*_chain, spec.cls))
            raise ServiceDefinitionError(
                f"Services depend on each other in a cycle: {cycle}. Break the cycle."
            )
        self.spec = spec
        self._remote = remote
        self._chain = (*_chain, spec.cls)
        self.instance: Any = None
        self.children: list[ServiceRuntime] = []
        self.clients: list[Any] = []
        self.started = False

    async def start(self) -> Any:
        """Create the instance (``__init__`` runs in a thread: it may load models) and run
        its ``on_startup`` hooks. Returns the instance."""
        resolved: dict[str, Any] = {}
        for attribute, dependency in self.spec.dependencies.items():
            if isinstance(dependency.target, str):
                client = self._remote(dependency.target)
                self.clients.append(client)
                resolved[attribute] = client
            else:
                child = ServiceRuntime(
                    spec_of(dependency.target), remote=self._remote, _chain=self._chain
                )
                resolved[attribute] = await child.start()
                self.children.append(child)
        cls: Any = self.spec.cls
        instance = cls.__new__(cls)
        instance.__dict__.update(resolved)
        await asyncio.to_thread(instance.__init__)
        for name in self.spec.hooks.get("on_startup", []):
            await _call(getattr(instance, name))
        self.instance = instance
        self.started = True
        return instance

    async def ready(self) -> bool:
        """Whether this service and every in-process dependency is started and ready."""
        if not self.started:
            return False
        for child in self.children:
            if not await child.ready():
                return False
        for name in self.spec.hooks.get("readiness", []):
            if not await _call(getattr(self.instance, name)):
                return False
        return True

    async def stop(self) -> None:
        """Run ``on_shutdown`` hooks, then stop the dependencies, in reverse order."""
        if self.started:
            self.started = False
            for name in reversed(self.spec.hooks.get("on_shutdown", [])):
                await _call(getattr(self.instance, name))
        for child in reversed(self.children):
            await child.stop()
        for client in self.clients:
            closed = client.close()
            if inspect.isawaitable(closed):
                await closed
        self.clients.clear()
