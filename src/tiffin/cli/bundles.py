"""``tiffin build`` and ``tiffin bundles``: build a project into a bundle; list, inspect,
alias, delete, export, import, push and pull bundles (a bundle moves with its models)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path

import click
import yaml

from tiffin.bundles.build import build as build_bundle
from tiffin.bundles.bundle import Bundle
from tiffin.bundles.store import BUNDLES
from tiffin.cli.models import (
    REMOTE_OPTION,
    alias_command,
    remote_rows,
    remote_url,
    report_transfers,
    transfer_bars,
)
from tiffin.cli.output import (
    OUTPUT_OPTION,
    human_size,
    key_values,
    print_json,
    print_table,
    progress_bar,
)
from tiffin.cli.settings import bundle_store_from, store_from
from tiffin.tag import Tag

__all__ = ["build", "bundles"]


def _created(bundle: Bundle) -> str:
    return bundle.info.created_at.astimezone().strftime("%Y-%m-%d %H:%M:%S")


@click.command()
@click.argument("service", required=False)
@click.option(
    "-C",
    "--directory",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=Path("."),
    help="The project to build (its tiffin.yaml or pyproject.toml) [default: .].",
)
@click.option("--version", help="The bundle's version [default: a new one from the time].")
@click.option(
    "--label", "labels", multiple=True, metavar="KEY=VALUE", help="Add a label (repeatable)."
)
@OUTPUT_OPTION
@click.pass_context
def build(
    ctx: click.Context,
    *,
    service: str | None,
    directory: Path,
    version: str | None,
    labels: tuple[str, ...],
    output: str,
) -> None:
    """Build the project into a new bundle: its source, pinned models, locked requirements.

    SERVICE (module:Class) overrides the 'service:' of tiffin.yaml.
    """
    started = time.perf_counter()
    bundle = build_bundle(
        directory,
        service=service,
        version=version,
        labels=key_values(labels, "--label"),
        bundles=bundle_store_from(ctx),
        models=store_from(ctx),
    )
    seconds = time.perf_counter() - started
    if output == "json":
        print_json({**bundle.to_dict(), "seconds": round(seconds, 3)})
        return
    info = bundle.info
    sources = sum(1 for rel in info.files if rel.startswith("src/"))
    models = ", ".join(pin.tag for pin in info.models) or "none"
    click.echo(
        f"Built bundle {bundle.tag} in {seconds:.2f} s: {sources} source file(s), "
        f"{human_size(info.size)}; models: {models}; digest {info.digest[:12]}.\n"
        f"Serve it with 'tiffin serve {bundle.tag}', or make an image with "
        f"'tiffin containerize {bundle.tag}'."
    )


@click.group()
def bundles() -> None:
    """Manage built bundles in the local store ($TIFFIN_HOME/bundles), and push and pull
    them (with their models) to and from remote stores."""


@bundles.command("list")
@click.argument("name", required=False)
@click.option(
    "--label",
    "labels",
    multiple=True,
    metavar="KEY=VALUE",
    help="Only bundles with this label (repeatable).",
)
@REMOTE_OPTION
@OUTPUT_OPTION
@click.pass_context
def list_(
    ctx: click.Context,
    *,
    name: str | None,
    labels: tuple[str, ...],
    remote: str | None,
    output: str,
) -> None:
    """List built bundles, or the versions of NAME, oldest first (in a remote store with
    --remote)."""
    if name is not None:
        name = Tag.parse(name).name
    wanted = key_values(labels, "--label")
    if remote is not None:
        _list_remote(ctx, given=remote, name=name, labels=wanted, output=output)
        return
    store = bundle_store_from(ctx)
    found = [
        b for b in store.list(name) if all(b.info.labels.get(k) == v for k, v in wanted.items())
    ]
    if output == "json":
        print_json([b.to_dict() for b in found])
        return
    rows = [
        [
            str(b.tag),
            b.info.service,
            ", ".join(pin.tag for pin in b.info.models),
            human_size(b.info.size),
            _created(b),
            b.info.digest[:12],
        ]
        for b in found
    ]
    where = f" named '{name}'" if name else ""
    print_table(
        ["TAG", "SERVICE", "MODELS", "SIZE", "CREATED", "DIGEST"],
        rows,
        empty=f"No bundles{where}. Build one with 'tiffin build' in a project directory.",
    )


def _list_remote(
    ctx: click.Context,
    *,
    given: str,
    name: str | None,
    labels: Mapping[str, str],
    output: str,
) -> None:
    found, aliases, shown = remote_rows(
        BUNDLES, remote_url(ctx, given, "--remote"), name, labels, {}
    )
    if output == "json":
        print_json(
            [
                {
                    "tag": str(r.tag),
                    "remote": shown,
                    **r.manifest,
                    "aliases": aliases[r.name].get(r.version, []),
                    "pushed_by": r.pushed_by,
                    "pushed_at": r.pushed_at.isoformat(),
                }
                for r in found
            ]
        )
        return
    rows = [
        [
            str(r.tag),
            str(r.manifest.get("service", "")),
            ", ".join(str(pin.get("tag")) for pin in r.manifest.get("models") or []),
            human_size(r.size),
            ", ".join(aliases[r.name].get(r.version, [])),
            str(r.manifest.get("digest", ""))[:12],
            r.pushed_by,
        ]
        for r in found
    ]
    where = f" named '{name}'" if name else ""
    print_table(
        ["TAG", "SERVICE", "MODELS", "SIZE", "ALIASES", "DIGEST", "PUSHED BY"],
        rows,
        empty=f"No bundles{where} in {shown}. Push one with 'tiffin bundles push NAME --to URL'.",
    )


@bundles.command("get")
@click.argument("tag")
@click.option(
    "-o",
    "--output",
    type=click.Choice(["yaml", "json"]),
    default="yaml",
    show_default=True,
    help="Output format.",
)
@click.pass_context
def get(ctx: click.Context, tag: str, output: str) -> None:
    """Show everything recorded about a bundle (TAG: name, name:version or name:alias)."""
    data = bundle_store_from(ctx).get(tag).to_dict()
    if output == "json":
        print_json(data)
    else:
        click.echo(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), nl=False)


@bundles.command("delete")
@click.argument("tags", nargs=-1, required=True)
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--force", is_flag=True, help="Also remove aliases pointing at the versions.")
@click.pass_context
def delete(ctx: click.Context, tags: tuple[str, ...], yes: bool, force: bool) -> None:
    """Delete bundle versions (TAG: name:version, name:alias, or name for the newest)."""
    store = bundle_store_from(ctx)
    resolved = [store.items.check_delete(tag, force=force)[0] for tag in tags]
    if not yes:
        shown = ", ".join(str(tag) for tag in resolved)
        click.confirm(f"Delete {shown}?", abort=True, err=True)
    for tag in resolved:
        store.delete(tag, force=force)
        click.echo(f"Deleted {tag}")


@bundles.command("export")
@click.argument("tag")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@click.pass_context
def export(ctx: click.Context, tag: str, path: Path) -> None:
    """Write a bundle to one archive file (.tar; .tar.gz or .tgz to compress). Its models
    are not in it: export them with 'tiffin models export'."""
    store = bundle_store_from(ctx)
    bundle = store.get(tag)
    with progress_bar(f"Exporting {bundle.tag}", bundle.info.size) as advance:
        written = store.export(bundle.tag, path, progress=advance)
    click.echo(f"Exported {bundle.tag} to {written} ({human_size(written.stat().st_size)})")
    if bundle.info.models:
        shown = " ".join(pin.tag for pin in bundle.info.models)
        click.echo(f"It serves model(s) {shown}: export them too with 'tiffin models export'.")


@bundles.command("import")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.pass_context
def import_(ctx: click.Context, path: Path) -> None:
    """Import a bundle archive written by 'tiffin bundles export'."""
    store = bundle_store_from(ctx)
    with progress_bar(f"Importing {path.name}", path.stat().st_size) as advance:
        bundle = store.import_(path, progress=advance)
    click.echo(f"Imported {bundle.tag}")


@bundles.command("verify")
@click.argument("tag")
@click.pass_context
def verify(ctx: click.Context, tag: str) -> None:
    """Check a bundle's files against the digests recorded when it was built."""
    bundle = bundle_store_from(ctx).verify(tag)
    click.echo(f"{bundle.tag}: {len(bundle.info.files)} file(s) match their digest")


