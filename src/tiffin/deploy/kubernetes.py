"""Kubernetes manifests for a built bundle, to apply to an existing cluster.

``manifests(bundle)`` gives the objects as plain dicts, ``render`` makes them one YAML
stream for ``kubectl apply -f -``, and ``write`` puts each object in its own file::

    Deployment (apps/v1)                       the server's pods, running the bundle's image
    Service (v1)                               port 80 -> the container port named http
    HorizontalPodAutoscaler (autoscaling/v2)   only when max_replicas > min_replicas
    PodDisruptionBudget (policy/v1)            only when it can keep a pod and still let a
                                               node drain (a minimum above one replica)
    ServiceMonitor (monitoring.coreos.com/v1)  with service_monitor=True; needs the
                                               Prometheus operator's CRDs in the cluster
    PrometheusRule (monitoring.coreos.com/v1)  with service_monitor=True, when the bundle's
                                               settings hold alert rules

Values start from the bundle (``kubernetes:`` in its build spec, its ``envs`` and its
server settings) and ``KubernetesOptions.from_bundle`` overrides what the caller passes;
``KubernetesOptions`` and the checks its values pass are in
``tiffin.deploy.kubernetes_options``, and importable from here too.

How the manifests fit the server (``tiffin.server``):

- **Probes.** ``startupProbe`` and ``readinessProbe`` ask ``/readyz``, which answers 200
  once the service's ``__init__`` and startup hooks have run; the startup probe gives a
  pod ``startup_timeout`` seconds (loading a model can be slow) before it is restarted,
  and holds the other probes back until then. ``livenessProbe`` asks ``/livez``, which
  needs only a responsive event loop. Neither path needs an API key.
- **Stopping.** On SIGTERM the server closes its listening socket at once and lets the
  requests in flight finish for up to ``grace_period`` seconds. The kubelet sends SIGTERM
  while the pod is being taken out of the Service's endpoints, and proxies hear of that
  a few seconds later: requests sent in those seconds would be refused. So a ``preStop``
  hook first sleeps ``ENDPOINT_DRAIN_SECONDS``, and ``terminationGracePeriodSeconds`` is
  that pause + ``grace_period`` + the margin the supervisor gives a worker before killing
  it (``GRACE_MARGIN``): Kubernetes never kills a server that is still stopping cleanly.
- **Security.** The image runs the server as uid ``USER_ID``; the pod runs as that
  user, cannot gain privileges, drops every capability, uses the runtime's default
  seccomp profile, gets no service-account token (the server never calls the Kubernetes
  API), and has a read-only root filesystem. The server writes only its Prometheus
  multiprocess files, in the temporary directory, so ``/tmp`` is an ``emptyDir``. A
  service that writes elsewhere (a framework's cache under ``$HOME``) can be pointed
  below ``/tmp`` with an ``env`` entry, or run with ``read_only_root_filesystem=False``.
- **Metrics.** The pod template carries the ``prometheus.io/scrape``, ``/port`` and
  ``/path`` annotations that annotation-based Prometheus scrape configs read; ``/metrics``
  on any worker reports the sum over the pod's workers.
- **Alerts.** The alert rules in the bundle's settings (``alerts``) run in each pod's
  server, over that pod's metrics; the PrometheusRule holds the same rules as PromQL over
  tiffin's metrics (``tiffin.observability.alerts.prometheus_rule``), which Prometheus
  evaluates over every pod together. Its expressions select series by ``job``, the
  Service's name, which is what the ServiceMonitor names its targets (and by
  ``namespace`` when one is given): so it comes with the ServiceMonitor, and with no
  rules there is none.

Example:
    bundle = BundleStore.default().get("iris:latest")
    options = KubernetesOptions.from_bundle(bundle, max_replicas=5, namespace="ml")
    print(render(manifests(bundle, options)))
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import secrets
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from tiffin import config
from tiffin.bundles.bundle import Bundle
from tiffin.deploy.dockerfile import USER_ID, grpc_port
from tiffin.deploy.kubernetes_options import KubernetesOptions, object_name
from tiffin.exceptions import InvalidArgument
from tiffin.observability.alerts import prometheus_rule
from tiffin.server.supervisor import GRACE_MARGIN

__all__ = [
    "CONTAINER",
    "ENDPOINT_DRAIN_SECONDS",
    "SERVICE_PORT",
    "KubernetesOptions",
    "file_name",
    "manifests",
    "object_name",
    "render",
    "stale",
    "write",
]

ENDPOINT_DRAIN_SECONDS = 5
"""Seconds the preStop hook waits, so that proxies stop sending to a pod before it stops."""
SERVICE_PORT = 80
"""The Service's port: clients in the cluster call ``http://NAME.NAMESPACE/``."""
CONTAINER = "server"
"""The container's name (``kubectl logs deploy/NAME -c server``)."""
_MANAGER = "tiffin"

