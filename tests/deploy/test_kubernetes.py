"""``tiffin.deploy.kubernetes`` and ``tiffin deploy kubernetes``: manifests that a cluster
accepts (checked against the Kubernetes API schemas, strict), what they hold, and the
command's output and errors.

ServiceMonitor is a custom resource of the Prometheus operator: kubernetes-validate has
no schema for it, so its checks here are on content only.
"""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml
from click.testing import CliRunner, Result
from kubernetes_validate.utils import all_versions  # type: ignore[import-untyped]

from tiffin.bundles import Bundle, BundleInfo, BundleStore
from tiffin.cli import cli
from tiffin.deploy.container import USER_ID, default_image
from tiffin.deploy.kubernetes import (
    ENDPOINT_DRAIN_SECONDS,
    KubernetesOptions,
    manifests,
    object_name,
    render,
    stale,
    write,
)
from tiffin.exceptions import BundleNotFound, ConfigError, InvalidArgument
from tiffin.server.supervisor import GRACE_MARGIN

VERSION = "20261124-153012-482-k3x9q2ab"
OLDEST, NEWEST = all_versions()[0], kubernetes_validate.latest_version()
VALIDATOR = Path(sys.executable).with_name("kubernetes-validate")
SELECTOR = {"app.kubernetes.io/name": "iris", "app.kubernetes.io/instance": "iris"}
LABELS = {
    **SELECTOR,
    "app.kubernetes.io/version": VERSION,
    "app.kubernetes.io/managed-by": "tiffin",
}
CUSTOM: dict[str, Any] = {
    "image": "registry.example.com/ml/iris:v3",
    "namespace": "ml",
    "min_replicas": 2,
    "max_replicas": 6,
    "target_cpu": 60,
    "cpu": "2",
    "memory": "1Gi",
    "cpu_limit": "4",
    "memory_limit": "2Gi",
    "min_available": 1,
    "service_type": "LoadBalancer",
    "port": 8080,
    "env": {"MODEL_THREADS": "4"},
    "service_monitor": True,
    "startup_timeout": 600,
}


def info(**fields: Any) -> BundleInfo:
    return BundleInfo.model_validate(
        {
            "name": "iris",
            "version": VERSION,
            "created_at": datetime(2026, 11, 24, 15, 30, 12, tzinfo=UTC),
            "service": "service:Iris",
            "service_name": "Iris",
            "digest": "0" * 64,
            "python_version": "3.11.9",
            "tiffin_version": "0.1.0",
            "size": 0,
            "files": {},
            **fields,
        }
    )


def make_bundle(tmp_path: Path, **fields: Any) -> Bundle:
    """A bundle record, not in any store: what ``manifests`` reads."""
    record = info(**fields)
    return Bundle(record.tag, tmp_path / "bundle", record)


