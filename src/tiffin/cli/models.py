"""``tiffin models``: list, inspect, alias, delete, export and import saved models."""

from __future__ import annotations

from pathlib import Path

import click
import yaml

from tiffin.cli.output import OUTPUT_OPTION, human_size, print_json, print_table, progress_bar
from tiffin.cli.settings import store_from
from tiffin.exceptions import InvalidArgument
from tiffin.models import Model
from tiffin.tag import Tag

__all__ = ["models"]


def _labels(pairs: tuple[str, ...]) -> dict[str, str]:
    labels = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise InvalidArgument(
                f"--label {pair!r} is not KEY=VALUE. Write it like --label team=ml.",
                detail={"label": pair},
            )
        labels[key] = value
    return labels


def _created(model: Model) -> str:
    return model.info.created_at.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def _framework(model: Model) -> str:
    framework = model.info.framework
    return framework.name + (f" {framework.version}" if framework.version else "")


@click.group()
def models() -> None:
    """Manage saved models in the local store ($TIFFIN_HOME/models)."""


@models.command("list")
@click.argument("name", required=False)
@click.option(
    "--label",
    "labels",
    multiple=True,
    metavar="KEY=VALUE",
    help="Only models with this label (repeatable).",
)
@OUTPUT_OPTION
@click.pass_context
def list_(ctx: click.Context, name: str | None, labels: tuple[str, ...], output: str) -> None:
    """List saved models, or the versions of NAME, oldest first."""
    store = store_from(ctx)
    if name is not None:
        name = Tag.parse(name).name
    found = store.list(name, labels=_labels(labels))
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
@OUTPUT_OPTION
@click.pass_context
def alias(ctx: click.Context, tag: str, alias: str | None, remove: bool, output: str) -> None:
    """Point ALIAS at TAG's version, remove an alias, or list a name's aliases.

    \b
      tiffin models alias iris:20261124-153012-482-k3x9q2ab production   set or move
      tiffin models alias iris:production --remove                        remove
      tiffin models alias iris                                            list
    """
    store = store_from(ctx)
    parsed = Tag.parse(tag)
    if remove:
        if alias is not None or parsed.version is None:
            raise InvalidArgument(
                "--remove takes one argument, the alias as name:alias "
                "(e.g. 'tiffin models alias iris:production --remove').",
            )
        store.unalias(parsed.name, parsed.version)
        click.echo(f"Removed alias {parsed}")
        return
    if alias is None:
        if parsed.version is not None:
            raise InvalidArgument(
                f"Give the alias to set ('tiffin models alias {tag} production'), or just the "
                f"name to list aliases ('tiffin models alias {parsed.name}').",
            )
        found = store.aliases(parsed.name)
        if output == "json":
            print_json(found)
        else:
            print_table(
                ["ALIAS", "VERSION"],
                [[f"{parsed.name}:{a}", v] for a, v in found.items()],
                empty=f"'{parsed.name}' has no aliases.",
            )
        return
    target = store.alias(parsed, alias)
    click.echo(f"{target.name}:{alias} -> {target}")


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
    """Check a model's files against the sha256 recorded when it was saved."""
    model = store_from(ctx).verify(tag)
    click.echo(f"{model.tag}: {len(model.info.files)} file(s) match their sha256")