_NAME = "app.kubernetes.io/name"
_INSTANCE = "app.kubernetes.io/instance"
_VERSION = "app.kubernetes.io/version"
_MANAGED_BY = "app.kubernetes.io/managed-by"

# how often a probe runs, how long one may take, and how many misses in a row count
_STARTUP_PERIOD = 5
_STARTUP = {"periodSeconds": _STARTUP_PERIOD, "timeoutSeconds": 3}
_READINESS = {"periodSeconds": 5, "timeoutSeconds": 3, "failureThreshold": 3}
_LIVENESS = {"periodSeconds": 10, "timeoutSeconds": 5, "failureThreshold": 3}

_FILES = {
    "Deployment": "deployment.yaml",
    "Service": "service.yaml",
    "HorizontalPodAutoscaler": "hpa.yaml",
    "PodDisruptionBudget": "pdb.yaml",
    "ServiceMonitor": "servicemonitor.yaml",
    "PrometheusRule": "prometheusrule.yaml",
}


def _label_value(text: str) -> str:
    # at most 63 characters, starting and ending with a letter or digit
    return re.sub(r"^[^a-zA-Z0-9]+|[^a-zA-Z0-9]+$", "", text[:63])


def _environment(bundle: Bundle, options: KubernetesOptions) -> dict[str, str]:
    """The container's environment: tiffin's defaults, the bundle's ``envs``, the
    options' ``env``, and the port last, which nothing overrides."""
    return {
        "TIFFIN_PORT": str(options.port),
        "TIFFIN_HOST": "0.0.0.0",  # noqa: S104 - reachable by probes and the Service
        "TIFFIN_LOG_FORMAT": "json",
        **bundle.info.envs,
        **options.env,
    } | {"TIFFIN_PORT": str(options.port)}


def _pod(bundle: Bundle, options: KubernetesOptions) -> dict[str, Any]:
    env = _environment(bundle, options)
    # the settings the server in the container resolves: the bundle's, under its TIFFIN_*
    settings = config.load(code=bundle.info.settings, environ=env)
    grace = settings.grace_period
    ports = [{"name": "http", "containerPort": options.port, "protocol": "TCP"}]
    grpc = grpc_port(settings.model_dump())
    if grpc is not None:
        ports.append({"name": "grpc", "containerPort": grpc, "protocol": "TCP"})
    limits = {"memory": options.memory_limit or options.memory}
    if options.cpu_limit is not None:
        limits = {"cpu": options.cpu_limit, **limits}
    startup_failures = math.ceil(options.startup_timeout / _STARTUP_PERIOD)
    container = {
        "name": CONTAINER,
        "image": options.image,
        "ports": ports,
        "env": [{"name": key, "value": value} for key, value in env.items()],
        "resources": {
            "requests": {"cpu": options.cpu, "memory": options.memory},
            "limits": limits,
        },
        "startupProbe": _probe("/readyz", {**_STARTUP, "failureThreshold": startup_failures}),
        "readinessProbe": _probe("/readyz", _READINESS),
        "livenessProbe": _probe("/livez", _LIVENESS),
        "lifecycle": {"preStop": {"exec": {"command": ["sleep", str(ENDPOINT_DRAIN_SECONDS)]}}},
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": options.read_only_root_filesystem,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],  # noqa: S108 - an emptyDir
    }
    return {
        "automountServiceAccountToken": False,
        "terminationGracePeriodSeconds": math.ceil(ENDPOINT_DRAIN_SECONDS + grace + GRACE_MARGIN),
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": USER_ID,
            "runAsGroup": USER_ID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": [{"name": "tmp", "emptyDir": {}}],
    }


