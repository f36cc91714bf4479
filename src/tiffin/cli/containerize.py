"""``tiffin containerize``: a bundle's container image, or only its build context."""

from __future__ import annotations

import contextlib
from pathlib import Path

import click

from tiffin.cli.output import print_json, progress_bar
from tiffin.cli.settings import bundle_store_from, store_from
from tiffin.deploy.container import (
    ContainerOptions,
    build_image,
    check_image,
    default_image,
    server_port,
    write_context,
)
from tiffin.deploy.engines import ENGINES, find_engine
from tiffin.exceptions import ModelNotFound

__all__ = ["containerize"]


@click.command()
@click.argument("tag", metavar="NAME[:VERSION]")
@click.option(
    "--engine",
    type=click.Choice(ENGINES),
    help="The container engine that builds the image [default: the first of docker, "
    "podman, buildah on PATH].",
)
@click.option(
    "-t",
    "--tag",
    "image",
    metavar="IMAGE",
    help="The image reference to tag the image with [default: NAME:VERSION].",
)
@click.option(
    "--base-image",
    metavar="IMAGE",
    help="The image to build on: Debian-like, with python3 and its venv module "
    "[default: the bundle's image.base].",
)
@click.option(
    "--port",
    type=click.IntRange(1, 65535),
    help="The port the server listens on and the image exposes [default: the bundle's port "
    "setting, or 3000].",
)
@click.option(
    "--ca-cert",
    "ca_certs",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    metavar="FILE",
    help="A PEM file of extra certificate authorities to trust while building and serving, "
    "e.g. a proxy's (repeatable).",
)
@click.option(
    "--context-only",
    type=click.Path(file_okay=False, path_type=Path),
    metavar="DIR",
    help="Write the build context (Dockerfile and files) to the new directory DIR and build "
    "nothing.",
)
@click.option(
    "-o",
    "--output",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="'text' for people, 'json' for scripts (the engine's output goes to standard error).",
)
@click.pass_context
def containerize(
    ctx: click.Context,
    *,
    tag: str,
    engine: str | None,
    image: str | None,
    base_image: str | None,
    port: int | None,
    ca_certs: tuple[Path, ...],
    context_only: Path | None,
    output: str,
) -> None:
    """Build a container image of a bundle (NAME, NAME:VERSION or NAME:ALIAS).

    The image serves the bundle with its pinned models as a non-root user, on PORT, with
    JSON logs and a health check; 'docker stop' lets requests in flight finish.

    \b
      tiffin containerize iris                          build iris:<newest version>
      tiffin containerize iris:v3 --engine podman -t registry.example.com/iris:v3
      tiffin containerize iris --context-only build/iris   only write the context
    """
    bundle = bundle_store_from(ctx).get(tag)
    models = store_from(ctx)
    options = ContainerOptions(
        base_image=base_image, port=port, ca_certificates=[path.resolve() for path in ca_certs]
    )
    reference = check_image(image) if image is not None else default_image(bundle.info)
    if context_only is not None:
        total = bundle.info.size
        for pin in bundle.info.models:
            # a missing model: write_context says which, and what it means for the image
            with contextlib.suppress(ModelNotFound):
                total += models.get(pin.tag).info.size
        with progress_bar(f"Writing the build context of {bundle.tag}", total) as advance:
            context = write_context(
                bundle, context_only, models=models, options=options, progress=advance
            )
        if output == "json":
            print_json({"bundle": str(bundle.tag), "context": str(context), "image": reference})
            return
        click.echo(
            f"Wrote the build context of {bundle.tag} to {context}.\n"
            f"Build it with 'docker build --tag {reference} {context}' (or podman, buildah)."
        )
        return
    found = find_engine(engine)
    click.echo(f"Building image {reference} of bundle {bundle.tag} with {found.name}.", err=True)
    build_image(
        bundle,
        models=models,
        options=options,
        engine=found,
        image=reference,
        on_output=lambda line: click.echo(line, err=True),
    )
    if output == "json":
        print_json({"bundle": str(bundle.tag), "image": reference, "engine": found.name})
        return
    port = server_port(bundle.info, options)
    runner = "docker" if found.name == "docker" else "podman"
    click.echo(
        f"Built {reference}. Run it with '{runner} run --rm -p {port}:{port} {reference}'.",
        err=True,
    )
    click.echo(reference)
