"""The values Kubernetes manifests are made from, and the checks they pass.

``KubernetesOptions`` holds every value ``tiffin.deploy.kubernetes`` writes into the
manifests: names, image and port, the pod count and autoscaling range, resources, the
Service type and environment. ``KubernetesOptions.from_bundle`` starts from the bundle
(``kubernetes:`` in its build spec, its ``envs`` and its server settings) and lays the
caller's values over it.

Every value is checked the moment the options are made, before any manifest exists, so
``kubectl apply`` never meets one the API server would refuse. An error names where the
value came from, the command-line option (``--cpu 'lots' is not a Kubernetes
quantity...``) or the bundle's spec (``kubernetes.cpu 'lots' of bundle 'iris:v1'...``),
and says how to fix it there. The checks: object names and namespaces are DNS labels,
replica counts and ranges are consistent, CPU and memory are Kubernetes quantities with
limits at or above requests, environment variable names are valid, and ``TIFFIN_PORT``
agrees with the port.

Example:
    options = KubernetesOptions.from_bundle(bundle, cpu="2", memory="4Gi", max_replicas=8)
    options.replica_range   # (1, 8)
    options.autoscaled      # True
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, field, fields
from decimal import Decimal, DecimalException
from typing import Any

from tiffin.bundles.bundle import Bundle
from tiffin.deploy.dockerfile import default_image, server_port
from tiffin.exceptions import InvalidArgument

__all__ = ["KubernetesOptions", "object_name"]

_SERVICE_TYPES = ("ClusterIP", "NodePort", "LoadBalancer")
_OBJECT_NAME = re.compile(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?")  # RFC 1035 label, as Services need
_NAMESPACE = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")  # RFC 1123 label
_ENV_NAME = re.compile(r"[-._a-zA-Z][-._a-zA-Z0-9]*")
_QUANTITY = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(Ki|Mi|Gi|Ti|Pi|Ei|m|k|M|G|T|P|E|[eE][+-]?\d+)?")
_MULTIPLIERS = {
    "": Decimal(1),
    "m": Decimal("0.001"),
    **{suffix: Decimal(1000) ** (i + 1) for i, suffix in enumerate("kMGTPE")},
    **{suffix + "i": Decimal(1024) ** (i + 1) for i, suffix in enumerate("KMGTPE")},
}


def object_name(bundle_name: str) -> str:
    """A bundle name made a valid name for every object written: an RFC 1035 label (as a
    Service's name must be), lowercase letters, digits and '-', starting with a letter,
    at most 63 characters.

    Example:
        object_name("iris_v2.small")  # 'iris-v2-small'
        object_name("3d-unet")        # 'tiffin-3d-unet'
    """
    text = re.sub(r"[^a-z0-9]+", "-", bundle_name.lower()).strip("-")
    if not text[:1].isalpha():
        text = f"tiffin-{text}".rstrip("-")
    return text[:63].rstrip("-")


def _quantity(text: object) -> Decimal | None:
    """The amount a Kubernetes quantity stands for (``'1Gi'`` -> 1073741824), or None."""
    match = _QUANTITY.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        return None
    number, suffix = Decimal(match.group(1)), match.group(2) or ""
    try:
        if suffix[:1] in ("e", "E"):
            return number.scaleb(int(suffix[1:]))
        return number * _MULTIPLIERS[suffix]
    except DecimalException:  # an exponent past what any quantity holds
        return None


@dataclass(frozen=True, kw_only=True)
class KubernetesOptions:
    """The effective values the manifests are made from.

    Build it with ``from_bundle``, which starts from the bundle's ``kubernetes:`` spec and
    server settings. Values are checked when the options are made; an error names the
    option that set the value (written as on the command line, ``--cpu`` for ``cpu``), or
    the bundle when the value came from its spec.

    Attributes:
        name: the name of every object, an RFC 1035 label (``object_name`` of the
            bundle's name by default).
        image: the image the Deployment runs (by default ``name:version``, lowercase, the
            tag ``tiffin containerize`` gives).
        port: the port the server listens on in the container (by default the one the
            image exposes: the bundle's ``port`` setting, else 3000).
        namespace: written into every object; None leaves it to kubectl's context.
        replicas, min_replicas, max_replicas: the pod count runs from ``min_replicas``
            (default ``replicas``) to ``max_replicas`` (default ``min_replicas``). Equal:
            that many pods and no autoscaler. Apart: a HorizontalPodAutoscaler keeps the
            count in range, and the Deployment leaves ``replicas`` out, so re-applying
            the manifests does not reset the count the autoscaler chose.
        target_cpu: average CPU use, in percent of the request, the autoscaler aims at.
        cpu, memory: the container's requests. Limits: ``cpu_limit`` (None: no CPU
            limit, so a busy pod is never throttled) and ``memory_limit`` (None: ``memory``).
        min_available: pods the PodDisruptionBudget keeps during voluntary disruptions,
            lowered to ``min_replicas - 1`` so that a node can always be drained; with
            nothing left to keep (one replica) no budget is written.
        service_type: ``ClusterIP``, ``NodePort`` or ``LoadBalancer``.
        env: the container's environment, on top of the bundle's ``envs``.
        service_monitor: also write a Prometheus operator ServiceMonitor.
        startup_timeout: seconds a new pod may take to become ready before a restart.
        read_only_root_filesystem: mount the image read-only (``/tmp`` stays writable).
    """

    name: str
    image: str
    port: int = 3000
    namespace: str | None = None
    replicas: int = 1
    min_replicas: int | None = None
    max_replicas: int | None = None
    target_cpu: int = 70
    cpu: str = "500m"
    memory: str = "512Mi"
    cpu_limit: str | None = None
    memory_limit: str | None = None
    min_available: int = 1
    service_type: str = "ClusterIP"
    env: Mapping[str, str] = field(default_factory=dict)
    service_monitor: bool = False
    startup_timeout: int = 300
    read_only_root_filesystem: bool = True

    def __post_init__(self) -> None:
        _check({f.name: getattr(self, f.name) for f in fields(self)}, _Source.option)

    @classmethod
    def from_bundle(
        cls,
        bundle: Bundle,
        *,
        name: str | None = None,
        image: str | None = None,
        port: int | None = None,
        namespace: str | None = None,
        replicas: int | None = None,
        min_replicas: int | None = None,
        max_replicas: int | None = None,
        target_cpu: int | None = None,
        cpu: str | None = None,
        memory: str | None = None,
        cpu_limit: str | None = None,
        memory_limit: str | None = None,
        min_available: int | None = None,
        service_type: str | None = None,
        env: Mapping[str, str] | None = None,
        service_monitor: bool | None = None,
        startup_timeout: int | None = None,
        read_only_root_filesystem: bool | None = None,
    ) -> KubernetesOptions:
        """The bundle's values, each replaced by the argument of its name when that is
        not None.

        ``env`` is laid over the spec's ``env``. ``replicas`` given without
        ``min_replicas`` and ``max_replicas`` means that many pods, without the spec's
        autoscaling range. A ``TIFFIN_PORT`` in the environment gives way to the port.

        Raises:
            InvalidArgument: a value is not valid; the message names the option, or the
                bundle's spec when the value came from there.

        Example:
            KubernetesOptions.from_bundle(bundle, cpu="2", memory="4Gi", max_replicas=8)
        """
        given: dict[str, Any] = {
            "name": name,
            "image": image,
            "port": port,
            "namespace": namespace,
            "replicas": replicas,
            "min_replicas": min_replicas,
            "max_replicas": max_replicas,
            "target_cpu": target_cpu,
            "cpu": cpu,
            "memory": memory,
            "cpu_limit": cpu_limit,
            "memory_limit": memory_limit,
            "min_available": min_available,
            "service_type": service_type,
            "service_monitor": service_monitor,
            "startup_timeout": startup_timeout,
            "read_only_root_filesystem": read_only_root_filesystem,
        }
        given = {key: value for key, value in given.items() if value is not None}
        spec = bundle.info.kubernetes
        from_spec = {
            key: value
            for key, value in spec.model_dump().items()
            if key in _FIELDS and key != "env" and value is not None
        }
        values: dict[str, Any] = {
            **_DEFAULTS,
            "name": object_name(bundle.info.name),
            **from_spec,
            **given,
            "env": {**spec.env, **(env or {})},
        }
        if replicas is not None and min_replicas is None and max_replicas is None:
            # a pod count given alone means that many pods, whatever range the spec has
            values["min_replicas"] = values["max_replicas"] = None
        tag = str(bundle.tag)
        _check_env(
            bundle.info.envs,
            _Source(
                "envs", f" of bundle '{tag}'", " Fix 'envs:' in the build spec and build again."
            ),
        )
        _check_env(spec.env, _Source.spec("env", tag))
        if "image" not in values:
            values["image"] = _default_image(bundle)
        if port is None:
            values["port"] = server_port(bundle.info)
        own_port = (env or {}).get("TIFFIN_PORT")
        if own_port is not None and own_port != str(values["port"]):
            raise InvalidArgument(
                f"--env TIFFIN_PORT={own_port} disagrees with the port, {values['port']}. Set "
                "the port with --port alone: it sets TIFFIN_PORT too.",
                detail={"option": "--env", "value": own_port},
            )
        values["env"].pop("TIFFIN_PORT", None)  # the container's is the port's

        def source(key: str) -> _Source:
            if key in from_spec and key not in given:
                return _Source.spec(key, tag)
            return _Source.option(key)

        _check(values, source)
        return cls(**values)

    @property
    def replica_range(self) -> tuple[int, int]:
        """The fewest and most pods: ``min_replicas`` (default ``replicas``) and
        ``max_replicas`` (default the fewest)."""
        low = self.min_replicas if self.min_replicas is not None else self.replicas
        return low, self.max_replicas if self.max_replicas is not None else low

    @property
    def autoscaled(self) -> bool:
        """Whether a HorizontalPodAutoscaler sets the pod count."""
        low, high = self.replica_range
        return high > low

    @property
    def pdb_min_available(self) -> int:
        """``min_available``, lowered so that one pod can always be evicted."""
        return max(0, min(self.min_available, self.replica_range[0] - 1))


_FIELDS = frozenset(f.name for f in fields(KubernetesOptions))
_DEFAULTS = {f.name: f.default for f in fields(KubernetesOptions) if f.default is not MISSING}


@dataclass(frozen=True)
class _Source:
    """How an error message names a value: by the option that set it, or as the bundle's."""

    label: str
    after: str = ""
    fix: str = ""

    @classmethod
    def option(cls, key: str) -> _Source:
        return cls("--" + key.replace("_", "-"))

    @classmethod
    def spec(cls, key: str, tag: str) -> _Source:
        return cls(
            f"kubernetes.{key}",
            f" of bundle '{tag}'",
            f" Override it with --{key.replace('_', '-')}, or fix 'kubernetes: {key}:' in "
            "the build spec and build again.",
        )

    def __call__(self, value: object) -> str:
        shown = value if isinstance(value, int) else repr(value)
        return f"{self.label} {shown}{self.after}"


def _check(values: Mapping[str, Any], source: Callable[[str], _Source]) -> None:
    """Raise ``InvalidArgument`` for the first bad value, named by ``source``."""
    check = _Checker(values, source)
    check.names()
    check.counts()
    check.resources()
    _check_env(values["env"], source("env"))
    own_port = values["env"].get("TIFFIN_PORT")
    if own_port is not None and own_port != str(values["port"]):
        raise check.bad(
            "env",
            f"disagrees with the port, {values['port']}. Set the port with --port alone: "
            "it sets TIFFIN_PORT too.",
            shown=f"TIFFIN_PORT={own_port}",
        )


@dataclass(frozen=True)
class _Checker:
    values: Mapping[str, Any]
    source: Callable[[str], _Source]

    def bad(
        self, key: str, problem: str, *, shown: object = None, also: str | None = None
    ) -> InvalidArgument:
        where = self.source(key)
        fix = where.fix or (self.source(also).fix if also else "")
        value = self.values[key] if shown is None else shown
        return InvalidArgument(
            f"{where(value)} {problem}{fix}",
            detail={"option": _Source.option(key).label, "value": value},
        )

    def names(self) -> None:
        values = self.values
        if not _OBJECT_NAME.fullmatch(values["name"]):
            raise self.bad(
                "name",
                "is not a valid object name. Use at most 63 lowercase letters, digits and "
                "'-', starting with a letter and ending with a letter or digit.",
            )
        if not values["image"] or any(c.isspace() for c in values["image"]):
            raise self.bad(
                "image",
                "is not an image reference. Write it like 'registry.example.com/iris:v1'.",
            )
        if not 1 <= values["port"] <= 65535:
            raise self.bad("port", "is not a port a server can listen on. Use 1 to 65535.")
        if values["namespace"] is not None and not _NAMESPACE.fullmatch(values["namespace"]):
            raise self.bad(
                "namespace",
                "is not a valid namespace. Use at most 63 lowercase letters, digits and '-', "
                "starting and ending with a letter or digit.",
            )
        if values["service_type"] not in _SERVICE_TYPES:
            raise self.bad(
                "service_type",
                f"is not a Service type for a server. Use {', '.join(_SERVICE_TYPES)}.",
            )

    def counts(self) -> None:
        values = self.values
        for key in ("replicas", "min_replicas", "max_replicas"):
            if values[key] is not None and values[key] < 1:
                raise self.bad(key, "is too few: give 1 or more.")
        low_key = "min_replicas" if values["min_replicas"] is not None else "replicas"
        if values["max_replicas"] is not None and values["max_replicas"] < values[low_key]:
            raise self.bad(
                low_key,
                f"is above {self.source('max_replicas')(values['max_replicas'])}. Give a "
                "maximum at or above the minimum.",
                also="max_replicas",
            )
        if not 1 <= values["target_cpu"] <= 100:
            raise self.bad("target_cpu", "is not a percentage of the CPU request: give 1 to 100.")
        if values["min_available"] < 0:
            raise self.bad("min_available", "is below 0: give the pods to keep, 0 or more.")
        if values["startup_timeout"] < 1:
            raise self.bad("startup_timeout", "is too short: give 1 second or more.")

    def resources(self) -> None:
        values = self.values
        for key in ("cpu", "memory", "cpu_limit", "memory_limit"):
            text = values[key]
            if text is not None and _quantity(text) is None:
                raise self.bad(
                    key,
                    "is not a Kubernetes quantity. Write CPU in cores or millicores ('2', "
                    "'500m') and memory in bytes with a suffix ('512Mi', '1Gi').",
                )
            if key.startswith("memory") and text is not None and text.endswith("m"):
                raise self.bad(
                    key, f"means thousandths of a byte. Write mebibytes as '{text[:-1]}Mi'."
                )
        for limit, request in (("cpu_limit", "cpu"), ("memory_limit", "memory")):
            low, high = _quantity(values[request]), _quantity(values[limit])
            if low is not None and high is not None and high < low:
                raise self.bad(
                    limit,
                    f"is below the request, {self.source(request)(values[request])}. "
                    "Kubernetes refuses a limit under its request: raise the limit or lower "
                    "the request.",
                    also=request,
                )


def _check_env(env: Mapping[str, str], where: _Source) -> None:
    for key in env:
        if not _ENV_NAME.fullmatch(key):
            raise InvalidArgument(
                f"{where(key)} is not an environment variable name. Use letters, digits, "
                f"'_', '-' and '.', not starting with a digit.{where.fix}",
                detail={"option": "--env", "value": key},
            )


def _default_image(bundle: Bundle) -> str:
    try:
        return default_image(bundle.info)
    except InvalidArgument:
        raise InvalidArgument(
            f"'{bundle.info.name}:{bundle.info.version}' is not a valid image reference, so "
            f"bundle '{bundle.tag}' has no default image. Pass the image with --image.",
            detail={"option": "--image", "value": None},
        ) from None
