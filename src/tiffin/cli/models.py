"""``tiffin models``: list, inspect, alias, delete, export, import, push and pull saved
models; ``--remote`` points list and alias at a remote store."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import click
import yaml

from tiffin.cli.output import (
    OUTPUT_OPTION,
    human_size,
    key_values,
    print_json,
    print_table,
    progress_bar,
)
from tiffin.cli.settings import settings_from, store_from
from tiffin.exceptions import ConfigError, InvalidArgument
from tiffin.models import Model
from tiffin.models.store import MODELS
from tiffin.storage import ItemKind, LocalStore
from tiffin.storage.remote import ItemProgress, Progress, Record, Transfer, open_remote
from tiffin.storage.remote.store import metadata_text
from tiffin.tag import Tag

__all__ = [
    "REMOTE_OPTION",
    "alias_command",
    "models",
    "remote_rows",
    "remote_url",
    "report_transfers",
    "transfer_bars",
]

REMOTE_OPTION = click.option(
    "--remote",
    is_flag=False,
    flag_value="",
    default=None,
    metavar="[URL]",
    help="Act on this remote store (file:///dir, s3://bucket/prefix, sqlite:///db, "
    "postgresql://...) instead of the local one; alone, on the 'remote' setting "
    "[env: TIFFIN_REMOTE].",
)


def remote_url(ctx: click.Context, given: str | None, option: str) -> str:
    """The remote store a command acts on: the URL given, else the 'remote' setting."""
    url = given or settings_from(ctx).remote
    if not url:
        raise ConfigError(
            f"No remote store given. Pass {option} URL (e.g. {option} s3://bucket/models) or "
            "set TIFFIN_REMOTE.",
            detail={"option": option, "setting": "remote"},
        )
    return url


@contextmanager
def transfer_bars(verb: str) -> Iterator[ItemProgress]:
    """One progress bar per item moved, each shown while its item moves."""
    current = ExitStack()

    def start(tag: Tag, total: int) -> Progress:
        current.close()
        advance: Progress = current.enter_context(progress_bar(f"{verb} {tag}", total))
        return advance

    with current:
        yield start


def report_transfers(transfers: Sequence[Transfer], pushed: bool, output: str) -> None:
    """What moved: a sentence per item, or JSON."""
    if output == "json":
        print_json([t.to_dict() for t in transfers])
        return
    for t in transfers:
        if not t.added:
            where = t.remote if pushed else "the local store"
            click.echo(
                f"{t.tag} is already in {where}; nothing {'sent' if pushed else 'received'}."
            )
        elif pushed:
            click.echo(
                f"Pushed {t.tag} to {t.remote}: {human_size(t.moved)} sent, "
                f"{human_size(t.reused)} already there."
            )
        else:
            click.echo(
                f"Pulled {t.tag} from {t.remote}: {human_size(t.moved)} received, "
                f"{human_size(t.reused)} already here; every file matches its digest."
            )


def _created_text(created_at: Any) -> str:
    return str(created_at).replace("T", " ")[:19]


def remote_rows(
    kind: ItemKind,
    url: str,
    name: str | None,
    labels: Mapping[str, str],
    metadata: Mapping[str, str],
) -> tuple[list[Record], dict[str, dict[str, list[str]]], str]:
    """The records of a remote listing, the aliases of each name by version, and the URL
    shown (passwords hidden)."""
    with open_remote(url) as remote:
        found = remote.search(kind.noun, name, labels=labels, metadata=metadata)
        aliases: dict[str, dict[str, list[str]]] = {}
        for record in found:
            if record.name not in aliases:
                by_version: dict[str, list[str]] = {}
                for alias, version in remote.aliases(kind.noun, record.name).items():
                    by_version.setdefault(version, []).append(alias)
                aliases[record.name] = by_version
        return found, aliases, remote.url


def _remote_json(record: Record, remote: str, aliases: list[str]) -> dict[str, Any]:
    return {
        "tag": str(record.tag),
        "remote": remote,
        **record.manifest,
        "aliases": aliases,
        "pushed_by": record.pushed_by,
        "pushed_at": record.pushed_at.isoformat(),
    }


def _created(model: Model) -> str:
    return model.info.created_at.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def _framework(model: Model) -> str:
    framework = model.info.framework
    return framework.name + (f" {framework.version}" if framework.version else "")


@click.group()
def models() -> None:
    """Manage saved models in the local store ($TIFFIN_HOME/models), and push and pull them
    to and from remote stores."""


@models.command("list")
@click.argument("name", required=False)
@click.option(
    "--label",
    "labels",
    multiple=True,
    metavar="KEY=VALUE",
    help="Only models with this label (repeatable).",
)
@click.option(
    "--metadata",
    "metadata",
    multiple=True,
    metavar="KEY=VALUE",
    help="Only models whose metadata KEY has this value (repeatable; e.g. acc=0.97).",
)
@REMOTE_OPTION
@OUTPUT_OPTION
@click.pass_context
def list_(
    ctx: click.Context,
    *,
    name: str | None,
    labels: tuple[str, ...],
    metadata: tuple[str, ...],
    remote: str | None,
    output: str,
) -> None:
    """List saved models, or the versions of NAME, oldest first (in a remote store with
    --remote)."""
    if name is not None:
        name = Tag.parse(name).name
    wanted = key_values(labels, "--label")
    meta = key_values(metadata, "--metadata", "acc=0.97")
    if remote is not None:
        _list_remote(ctx, given=remote, name=name, labels=wanted, metadata=meta, output=output)
        return
    store = store_from(ctx)
    found = [
        m
        for m in store.list(name, labels=wanted)
        if all(
            k in m.info.metadata and metadata_text(m.info.metadata[k]) == v for k, v in meta.items()
        )
    ]
    aliases: dict[str, dict[str, list[str]]] = {}
    for model in found:
        if model.tag.name not in aliases:
            by_version: dict[str, list[str]] = {}
            for alias, version in store.aliases(model.tag.name).items():
                by_version.setdefault(version, []).append(alias)
            aliases[model.tag.name] = by_version
    if output == "json":
        print_json(
            [
                {**m.to_dict(), "aliases": aliases[m.tag.name].get(str(m.tag.version), [])}
                for m in found
            ]
        )
        return
    rows = [
        [
            str(m.tag),
            _framework(m),
            human_size(m.info.size),
            _created(m),
            ", ".join(aliases[m.tag.name].get(str(m.tag.version), [])),
            ", ".join(f"{k}={v}" for k, v in m.info.labels.items()),
        ]
        for m in found
    ]
    where = f" named '{name}'" if name else ""
    print_table(
        ["TAG", "FRAMEWORK", "SIZE", "CREATED", "ALIASES", "LABELS"],
        rows,
        empty=f"No models{where}. Save one with tiffin.models.save(name, model).",
    )


def _list_remote(
    ctx: click.Context,
    *,
    given: str,
    name: str | None,
    labels: Mapping[str, str],
    metadata: Mapping[str, str],
    output: str,
) -> None:
    found, aliases, shown = remote_rows(
        MODELS, remote_url(ctx, given, "--remote"), name, labels, metadata
    )
    if output == "json":
        print_json([_remote_json(r, shown, aliases[r.name].get(r.version, [])) for r in found])
        return
    rows = []
    for record in found:
        framework = record.manifest.get("framework") or {}
        rows.append(
            [
                str(record.tag),
                " ".join(str(framework.get(k)) for k in ("name", "version") if framework.get(k)),
                human_size(record.size),
                _created_text(record.created_at),
                ", ".join(aliases[record.name].get(record.version, [])),
                ", ".join(f"{k}={v}" for k, v in (record.manifest.get("labels") or {}).items()),
                record.pushed_by,
            ]
        )
    where = f" named '{name}'" if name else ""
    print_table(
        ["TAG", "FRAMEWORK", "SIZE", "CREATED", "ALIASES", "LABELS", "PUSHED BY"],
        rows,
        empty=f"No models{where} in {shown}. Push one with 'tiffin models push NAME --to URL'.",
    )


@models.command("get")
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
    """Show everything recorded about a model (TAG: name, name:version or name:alias)."""
    model = store_from(ctx).get(tag)
    data = model.to_dict()
    if output == "json":
        print_json(data)
    else:
        click.echo(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), nl=False)


@models.command("delete")
@click.argument("tags", nargs=-1, required=True)
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--force", is_flag=True, help="Also remove aliases pointing at the versions.")
@click.pass_context
def delete(ctx: click.Context, tags: tuple[str, ...], yes: bool, force: bool) -> None:
    """Delete model versions (TAG: name:version, name:alias, or name for the newest)."""
    store = store_from(ctx)
    resolved = [store.items.check_delete(tag, force=force)[0] for tag in tags]
    if not yes:
        shown = ", ".join(str(tag) for tag in resolved)
        click.confirm(f"Delete {shown}?", abort=True, err=True)
    for tag in resolved:
        store.delete(tag, force=force)
        click.echo(f"Deleted {tag}")


@models.command("alias")
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
      tiffin models alias iris:20261124-153012-482-k3x9q2ab production   set or move
      tiffin models alias iris:production --remove                        remove
      tiffin models alias iris                                            list
      tiffin models alias iris:v2 production --remote s3://bucket/models  in a remote store
    """
    alias_command(
        ctx, store_from(ctx).items, tag, alias, remove=remove, remote=remote, output=output
    )


