"""``tiffin deploy``: take a built bundle to a cluster."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from tiffin.cli.output import key_values
from tiffin.cli.settings import bundle_store_from
from tiffin.deploy.kubernetes import KubernetesOptions, manifests, render, stale, write

__all__ = ["deploy"]


@click.group()
def deploy() -> None:
    """Deploy a built bundle."""


@deploy.command("kubernetes")
@click.argument("tag", metavar="NAME[:VERSION]")
@click.option("--image", help="The image to run [NAME:VERSION, the tag containerize gives].")
@click.option("--name", help="The name of every object [the bundle's name, made DNS-safe].")
@click.option("--namespace", help="The namespace of every object [kubectl's].")
@click.option("--replicas", type=int, help="Pods to run without autoscaling [1].")
@click.option("--min-replicas", type=int, help="The fewest pods [--replicas].")
@click.option(
    "--max-replicas",
    type=int,
    help="The most pods; above --min-replicas, an autoscaler sets the count [--min-replicas].",
)
@click.option("--target-cpu", type=int, metavar="PCT", help="Autoscaler's CPU target, in % [70].")
@click.option("--cpu", metavar="Q", help="CPU request, e.g. 500m or 2 [500m].")
@click.option("--memory", metavar="Q", help="Memory request, e.g. 1Gi [512Mi].")
@click.option("--cpu-limit", metavar="Q", help="CPU limit [none: never throttled].")
@click.option("--memory-limit", metavar="Q", help="Memory limit [--memory].")
@click.option("--min-available", type=int, help="Pods kept while nodes drain [1].")
@click.option(
    "--service-type", metavar="TYPE", help="ClusterIP, NodePort or LoadBalancer [ClusterIP]."
)
@click.option("--port", type=int, help="The server's port [the bundle's port setting, or 3000].")
@click.option(
    "--env", "env", multiple=True, metavar="KEY=VALUE", help="Container environment (repeatable)."
)
@click.option(
    "--service-monitor", is_flag=True, default=None, help="Also a Prometheus ServiceMonitor."
)
@click.option(
    "--startup-timeout", type=int, metavar="SECONDS", help="Time a pod has to become ready [300]."
)
@click.option(
    "--output",
    type=click.Path(file_okay=False, path_type=Path),
    help="Write one file per object in this directory instead of printing the YAML.",
)
@click.pass_context
def kubernetes(
    ctx: click.Context, /, *, tag: str, env: tuple[str, ...], output: Path | None, **overrides: Any
) -> None:
    """Kubernetes manifests for a built bundle: a Deployment and a Service, plus an
    autoscaler, a disruption budget and a ServiceMonitor when the options call for them.

    Values come from the bundle ('kubernetes:' in its build spec, its settings), else
    the defaults in brackets; options override them. The YAML goes to standard output,
    ready for kubectl:

    \b
      tiffin deploy kubernetes iris | kubectl apply -f -
      tiffin deploy kubernetes iris:v3 --max-replicas 5 --memory 2Gi --output k8s/
    """
    bundle = bundle_store_from(ctx).get(tag)
    env_overrides = key_values(env, "--env", "OMP_NUM_THREADS=1")
    options = KubernetesOptions.from_bundle(bundle, env=env_overrides, **overrides)
    objects = manifests(bundle, options)
    if output is None:
        click.echo(render(objects), nl=False)
        return
    removed = stale(objects, output)
    for path in write(objects, output):
        click.echo(f"Wrote {path}")
    for path in removed:
        click.echo(f"Removed {path} (no longer part of the manifests)")
    click.echo(f"Apply them with: kubectl apply -f {output}")
