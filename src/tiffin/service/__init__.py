"""Services: classes whose typed methods become API endpoints and background tasks."""

from tiffin.service.definition import (
    Api,
    Batch,
    Dependency,
    ServiceSpec,
    Task,
    api,
    depends,
    on_shutdown,
    on_startup,
    readiness,
    service,
    spec_of,
    task,
)

__all__ = [
    "Api",
    "Batch",
    "Dependency",
    "ServiceSpec",
    "Task",
    "api",
    "depends",
    "on_shutdown",
    "on_startup",
    "readiness",
    "service",
    "spec_of",
    "task",
]