def alias_command(
    ctx: click.Context,
    local: LocalStore,
    tag: str,
    alias: str | None,
    *,
    remove: bool,
    remote: str | None,
    output: str,
) -> None:
    """``tiffin models alias`` and ``tiffin bundles alias``: on the ``local`` store, or
    on a remote store when ``remote`` is given."""
    kind = local.kind
    parsed = Tag.parse(tag)
    command = f"{kind.command} alias"
    if remove and (alias is not None or parsed.version is None):
        raise InvalidArgument(
            f"--remove takes one argument, the alias as name:alias (e.g. '{command} "
            f"{parsed.name}:production --remove').",
        )
    if not remove and alias is None and parsed.version is not None:
        raise InvalidArgument(
            f"Give the alias to set ('{command} {tag} production'), or just the name to list "
            f"aliases ('{command} {parsed.name}').",
        )
    with ExitStack() as stack:
        opened = None
        if remote is not None:
            opened = stack.enter_context(open_remote(remote_url(ctx, remote, "--remote")))
        where = "" if opened is None else f" in {opened.url}"
        if remove:
            assert parsed.version is not None
            if opened is None:
                local.remove_alias(parsed.name, parsed.version)
            else:
                opened.drop_alias(kind, parsed.name, parsed.version)
            click.echo(f"Removed alias {parsed}{where}")
        elif alias is None:
            found = (
                local.aliases(parsed.name)
                if opened is None
                else opened.aliases(kind.noun, parsed.name)
            )
            if output == "json":
                print_json(found)
            else:
                print_table(
                    ["ALIAS", "VERSION"],
                    [[f"{parsed.name}:{a}", v] for a, v in found.items()],
                    empty=f"'{parsed.name}' has no aliases{where}.",
                )
        else:
            target = (
                local.set_alias(parsed, alias)
                if opened is None
                else opened.point_alias(kind, parsed, alias)
            )
            click.echo(f"{target.name}:{alias} -> {target}{where}")