def by_kind(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {obj["kind"]: obj for obj in objects}


def container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    pod = by_kind(objects)["Deployment"]["spec"]["template"]["spec"]
    assert len(pod["containers"]) == 1
    found: dict[str, Any] = pod["containers"][0]
    return found


def env_of(objects: list[dict[str, Any]]) -> dict[str, str]:
    entries = container(objects)["env"]
    names = [entry["name"] for entry in entries]
    assert len(names) == len(set(names)), f"an env name repeats: {names}"
    return {entry["name"]: entry["value"] for entry in entries}


def validate(objects: list[dict[str, Any]], version: str) -> list[str]:
    """Validate each object against the API schemas of ``version`` in strict mode (an
    unknown field fails); returns the kinds checked."""
    checked = []
    for obj in objects:
        if obj["apiVersion"].startswith("monitoring.coreos.com/"):
            continue  # a custom resource: no schema to check it against
        kubernetes_validate.validate(obj, version, strict=True)
        checked.append(obj["kind"])
    return checked


@pytest.fixture
def stored(home: Path) -> Bundle:
    """A bundle in the store of ``home`` whose spec, settings and envs are not defaults."""
    store = BundleStore(home)
    with store.items.stage("iris", "v1") as staging:
        with staging.open("src/service.py") as out:
            out.write(b"class Iris: ...\n")
        staging.commit(
            {
                "service": "service:Iris",
                "service_name": "Iris",
                "digest": "1" * 64,
                "settings": {"port": 8000, "grace_period": 12, "workers": 2},
                "envs": {"OMP_NUM_THREADS": "1"},
                "kubernetes": {"replicas": 2, "cpu": "250m", "env": {"STAGE": "prod"}},
                "python_version": "3.11.9",
                "tiffin_version": "0.1.0",
            }
        )
    return store.get("iris:v1")


def run(home: Path, *args: str) -> Result:
    return CliRunner().invoke(
        cli, ["--home", str(home), "deploy", "kubernetes", *args], catch_exceptions=False
    )


# -- the manifests a cluster accepts ------------------------------------------------------


@pytest.mark.parametrize("version", [OLDEST, NEWEST])
def test_default_manifests_validate(tmp_path: Path, version: str) -> None:
    objects = manifests(make_bundle(tmp_path))
    assert validate(objects, version) == ["Deployment", "Service"]


@pytest.mark.parametrize("version", [OLDEST, NEWEST])
def test_customised_manifests_validate(tmp_path: Path, version: str) -> None:
    bundle = make_bundle(tmp_path, envs={"OMP_NUM_THREADS": "1"})
    objects = manifests(bundle, KubernetesOptions.from_bundle(bundle, **CUSTOM))
    assert [obj["kind"] for obj in objects] == [
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "ServiceMonitor",
    ]
    assert validate(objects, version) == [obj["kind"] for obj in objects[:4]]


@pytest.mark.parametrize("version", [OLDEST, NEWEST])
def test_a_grpc_port_is_a_container_port_and_a_service_port(tmp_path: Path, version: str) -> None:
    bundle = make_bundle(tmp_path, settings={"grpc_port": 50051})
    objects = manifests(bundle, KubernetesOptions.from_bundle(bundle, port=8080))
    assert container(objects)["ports"] == [
        {"name": "http", "containerPort": 8080, "protocol": "TCP"},
        {"name": "grpc", "containerPort": 50051, "protocol": "TCP"},
    ]
    assert by_kind(objects)["Service"]["spec"]["ports"][1] == {
        "name": "grpc",
        "port": 50051,
        "targetPort": "grpc",
        "protocol": "TCP",
        "appProtocol": "grpc",
    }
    assert validate(objects, version) == ["Deployment", "Service"]
    # set by the options' environment instead, it is exposed the same way
    env = KubernetesOptions.from_bundle(make_bundle(tmp_path), env={"TIFFIN_GRPC_PORT": "9000"})
    ports = container(manifests(make_bundle(tmp_path), env))["ports"]
    assert ports[1] == {"name": "grpc", "containerPort": 9000, "protocol": "TCP"}


def test_the_validator_catches_an_unknown_field(tmp_path: Path) -> None:
    deployment = manifests(make_bundle(tmp_path))[0]
    deployment["spec"]["template"]["spec"]["containers"][0]["probe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        validate([deployment], NEWEST)


# -- what they hold -------------------------------------------------------------------------


def test_probes_ask_the_health_endpoints_on_the_named_port(tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path)
    objects = manifests(bundle, KubernetesOptions.from_bundle(bundle, port=8080))
    server = container(objects)
    assert server["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    for probe, path in [
        ("startupProbe", "/readyz"),
        ("readinessProbe", "/readyz"),
        ("livenessProbe", "/livez"),
    ]:
        assert server[probe]["httpGet"] == {"path": path, "port": "http"}
    startup = server["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] == 300
    custom = container(manifests(bundle, KubernetesOptions.from_bundle(bundle, startup_timeout=61)))
    assert (
        custom["startupProbe"]["periodSeconds"] * custom["startupProbe"]["failureThreshold"] >= 61
    )
    assert server["livenessProbe"]["failureThreshold"] * server["livenessProbe"][
        "periodSeconds"
    ] > (server["readinessProbe"]["failureThreshold"] * server["readinessProbe"]["periodSeconds"])


@pytest.mark.parametrize(
    ("settings", "envs", "grace"),
    [
        ({}, {}, 30),
        ({"grace_period": 12}, {}, 12),
        ({"grace_period": 12.5}, {}, 12.5),
        ({"grace_period": 12}, {"TIFFIN_GRACE_PERIOD": "50"}, 50),
    ],
)
def test_termination_grace_covers_the_drain_and_the_servers_grace_period(
    tmp_path: Path, settings: dict[str, Any], envs: dict[str, str], grace: float
) -> None:
    objects = manifests(make_bundle(tmp_path, settings=settings, envs=envs))
    pod = objects[0]["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] >= ENDPOINT_DRAIN_SECONDS + grace + GRACE_MARGIN
    assert pod["terminationGracePeriodSeconds"] < ENDPOINT_DRAIN_SECONDS + grace + GRACE_MARGIN + 1
    assert pod["containers"][0]["lifecycle"] == {
        "preStop": {"exec": {"command": ["sleep", str(ENDPOINT_DRAIN_SECONDS)]}}
    }


def test_env_layers_bundle_spec_and_options(tmp_path: Path) -> None:
    bundle = make_bundle(
        tmp_path,
        envs={"OMP_NUM_THREADS": "1", "STAGE": "build", "TIFFIN_PORT": "9999"},
        kubernetes={"env": {"STAGE": "spec", "REGION": "eu"}},
    )
    options = KubernetesOptions.from_bundle(
        bundle, port=8080, env={"REGION": "us", "TIFFIN_LOG_FORMAT": "console"}
    )
    assert list(env_of(manifests(bundle, options)).items()) == [
        ("TIFFIN_PORT", "8080"),
        ("TIFFIN_HOST", "0.0.0.0"),
        ("TIFFIN_LOG_FORMAT", "console"),
        ("OMP_NUM_THREADS", "1"),
        ("STAGE", "spec"),
        ("REGION", "us"),
    ]
    assert env_of(manifests(make_bundle(tmp_path))) == {
        "TIFFIN_PORT": "3000",
        "TIFFIN_HOST": "0.0.0.0",
        "TIFFIN_LOG_FORMAT": "json",
    }


def test_the_port_is_the_one_the_image_exposes(tmp_path: Path) -> None:
    assert KubernetesOptions.from_bundle(make_bundle(tmp_path)).port == 3000
    bundle = make_bundle(
        tmp_path,
        settings={"port": 8000},
        envs={"TIFFIN_PORT": "7000"},
        kubernetes={"env": {"TIFFIN_PORT": "7500"}},
    )
    assert KubernetesOptions.from_bundle(bundle).port == 8000
    assert env_of(manifests(bundle))["TIFFIN_PORT"] == "8000"
    assert KubernetesOptions.from_bundle(bundle, port=81).port == 81
    assert KubernetesOptions.from_bundle(bundle, env={"TIFFIN_PORT": "8000"}).port == 8000
    # 0, "any free port", is no port to expose or probe
    assert KubernetesOptions.from_bundle(make_bundle(tmp_path, settings={"port": 0})).port == 3000


def test_labels_and_selectors_agree_across_objects(tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path)
    objects = by_kind(manifests(bundle, KubernetesOptions.from_bundle(bundle, **CUSTOM)))
    for obj in objects.values():
        assert obj["metadata"] == {"name": "iris", "namespace": "ml", "labels": LABELS}
    deployment = objects["Deployment"]["spec"]
    assert deployment["selector"] == {"matchLabels": SELECTOR}
    assert deployment["template"]["metadata"]["labels"] == LABELS
    assert objects["Service"]["spec"]["selector"] == SELECTOR
    assert objects["PodDisruptionBudget"]["spec"]["selector"] == {"matchLabels": SELECTOR}
    assert objects["ServiceMonitor"]["spec"]["selector"] == {"matchLabels": SELECTOR}
    assert objects["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": objects["Deployment"]["metadata"]["name"],
    }
    service_port = objects["Service"]["spec"]["ports"][0]
    assert service_port == {"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}
    assert objects["ServiceMonitor"]["spec"]["endpoints"] == [{"port": "http", "path": "/metrics"}]


def test_the_selector_leaves_the_version_out_so_an_upgrade_can_apply(tmp_path: Path) -> None:
    old = by_kind(manifests(make_bundle(tmp_path)))["Deployment"]
    new = by_kind(manifests(make_bundle(tmp_path, version="20261201-000000-000-aaaaaaaa")))
    assert new["Deployment"]["spec"]["selector"] == old["spec"]["selector"]
    assert (
        new["Deployment"]["spec"]["template"]["metadata"]["labels"]
        != (old["spec"]["template"]["metadata"]["labels"])
    )


def test_image_defaults_to_the_containerize_tag(tmp_path: Path) -> None:
    assert container(manifests(make_bundle(tmp_path)))["image"] == f"iris:{VERSION}"
    spec = make_bundle(tmp_path, kubernetes={"image": "ghcr.io/acme/iris:stable"})
    assert container(manifests(spec))["image"] == "ghcr.io/acme/iris:stable"
    options = KubernetesOptions.from_bundle(spec, image="ghcr.io/acme/iris:v2")
    assert container(manifests(spec, options))["image"] == "ghcr.io/acme/iris:v2"


def test_resources(tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path)
    assert container(manifests(bundle))["resources"] == {
        "requests": {"cpu": "500m", "memory": "512Mi"},
        "limits": {"memory": "512Mi"},
    }
    custom = manifests(bundle, KubernetesOptions.from_bundle(bundle, **CUSTOM))
    assert container(custom)["resources"] == {
        "requests": {"cpu": "2", "memory": "1Gi"},
        "limits": {"cpu": "4", "memory": "2Gi"},
    }


def test_prometheus_scrape_annotations(tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path)
    objects = manifests(bundle, KubernetesOptions.from_bundle(bundle, port=8080))
    assert objects[0]["spec"]["template"]["metadata"]["annotations"] == {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": "8080",
        "prometheus.io/path": "/metrics",
    }


def test_security_context_and_a_writable_tmp(tmp_path: Path) -> None:
    pod = manifests(make_bundle(tmp_path))[0]["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == USER_ID == 10001
    assert pod["automountServiceAccountToken"] is False
    server = pod["containers"][0]
    assert server["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    }
    assert server["volumeMounts"] == [{"name": "tmp", "mountPath": "/tmp"}]
    assert pod["volumes"] == [{"name": "tmp", "emptyDir": {}}]


@pytest.mark.parametrize(
    ("options", "replicas", "hpa"),
    [
        ({}, 1, None),
        ({"replicas": 3}, 3, None),
        ({"min_replicas": 2}, 2, None),
        ({"min_replicas": 4, "max_replicas": 4}, 4, None),
        ({"max_replicas": 5}, None, (1, 5)),
        ({"replicas": 2, "max_replicas": 5}, None, (2, 5)),
        ({"min_replicas": 3, "max_replicas": 9, "target_cpu": 55}, None, (3, 9)),
    ],
)
def test_an_autoscaler_only_for_a_range_and_then_no_replicas(
    tmp_path: Path, options: dict[str, Any], replicas: int | None, hpa: tuple[int, int] | None
) -> None:
    bundle = make_bundle(tmp_path)
    objects = by_kind(manifests(bundle, KubernetesOptions.from_bundle(bundle, **options)))
    assert objects["Deployment"]["spec"].get("replicas") == replicas
    if hpa is None:
        assert "HorizontalPodAutoscaler" not in objects
        return
    spec = objects["HorizontalPodAutoscaler"]["spec"]
    assert (spec["minReplicas"], spec["maxReplicas"]) == hpa
    assert spec["metrics"] == [
        {
            "type": "Resource",
            "resource": {
                "name": "cpu",
                "target": {
                    "type": "Utilization",
                    "averageUtilization": options.get("target_cpu", 70),
                },
            },
        }
    ]


def test_replicas_alone_replaces_the_specs_range(tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path, kubernetes={"min_replicas": 2, "max_replicas": 8})
    assert KubernetesOptions.from_bundle(bundle).autoscaled
    fixed = by_kind(manifests(bundle, KubernetesOptions.from_bundle(bundle, replicas=3)))
    assert fixed["Deployment"]["spec"]["replicas"] == 3
    assert "HorizontalPodAutoscaler" not in fixed


@pytest.mark.parametrize(
    ("options", "kept"),
    [
        ({}, None),
        ({"replicas": 1, "min_available": 5}, None),
        ({"replicas": 2}, 1),
        ({"replicas": 3, "min_available": 3}, 2),
        ({"replicas": 3, "min_available": 0}, None),
        ({"min_replicas": 4, "max_replicas": 8, "min_available": 2}, 2),
        ({"min_replicas": 1, "max_replicas": 8}, None),
    ],
)
def test_the_disruption_budget_never_blocks_every_eviction(
    tmp_path: Path, options: dict[str, Any], kept: int | None
) -> None:
    bundle = make_bundle(tmp_path)
    objects = by_kind(manifests(bundle, KubernetesOptions.from_bundle(bundle, **options)))
    if kept is None:
        assert "PodDisruptionBudget" not in objects
    else:
        assert objects["PodDisruptionBudget"]["spec"]["minAvailable"] == kept


def test_the_spec_of_the_bundle_is_the_default(tmp_path: Path) -> None:
    bundle = make_bundle(
        tmp_path,
        kubernetes={
            "namespace": "team",
            "replicas": 3,
            "cpu": "250m",
            "memory": "300Mi",
            "service_type": "NodePort",
        },
    )
    objects = by_kind(manifests(bundle))
    assert objects["Deployment"]["metadata"]["namespace"] == "team"
    assert objects["Deployment"]["spec"]["replicas"] == 3
    assert container(list(objects.values()))["resources"]["requests"] == {
        "cpu": "250m",
        "memory": "300Mi",
    }
    assert objects["Service"]["spec"]["type"] == "NodePort"
    overridden = manifests(bundle, KubernetesOptions.from_bundle(bundle, namespace="other"))
    assert overridden[0]["metadata"]["namespace"] == "other"


@pytest.mark.parametrize(
    ("bundle_name", "expected"),
    [
        ("iris", "iris"),
        ("iris_v2.small", "iris-v2-small"),
        ("3d-unet", "tiffin-3d-unet"),
        ("a__b", "a-b"),
        ("x" * 63, "x" * 63),
        ("9" * 63, ("tiffin-" + "9" * 63)[:63]),
    ],
)
def test_object_names_are_dns_safe(tmp_path: Path, bundle_name: str, expected: str) -> None:
    assert object_name(bundle_name) == expected
    objects = manifests(make_bundle(tmp_path, name=bundle_name))
    assert {obj["metadata"]["name"] for obj in objects} == {expected}
    assert validate(objects, NEWEST) == ["Deployment", "Service"]


def test_render_is_one_stable_stream_that_reads_back(tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path)
    objects = manifests(bundle, KubernetesOptions.from_bundle(bundle, **CUSTOM))
    text = render(objects)
    assert text == render(manifests(bundle, KubernetesOptions.from_bundle(bundle, **CUSTOM)))
    assert text.startswith("---\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: iris\n")
    assert text.count("---\n") == len(objects)
    assert "&id" not in text  # no YAML aliases
    assert "*id" not in text
    assert list(yaml.safe_load_all(text)) == objects


# -- writing files --------------------------------------------------------------------------


def test_write_puts_each_object_in_its_own_file(tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path)
    objects = manifests(bundle, KubernetesOptions.from_bundle(bundle, **CUSTOM))
    out = tmp_path / "out" / "k8s"
    written = write(objects, out)
    names = ["deployment.yaml", "service.yaml", "hpa.yaml", "pdb.yaml", "servicemonitor.yaml"]
    assert written == [out / name for name in names]
    assert sorted(os.listdir(out)) == sorted(names)  # no temporary file left behind
    assert [yaml.safe_load(path.read_text()) for path in written] == objects
    mode = (out / "deployment.yaml").stat().st_mode & 0o777
    umask = os.umask(0)
    os.umask(umask)
    assert mode == 0o666 & ~umask


def test_write_removes_what_an_earlier_write_made_that_is_gone_now(tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path)
    out = tmp_path / "k8s"
    write(manifests(bundle, KubernetesOptions.from_bundle(bundle, max_replicas=5)), out)
    (out / "pdb.yaml").write_text("kind: PodDisruptionBudget\nmetadata: {name: mine}\n")
    fixed = manifests(bundle)
    assert stale(fixed, out) == [out / "hpa.yaml"]
    write(fixed, out)
    assert sorted(os.listdir(out)) == ["deployment.yaml", "pdb.yaml", "service.yaml"]


def test_write_of_two_objects_of_one_kind_is_refused_and_writes_nothing(tmp_path: Path) -> None:
    objects = manifests(make_bundle(tmp_path))
    with pytest.raises(InvalidArgument, match=r"Two objects would be written to deployment\.yaml"):
        write([objects[0], objects[0]], tmp_path / "k8s")
    assert not (tmp_path / "k8s").exists()


# -- bad values -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {"cpu": "lots"},
            "--cpu 'lots' is not a Kubernetes quantity. Write CPU in cores or millicores "
            "('2', '500m') and memory in bytes with a suffix ('512Mi', '1Gi').",
        ),
        (
            {"memory": "512m"},
            "--memory '512m' means thousandths of a byte. Write mebibytes as '512Mi'.",
        ),
        (
            {"memory": "1Gi", "memory_limit": "512Mi"},
            "--memory-limit '512Mi' is below the request, --memory '1Gi'. Kubernetes refuses "
            "a limit under its request: raise the limit or lower the request.",
        ),
        (
            {"min_replicas": 5, "max_replicas": 3},
            "--min-replicas 5 is above --max-replicas 3. Give a maximum at or above the minimum.",
        ),
        (
            {"replicas": 0},
            "--replicas 0 is too few: give 1 or more.",
        ),
        (
            {"namespace": "Team_A"},
            "--namespace 'Team_A' is not a valid namespace. Use at most 63 lowercase letters, "
            "digits and '-', starting and ending with a letter or digit.",
        ),
        (
            {"name": "9lives"},
            "--name '9lives' is not a valid object name. Use at most 63 lowercase letters, "
            "digits and '-', starting with a letter and ending with a letter or digit.",
        ),
        (
            {"service_type": "ExternalName"},
            "--service-type 'ExternalName' is not a Service type for a server. Use ClusterIP, "
            "NodePort, LoadBalancer.",
        ),
        (
            {"target_cpu": 0},
            "--target-cpu 0 is not a percentage of the CPU request: give 1 to 100.",
        ),
        (
            {"port": 70000},
            "--port 70000 is not a port a server can listen on. Use 1 to 65535.",
        ),
        (
            {"env": {"1BAD": "x"}},
            "--env '1BAD' is not an environment variable name. Use letters, digits, '_', '-' "
            "and '.', not starting with a digit.",
        ),
        (
            {"port": 8080, "env": {"TIFFIN_PORT": "9090"}},
            "--env TIFFIN_PORT=9090 disagrees with the port, 8080. Set the port with --port "
            "alone: it sets TIFFIN_PORT too.",
        ),
    ],
)
def test_bad_options_name_the_option(tmp_path: Path, options: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        KubernetesOptions.from_bundle(make_bundle(tmp_path), **options)
    assert caught.value.message == message


def test_bad_values_in_the_bundle_name_the_bundle(tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path, kubernetes={"memory": "lots"})
    with pytest.raises(InvalidArgument) as caught:
        manifests(bundle)
    assert caught.value.message == (
        f"kubernetes.memory 'lots' of bundle 'iris:{VERSION}' is not a Kubernetes quantity. "
        "Write CPU in cores or millicores ('2', '500m') and memory in bytes with a suffix "
        "('512Mi', '1Gi'). Override it with --memory, or fix 'kubernetes: memory:' in the "
        "build spec and build again."
    )
    assert KubernetesOptions.from_bundle(bundle, memory="1Gi").memory == "1Gi"
    bundle = make_bundle(tmp_path, name="iris-")
    with pytest.raises(InvalidArgument) as caught:
        manifests(bundle)
    assert caught.value.message == (
        f"'iris-:{VERSION}' is not a valid image reference, so bundle 'iris-:{VERSION}' has "
        "no default image. Pass the image with --image."
    )
    assert container(manifests(bundle, KubernetesOptions.from_bundle(bundle, image="x:1")))
    bundle = make_bundle(tmp_path, envs={"TIFFIN_WORKERS": "many"})
    with pytest.raises(ConfigError, match="'workers'"):
        manifests(bundle)


def test_options_made_directly_are_checked_too() -> None:
    with pytest.raises(InvalidArgument, match=r"^--cpu-limit '1' is below the request, --cpu '2'"):
        KubernetesOptions(name="iris", image="iris:v1", cpu="2", cpu_limit="1")
    with pytest.raises(InvalidArgument, match=r"^--env 'TIFFIN_PORT=80' disagrees with the port"):
        KubernetesOptions(name="iris", image="iris:v1", env={"TIFFIN_PORT": "80"})
    options = KubernetesOptions(name="iris", image="iris:v1", cpu="1.5", cpu_limit="1500m")
    assert options.replica_range == (1, 1)


# -- the command ----------------------------------------------------------------------------


def test_cli_prints_the_yaml_of_the_manifests(home: Path, stored: Bundle) -> None:
    result = run(home, "iris:v1", "--max-replicas", "4", "--env", "A=1", "--env", "B=x=y")
    assert result.exit_code == 0, result.stderr
    objects = list(yaml.safe_load_all(result.stdout))
    options = KubernetesOptions.from_bundle(stored, max_replicas=4, env={"A": "1", "B": "x=y"})
    assert objects == manifests(stored, options)
    assert [obj["kind"] for obj in objects] == [
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
    ]
    env = env_of(objects)
    assert env["TIFFIN_PORT"] == "8000"  # the bundle's port setting
    assert (env["OMP_NUM_THREADS"], env["STAGE"], env["A"], env["B"]) == ("1", "prod", "1", "x=y")
    assert container(objects)["resources"]["requests"]["cpu"] == "250m"  # the bundle's spec
    pod = objects[0]["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] == ENDPOINT_DRAIN_SECONDS + 12 + GRACE_MARGIN
    assert run(home, "iris").stdout == render(manifests(stored))


def test_cli_writes_files_that_validate(home: Path, stored: Bundle, tmp_path: Path) -> None:
    out = tmp_path / "k8s"
    args = ["--namespace", "ml", "--cpu", "1", "--memory", "1Gi", "--cpu-limit", "2"]
    args += ["--memory-limit", "2Gi", "--min-replicas", "2", "--max-replicas", "5"]
    args += ["--target-cpu", "50", "--service-type", "NodePort", "--port", "9000"]
    args += ["--image", "registry.example.com/iris:v1", "--service-monitor", "--output", str(out)]
    result = run(home, "iris:v1", *args)
    assert result.exit_code == 0, result.stderr
    names = ["deployment.yaml", "service.yaml", "hpa.yaml", "pdb.yaml", "servicemonitor.yaml"]
    assert result.stdout == (
        "".join(f"Wrote {out / name}\n" for name in names)
        + f"Apply them with: kubectl apply -f {out}\n"
    )
    files = [str(out / name) for name in names[:-1]]
    for version in (OLDEST, NEWEST):
        checked = subprocess.run(
            [str(VALIDATOR), "--strict", "--kubernetes-version", version, *files],
            capture_output=True,
            text=True,
            check=False,
        )
        assert checked.returncode == 0, checked.stdout + checked.stderr
        assert checked.stdout.count("passed") == len(files)
    deployment = yaml.safe_load((out / "deployment.yaml").read_text())
    assert deployment["metadata"]["namespace"] == "ml"
    assert container([deployment])["image"] == "registry.example.com/iris:v1"
    hpa = yaml.safe_load((out / "hpa.yaml").read_text())
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 5)

    again = run(home, "iris:v1", "--output", str(out))
    assert again.exit_code == 0, again.stderr
    assert f"Removed {out / 'hpa.yaml'} (no longer part of the manifests)\n" in again.stdout
    assert f"Removed {out / 'servicemonitor.yaml'} (no longer part of the manifests)\n" in (
        again.stdout
    )
    assert sorted(os.listdir(out)) == ["deployment.yaml", "pdb.yaml", "service.yaml"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--env", "OMP_NUM_THREADS"],
            "--env 'OMP_NUM_THREADS' is not KEY=VALUE. Write it like --env OMP_NUM_THREADS=1.",
        ),
        (
            ["--min-replicas", "4", "--max-replicas", "2"],
            "--min-replicas 4 is above --max-replicas 2. Give a maximum at or above the minimum.",
        ),
        (
            ["--cpu", "1 core"],
            "--cpu '1 core' is not a Kubernetes quantity. Write CPU in cores or millicores "
            "('2', '500m') and memory in bytes with a suffix ('512Mi', '1Gi').",
        ),
        (
            ["--memory-limit", "1Gb"],
            "--memory-limit '1Gb' is not a Kubernetes quantity. Write CPU in cores or "
            "millicores ('2', '500m') and memory in bytes with a suffix ('512Mi', '1Gi').",
        ),
        (
            ["--service-type", "clusterip"],
            "--service-type 'clusterip' is not a Service type for a server. Use ClusterIP, "
            "NodePort, LoadBalancer.",
        ),
        (
            ["--max-replicas", "1"],
            "kubernetes.replicas 2 of bundle 'iris:v1' is above --max-replicas 1. Give a "
            "maximum at or above the minimum. Override it with --replicas, or fix "
            "'kubernetes: replicas:' in the build spec and build again.",
        ),
    ],
)
def test_cli_bad_input_is_one_line_exit_2_and_writes_nothing(
    home: Path, stored: Bundle, tmp_path: Path, args: list[str], message: str
) -> None:
    out = tmp_path / "k8s"
    result = run(home, "iris:v1", *args, "--output", str(out))
    assert result.exit_code == InvalidArgument.exit_code == 2
    assert result.stdout == ""
    assert result.stderr == f"Error: {message}\n"
    assert not out.exists()


def test_cli_unknown_bundle_exit_3(home: Path, stored: Bundle, tmp_path: Path) -> None:
    result = run(home, "iris:v9", "--output", str(tmp_path / "k8s"))
    assert result.exit_code == BundleNotFound.exit_code == 3
    assert result.stdout == ""
    assert result.stderr == (
        "Error: Bundle 'iris:v9' not found. Run 'tiffin bundles list iris' to see saved versions.\n"
    )
    assert not (tmp_path / "k8s").exists()
    result = run(home, "ghost")
    assert result.exit_code == 3
    assert result.stderr == (
        "Error: No bundle named 'ghost'. Run 'tiffin bundles list' to see saved bundles.\n"
    )


# -- a bundle built from the quickstart ---------------------------------------------------


@pytest.mark.parametrize("version", [OLDEST, NEWEST])
def test_quickstart_bundle_manifests_validate(bundle: Bundle, version: str) -> None:
    objects = manifests(bundle)
    assert validate(objects, version) == ["Deployment", "Service"]
    assert {obj["metadata"]["name"] for obj in objects} == {"quickstart"}
    assert container(objects)["image"] == default_image(bundle.info)
    assert container(objects)["image"] == f"quickstart:{bundle.tag.version}"


def test_quickstart_bundle_through_the_command(home: Path, bundle: Bundle, tmp_path: Path) -> None:
    result = run(
        home,
        "quickstart",
        "--min-replicas",
        "2",
        "--max-replicas",
        "3",
        "--output",
        str(tmp_path / "k8s"),
    )
    assert result.exit_code == 0, result.stderr
    written = sorted(os.listdir(tmp_path / "k8s"))
    assert written == ["deployment.yaml", "hpa.yaml", "pdb.yaml", "service.yaml"]
    objects = [yaml.safe_load((tmp_path / "k8s" / name).read_text()) for name in written]
    assert validate(objects, NEWEST) == [
        "Deployment",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "Service",
    ]


# -- alert rules as a PrometheusRule ------------------------------------------------------

RULES: list[dict[str, Any]] = [
    {"name": "predict-errors", "kind": "error_rate", "api": "predict", "above": 0.05,
     "window": "5m", "for": "1m"},
    {"name": "slow", "kind": "p99_latency", "above": 0.25, "window": 60, "severity": "page"},
    {"name": "drifting", "kind": "drift", "monitor": "iris", "feature": "petal_width",
     "above": 0.2, "window": "1h"},
]  # fmt: skip


def test_alert_rules_are_a_prometheus_rule_beside_the_service_monitor(tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path, settings={"alerts": RULES})
    objects = manifests(bundle, KubernetesOptions.from_bundle(bundle, **CUSTOM))
    assert [obj["kind"] for obj in objects][-2:] == ["ServiceMonitor", "PrometheusRule"]
    rule = objects[-1]
    assert rule == {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "iris", "namespace": "ml", "labels": LABELS},
        "spec": {
            "groups": [
                {
                    "name": "iris.tiffin",
                    "rules": [
                        {
                            "alert": "predict-errors",
                            "expr": 'sum(rate(tiffin_requests_total{job="iris",namespace="ml",'
                            'api="predict",status=~"5.."}[5m])) / sum(rate('
                            'tiffin_requests_total{job="iris",namespace="ml",api="predict"}'
                            "[5m])) > 0.05",
                            "for": "1m",
                            "labels": {"severity": "warning"},
                            "annotations": {
                                "summary": "Error rate of API 'predict' above 5% over 5m"
                            },
                        },
                        {
                            "alert": "slow",
                            "expr": "histogram_quantile(0.99, sum by (le) (rate("
                            'tiffin_request_duration_seconds_bucket{job="iris",namespace="ml"}'
                            "[1m]))) > 0.25",
                            "labels": {"severity": "page"},
                            "annotations": {
                                "summary": "p99 latency of all APIs above 0.25 s over 1m"
                            },
                        },
                        {
                            "alert": "drifting",
                            "expr": 'max(avg_over_time(tiffin_drift_score{job="iris",'
                            'namespace="ml",monitor="iris",feature="petal_width"}[1h])) > 0.2',
                            "labels": {"severity": "warning"},
                            "annotations": {
                                "summary": "Drift score of feature 'petal_width' of monitor "
                                "'iris' above 0.2 over 1h"
                            },
                        },
                    ],
                }
            ]
        },
    }
    # the job the expressions select is the one the ServiceMonitor's targets get: the
    # Service's name; and the rule's labels are every other object's
    service = by_kind(objects)["Service"]
    assert service["metadata"]["name"] == "iris"
    assert by_kind(objects)["ServiceMonitor"]["spec"]["selector"]["matchLabels"] == SELECTOR
    assert rule["metadata"] == {**by_kind(objects)["ServiceMonitor"]["metadata"]}


def test_a_prometheus_rule_is_well_formed(tmp_path: Path) -> None:
    """What the Prometheus operator's CRD and Prometheus' rule files accept; the CRD is
    not among kubernetes-validate's schemas, so its structure is checked here."""
    bundle = make_bundle(tmp_path, settings={"alerts": RULES})
    options = KubernetesOptions.from_bundle(bundle, service_monitor=True)
    rule = by_kind(manifests(bundle, options))["PrometheusRule"]
    assert set(rule) == {"apiVersion", "kind", "metadata", "spec"}
    assert set(rule["metadata"]) == {"name", "labels"}  # no namespace given: kubectl's
    assert set(rule["spec"]) == {"groups"}
    (group,) = rule["spec"]["groups"]
    assert set(group) == {"name", "rules"}
    names = [item["alert"] for item in group["rules"]]
    assert names == ["predict-errors", "slow", "drifting"]
    for item in group["rules"]:
        assert set(item) <= {"alert", "expr", "for", "labels", "annotations"}
        assert {"alert", "expr", "labels", "annotations"} <= set(item)
        assert isinstance(item["expr"], str)
        assert '{job="iris"' in item["expr"]
        assert "namespace=" not in item["expr"]
        assert item["expr"].count("(") == item["expr"].count(")")
        assert all(
            isinstance(v, str) for v in (*item["labels"].values(), *item["annotations"].values())
        )
    assert [item.get("for") for item in group["rules"]] == ["1m", None, None]  # 0 is left out
    assert list(yaml.safe_load_all(render([rule]))) == [rule]


def test_no_prometheus_rule_without_rules_or_without_the_service_monitor(tmp_path: Path) -> None:
    without_rules = make_bundle(tmp_path)
    options = KubernetesOptions.from_bundle(without_rules, service_monitor=True)
    assert "PrometheusRule" not in [o["kind"] for o in manifests(without_rules, options)]
    with_rules = make_bundle(tmp_path, settings={"alerts": RULES})
    assert [o["kind"] for o in manifests(with_rules)] == ["Deployment", "Service"]


def test_write_removes_the_prometheus_rule_once_the_rules_are_gone(tmp_path: Path) -> None:
    out = tmp_path / "k8s"
    with_rules = make_bundle(tmp_path, settings={"alerts": RULES})
    write(
        manifests(with_rules, KubernetesOptions.from_bundle(with_rules, service_monitor=True)), out
    )
    assert sorted(os.listdir(out)) == [
        "deployment.yaml", "prometheusrule.yaml", "service.yaml", "servicemonitor.yaml",
    ]  # fmt: skip
    without = make_bundle(tmp_path)
    objects = manifests(without, KubernetesOptions.from_bundle(without, service_monitor=True))
    assert stale(objects, out) == [out / "prometheusrule.yaml"]
    write(objects, out)
    assert sorted(os.listdir(out)) == ["deployment.yaml", "service.yaml", "servicemonitor.yaml"]


def test_cli_writes_the_prometheus_rule_of_a_built_bundle(home: Path, tmp_path: Path) -> None:
    store = BundleStore(home)
    with store.items.stage("iris", "v2") as staging:
        with staging.open("src/service.py") as source:
            source.write(b"class Iris: ...\n")
        staging.commit(
            {
                "service": "service:Iris",
                "service_name": "Iris",
                "digest": "2" * 64,
                "settings": {"alerts": [RULES[1]]},
                "python_version": "3.11.9",
                "tiffin_version": "0.1.0",
            }
        )
    out = tmp_path / "k8s"
    result = run(home, "iris:v2", "--service-monitor", "--namespace", "ml", "--output", str(out))
    assert result.exit_code == 0, result.stderr
    assert f"Wrote {out / 'prometheusrule.yaml'}\n" in result.stdout
    rule = yaml.safe_load((out / "prometheusrule.yaml").read_text())
    assert rule["spec"]["groups"][0]["rules"][0]["expr"] == (
        "histogram_quantile(0.99, sum by (le) (rate(tiffin_request_duration_seconds_bucket"
        '{job="iris",namespace="ml"}[1m]))) > 0.25'
    )