def _probe(path: str, timing: Mapping[str, int]) -> dict[str, Any]:
    return {"httpGet": {"path": path, "port": "http"}, **timing}


def manifests(bundle: Bundle, options: KubernetesOptions | None = None) -> list[dict[str, Any]]:
    """The Kubernetes objects that run ``bundle``: Deployment, Service, and when the
    options call for them HorizontalPodAutoscaler, PodDisruptionBudget, ServiceMonitor,
    PrometheusRule (see the module docstring for what each holds and why).

    Args:
        bundle: a built bundle.
        options: the values to use (default: ``KubernetesOptions.from_bundle(bundle)``).

    Raises:
        InvalidArgument: the bundle's spec holds a value that is not valid.
        ConfigError: the container's environment holds a bad server setting.

    Example:
        objects = manifests(bundle, KubernetesOptions.from_bundle(bundle, replicas=3))
        [o["kind"] for o in objects]  # ['Deployment', 'Service', 'PodDisruptionBudget']
    """
    if options is None:
        options = KubernetesOptions.from_bundle(bundle)
    info = bundle.info
    selector = {_NAME: _label_value(info.name), _INSTANCE: options.name}
    labels = {**selector, _VERSION: _label_value(info.version), _MANAGED_BY: _MANAGER}
    labels = {key: value for key, value in labels.items() if value}

    def make(api_version: str, kind: str, spec: dict[str, Any]) -> dict[str, Any]:
        metadata: dict[str, Any] = {"name": options.name}
        if options.namespace is not None:
            metadata["namespace"] = options.namespace
        metadata["labels"] = dict(labels)
        return {"apiVersion": api_version, "kind": kind, "metadata": metadata, "spec": spec}

    low, high = options.replica_range
    deployment: dict[str, Any] = {} if options.autoscaled else {"replicas": low}
    deployment |= {
        "selector": {"matchLabels": dict(selector)},
        # no pod stops before its replacement is ready: a slow model load costs no capacity
        "strategy": {
            "type": "RollingUpdate",
            "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 0},
        },
        "template": {
            "metadata": {
                "labels": dict(labels),
                "annotations": {
                    "prometheus.io/scrape": "true",
                    "prometheus.io/port": str(options.port),
                    "prometheus.io/path": "/metrics",
                },
            },
            "spec": _pod(bundle, options),
        },
    }
    ports: list[dict[str, Any]] = [
        {"name": "http", "port": SERVICE_PORT, "targetPort": "http", "protocol": "TCP"}
    ]
    for port in deployment["template"]["spec"]["containers"][0]["ports"][1:]:  # gRPC
        ports.append(
            {
                "name": "grpc",
                "port": port["containerPort"],
                "targetPort": "grpc",
                "protocol": "TCP",
                "appProtocol": "grpc",
            }
        )
    objects = [
        make("apps/v1", "Deployment", deployment),
        make(
            "v1",
            "Service",
            {"type": options.service_type, "selector": dict(selector), "ports": ports},
        ),
    ]
    if options.autoscaled:
        cpu = {"type": "Utilization", "averageUtilization": options.target_cpu}
        hpa = {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": options.name},
            "minReplicas": low,
            "maxReplicas": high,
            "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": cpu}}],
        }
        objects.append(make("autoscaling/v2", "HorizontalPodAutoscaler", hpa))
    if options.pdb_min_available > 0:
        pdb = {
            "minAvailable": options.pdb_min_available,
            "selector": {"matchLabels": dict(selector)},
        }
        objects.append(make("policy/v1", "PodDisruptionBudget", pdb))
    if options.service_monitor:
        monitor = {
            "selector": {"matchLabels": dict(selector)},
            "endpoints": [{"port": "http", "path": "/metrics"}],
        }
        objects.append(make("monitoring.coreos.com/v1", "ServiceMonitor", monitor))
        alerts = config.load(code=info.settings, environ=_environment(bundle, options)).alerts
        if alerts:
            matchers = {"job": options.name}
            if options.namespace is not None:
                matchers["namespace"] = options.namespace
            group = {
                "name": f"{options.name}.tiffin",
                "rules": [prometheus_rule(rule, matchers) for rule in alerts],
            }
            objects.append(make("monitoring.coreos.com/v1", "PrometheusRule", {"groups": [group]}))
    return objects