@models.command("push")
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
    """Copy a model (TAG: name, name:version or name:alias) to a remote store.

    Chunks the remote already has are not sent again: an interrupted push resumes.
    """
    url = remote_url(ctx, remote, "--to")
    with transfer_bars("Pushing") as bars:
        done = store_from(ctx).push(tag, url, progress=bars)
    report_transfers([done], pushed=True, output=output)


@models.command("pull")
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
    """Copy a model (TAG: name, name:version or a remote alias) from a remote store into
    the local one, checking every file's digest first. An interrupted pull resumes."""
    url = remote_url(ctx, remote, "--from")
    with transfer_bars("Pulling") as bars:
        done = store_from(ctx).pull(tag, url, progress=bars)
    report_transfers([done], pushed=False, output=output)


@models.command("export")
@click.argument("tag")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@click.pass_context
def export(ctx: click.Context, tag: str, path: Path) -> None:
    """Write a model to one archive file (.tar; .tar.gz or .tgz to compress)."""
    store = store_from(ctx)
    model = store.get(tag)
    with progress_bar(f"Exporting {model.tag}", model.info.size) as advance:
        written = store.export(model.tag, path, progress=advance)
    click.echo(f"Exported {model.tag} to {written} ({human_size(written.stat().st_size)})")


@models.command("import")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.pass_context
def import_(ctx: click.Context, path: Path) -> None:
    """Import a model archive written by 'tiffin models export'."""
    store = store_from(ctx)
    with progress_bar(f"Importing {path.name}", path.stat().st_size) as advance:
        model = store.import_(path, progress=advance)
    click.echo(f"Imported {model.tag}")


@models.command("verify")
@click.argument("tag")
@click.pass_context
def verify(ctx: click.Context, tag: str) -> None:
    """Check a model's files against the digests recorded when it was saved."""
    model = store_from(ctx).verify(tag)
    click.echo(f"{model.tag}: {len(model.info.files)} file(s) match their digest")
