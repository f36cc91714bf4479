"""Services: classes whose typed methods become API endpoints."""

from tiffin.service.definition import (
    Api,
    Batch,
    Dependency,
    ServiceSpec,
    api,
    depends,
    on_shutdown,
    on_startup,
    readiness,
    service,
    spec_of,
)

__all__ = [
    "Api",
    "Batch",
    "Dependency",
    "ServiceSpec",
    "api",
    "depends",
    "on_shutdown",
    "on_startup",
    "readiness",
    "service",
    "spec_of",
]