@bundles.command("alias")
@click.argument("tag")
@click.argument("alias", required=False)
@click.option("--remove", is_flag=True, help="Remove the alias TAG (written name:alias).")
@REMOTE_OPTION
@OUTPUT_OPTION
@click.pass_context
def alias(
    ctx: click.Context,
    *,
    tag: str,
    alias: str | None,
    remove: bool,
    remote: str | None,
    output: str,
) -> None:
    """Point ALIAS at TAG's version, remove an alias, or list a name's aliases.

    \b
      tiffin bundles alias iris:20261124-153012-482-k3x9q2ab production   set or move
      tiffin bundles alias iris:production --remove                        remove
      tiffin bundles alias iris                                            list
      tiffin bundles alias iris:v2 production --remote s3://bucket/models  in a remote store
    """
    items = bundle_store_from(ctx).items
    alias_command(ctx, items, tag, alias, remove=remove, remote=remote, output=output)


@bundles.command("push")
@click.argument("tag")
@click.option(
    "--to",
    "remote",
    metavar="URL",
    help="The remote store (file:///dir, s3://bucket/prefix, sqlite:///db, postgresql://...) "
    "[env: TIFFIN_REMOTE].",
)
@OUTPUT_OPTION
@click.pass_context
def push(ctx: click.Context, tag: str, remote: str | None, output: str) -> None:
    """Copy a bundle (TAG: name, name:version or name:alias) and the models it pins to a
    remote store. What the remote already has is not sent again."""
    url = remote_url(ctx, remote, "--to")
    with transfer_bars("Pushing") as bars:
        done = bundle_store_from(ctx).push(tag, url, store_from(ctx), progress=bars)
    report_transfers(done, pushed=True, output=output)


@bundles.command("pull")
@click.argument("tag")
@click.option(
    "--from",
    "remote",
    metavar="URL",
    help="The remote store to pull from [env: TIFFIN_REMOTE].",
)
@OUTPUT_OPTION
@click.pass_context
def pull(ctx: click.Context, tag: str, remote: str | None, output: str) -> None:
    """Copy a bundle (TAG: name, name:version or a remote alias) and the models it pins
    from a remote store, checking every file's digest first; then 'tiffin serve TAG'
    serves it."""
    url = remote_url(ctx, remote, "--from")
    with transfer_bars("Pulling") as bars:
        done = bundle_store_from(ctx).pull(tag, url, store_from(ctx), progress=bars)
    report_transfers(done, pushed=False, output=output)