class _Dumper(yaml.SafeDumper):
    """Writes a value met twice in full, never as a YAML alias (``&id001``/``*id001``),
    which some tools that read manifests do not resolve."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def render(objects: Sequence[Mapping[str, Any]]) -> str:
    """One YAML stream, each object a document starting with ``---``, keys in the order
    the objects hold them: equal objects always render to equal text.

    Example:
        subprocess.run(["kubectl", "apply", "-f", "-"], input=render(objects), text=True)
    """
    return "".join(_document(obj) for obj in objects)


def _document(obj: Mapping[str, Any]) -> str:
    text: str = yaml.dump(
        dict(obj),
        Dumper=_Dumper,
        sort_keys=False,
        allow_unicode=True,
        explicit_start=True,
        width=1 << 16,
    )
    return text


def file_name(obj: Mapping[str, Any]) -> str:
    """The file ``write`` puts an object in: ``deployment.yaml``, ``service.yaml``,
    ``hpa.yaml``, ``pdb.yaml``, ``servicemonitor.yaml``, ``prometheusrule.yaml`` (another
    kind: its name, lowercase)."""
    kind = str(obj["kind"])
    return _FILES.get(kind, f"{kind.lower()}.yaml")


def _names(objects: Sequence[Mapping[str, Any]]) -> list[str]:
    names = [file_name(obj) for obj in objects]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise InvalidArgument(
            f"Two objects would be written to {', '.join(repeated)}. Write objects of one "
            "kind to different directories, or render them as one stream with render().",
            detail={"files": repeated},
        )
    return names


def stale(objects: Sequence[Mapping[str, Any]], directory: Path | str) -> list[Path]:
    """Files in ``directory`` that an earlier ``write`` made for these objects' instance
    and that this set no longer has (an ``hpa.yaml`` once autoscaling is off): ``write``
    removes them, so ``kubectl apply -f DIRECTORY`` never applies an object left over."""
    directory = Path(directory)
    wanted = set(_names(objects))
    instances = {obj["metadata"]["labels"].get(_INSTANCE) for obj in objects} - {None}
    found = []
    for name in sorted(set(_FILES.values()) - wanted):
        path = directory / name
        try:
            old = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            continue
        labels = old.get("metadata", {}).get("labels", {}) if isinstance(old, dict) else {}
        if (
            isinstance(labels, dict)
            and labels.get(_MANAGED_BY) == _MANAGER
            and labels.get(_INSTANCE) in instances
        ):
            found.append(path)
    return found


def write(objects: Sequence[Mapping[str, Any]], directory: Path | str) -> list[Path]:
    """Write each object to its own file in ``directory`` (made if missing), named by
    ``file_name``, and remove the files ``stale`` finds.

    Every file is written under a temporary name first and renamed into place once all
    of them are written: an error leaves the directory as it was.

    Returns:
        The files written, in the order of ``objects``.

    Example:
        write(manifests(bundle), "k8s/")  # [PosixPath('k8s/deployment.yaml'), ...]
    """
    directory = Path(directory)
    names = _names(objects)
    old = stale(objects, directory)
    directory.mkdir(parents=True, exist_ok=True)
    staged: list[tuple[Path, Path]] = []
    try:
        for name, obj in zip(names, objects, strict=True):
            temporary = directory / f".{name}.{secrets.token_hex(4)}.tmp"
            staged.append((temporary, directory / name))
            # a new file with the permissions of any other the user makes (umask applies)
            with open(temporary, "x", encoding="utf-8") as stream:
                stream.write(_document(obj))
    except BaseException:
        for temporary, _ in staged:
            temporary.unlink(missing_ok=True)
        raise
    for temporary, target in staged:
        os.replace(temporary, target)
    for path in old:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    return [target for _, target in staged]
