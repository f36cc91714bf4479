"""A database registry: the index of models and bundles in SQLite or PostgreSQL
(``sqlite:///registry.db``, ``postgresql://user:password@host/db``), searchable by name,
label and metadata; the artifacts (chunks) in the database itself, or in the object
store or directory ``?artifacts=URL`` names (``?artifacts=s3://bucket/prefix``).

Where the artifacts go is recorded in the registry when first chosen, so every client
finds them from the database URL alone; a URL naming another place is refused.

Tables (prefixed ``tiffin_``)::

    items      one row per kind, name and version (unique): manifest, size, the file
               table's digest, created_at, pushed_by, pushed_at
    labels     (item, key) -> value, indexed by key and value
    metadata   (item, key) -> the top-level metadata value as text, indexed by key
    aliases    (kind, name, alias) -> version, replaced by one upsert
    files      a stored file's digest (BLAKE3 or sha256, as its manifest entry records;
               the column is named sha256, from before BLAKE3) -> its chunk list
    chunks     a chunk's sha256 -> its bytes (when the artifacts are in the database)
    settings   key -> value: where the artifacts are

A version is added in one transaction whose insert fails on the unique key if another
client added it first; an alias moves in one ``INSERT ... ON CONFLICT DO UPDATE``, so a
reader sees the old version or the new one.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

from tiffin.exceptions import ConfigError, IntegrityError, TiffinError, describe
from tiffin.extras import import_optional
from tiffin.storage.remote.store import (
    ChunkList,
    Record,
    RemoteStore,
    metadata_text,
    open_remote,
    who,
)

import_optional("sqlalchemy", "sql", purpose="to use a database registry")

import sqlalchemy as sa  # noqa: E402 - after the check that names the extra to install
from sqlalchemy.dialects import postgresql, sqlite  # noqa: E402
from sqlalchemy.engine import Connection, Engine  # noqa: E402

__all__ = ["IN_DATABASE", "SqlStore"]

IN_DATABASE = "database"
"""The ``artifacts=`` value that keeps chunks in the database (the default)."""

_meta = sa.MetaData()
_items = sa.Table(
    "tiffin_items",
    _meta,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("name", sa.String(63), nullable=False),
    sa.Column("version", sa.String(128), nullable=False),
    sa.Column("created_at", sa.String(40), nullable=False),
    sa.Column("pushed_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("pushed_by", sa.String(255), nullable=False),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("digest", sa.String(64), nullable=False),
    sa.Column("manifest", sa.Text, nullable=False),
    sa.UniqueConstraint("kind", "name", "version", name="tiffin_items_tag"),
)
_labels = sa.Table(
    "tiffin_labels",
    _meta,
    sa.Column("item_id", sa.ForeignKey("tiffin_items.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("key", sa.String(63), primary_key=True),
    sa.Column("value", sa.String(255), nullable=False),
    sa.Index("tiffin_labels_key_value", "key", "value"),
)
_metadata = sa.Table(
    "tiffin_metadata",
    _meta,
    sa.Column("item_id", sa.ForeignKey("tiffin_items.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("key", sa.String(255), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
    sa.Index("tiffin_metadata_key", "key"),
)
_aliases = sa.Table(
    "tiffin_aliases",
    _meta,
    sa.Column("kind", sa.String(32), primary_key=True),
    sa.Column("name", sa.String(63), primary_key=True),
    sa.Column("alias", sa.String(128), primary_key=True),
    sa.Column("version", sa.String(128), nullable=False),
    sa.Column("updated_by", sa.String(255), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)
_files = sa.Table(
    "tiffin_files",
    _meta,
    # holds the file's digest, BLAKE3 or sha256: renaming it would break existing registries
    sa.Column("sha256", sa.String(64), primary_key=True),
    sa.Column("chunks", sa.Text, nullable=False),
)
_chunks = sa.Table(
    "tiffin_chunks",
    _meta,
    sa.Column("sha256", sa.String(64), primary_key=True),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("data", sa.LargeBinary, nullable=False),
)
_settings = sa.Table(
    "tiffin_settings",
    _meta,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)


def _driver_url(url: str) -> sa.URL:
    parsed = sa.make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        import_optional("psycopg", "sql", purpose="to use a PostgreSQL registry")
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def _engine(url: sa.URL) -> Engine:
    if url.get_backend_name() == "sqlite":
        engine = sa.create_engine(url, connect_args={"timeout": 60})

        @sa.event.listens_for(engine, "connect")
        def _pragmas(connection: Any, record: Any) -> None:
            cursor = connection.cursor()
            cursor.execute("PRAGMA foreign_keys=ON")
            # write-ahead logging: readers never wait for a writer. The mode is kept in the
            # file; switching needs a moment alone with it, so wait for one if another
            # client is switching too.
            if url.database not in (None, "", ":memory:"):
                for attempt in range(100):
                    try:
                        if cursor.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                            cursor.execute("PRAGMA journal_mode=WAL")
                        break
                    except sqlite3.OperationalError:
                        if attempt == 99:
                            raise
                        time.sleep(0.05)
            cursor.close()

        return engine
    return sa.create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=10)


def _upsert(
    connection: Connection,
    table: sa.Table,
    values: Mapping[str, Any],
    keys: list[str],
    update: bool,
) -> None:
    """Insert a row, or on a key conflict replace it (``update``) or keep it, in one
    statement where the database has one."""
    dialect = connection.dialect.name
    module: Any = {"postgresql": postgresql, "sqlite": sqlite}.get(dialect)
    if module is None:
        where = sa.and_(*(table.c[k] == values[k] for k in keys))
        if update:
            connection.execute(table.delete().where(where))
        elif connection.execute(sa.select(sa.literal(1)).where(where)).first():
            return
        connection.execute(table.insert().values(**values))
        return
    statement = module.insert(table).values(**values)
    if update:
        changed = {k: v for k, v in values.items() if k not in keys}
        statement = statement.on_conflict_do_update(index_elements=keys, set_=changed)
    else:
        statement = statement.on_conflict_do_nothing(index_elements=keys)
    connection.execute(statement)


class SqlStore(RemoteStore):
    """A database registry; see the module docstring.

    Example:
        remote = SqlStore.from_url("postgresql://tiffin@db/registry?artifacts=s3://models")
        remote.search("model", labels={"team": "ml"})
    """

    schemes = ("sqlite", "postgresql", "postgres")

    def __init__(self, url: str, engine: Engine, artifacts: str, **options: Any) -> None:
        super().__init__(url, **options)
        self.engine = engine
        self.artifacts_url = artifacts
        self._artifacts: RemoteStore | None = None
        self._recorded = False

    @classmethod
    def from_url(cls, url: str) -> SqlStore:
        bare, options = cls.options(url)
        wanted = options.pop("artifacts", None)
        try:
            driver_url = _driver_url(bare)
        except sa.exc.ArgumentError as exc:
            raise ConfigError(
                f"{bare} is not a database URL ({exc}). Write it as sqlite:///path/to/registry.db "
                "or postgresql://user:password@host:5432/database.",
                detail={"url": bare},
            ) from None
        shown = sa.make_url(bare).render_as_string(hide_password=True)
        engine = _engine(driver_url)
        store = cls(shown, engine, wanted or IN_DATABASE, **options)
        try:
            store._prepare(wanted)
        except BaseException:
            store.close()
            raise
        return store

    # -- setting up --------------------------------------------------------------------

    @contextlib.contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        """Turn the driver's errors into tiffin's, saying what to set or check."""
        try:
            yield
        except sa.exc.IntegrityError:
            raise
        except (sa.exc.OperationalError, sa.exc.InterfaceError, sa.exc.ProgrammingError) as exc:
            raise self._translate(exc, action) from exc

    def _translate(self, exc: sa.exc.DBAPIError, action: str) -> TiffinError:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        lowered = reason.lower()
        detail = {"url": self.url, "reason": reason}
        if any(
            text in lowered
            for text in ("password authentication failed", "no password supplied", "role")
        ):
            return ConfigError(
                f"{self.url} refused the login to {action} it ({reason}). Put the user and "
                "password in the URL (postgresql://USER:PASSWORD@HOST/DB) or set PGUSER and "
                "PGPASSWORD.",
                detail=detail,
            )
        if any(
            text in lowered
            for text in ("connection refused", "could not connect", "connection failed", "timeout")
        ):
            return ConfigError(
                f"Cannot reach the database {self.url} to {action} it ({reason}). Check that "
                "the server runs and the host and port in the URL (or PGHOST and PGPORT).",
                detail=detail,
            )
        if "unable to open database file" in lowered:
            return ConfigError(
                f"Cannot open the SQLite registry {self.url} ({reason}). Create the directory "
                "it is in, or fix the path (sqlite:///relative.db, sqlite:////absolute.db).",
                detail=detail,
            )
        if "does not exist" in lowered and "database" in lowered:
            return ConfigError(
                f"{self.url} names a database that does not exist ({reason}). Create it "
                "(createdb NAME) or fix the URL.",
                detail=detail,
            )
        return TiffinError(
            f"The database {self.url} failed to {action} ({describe(exc.orig or exc)}). "
            "Check the server's log; a push or pull that was interrupted can be run again.",
            detail=detail,
        )

    def _prepare(self, wanted: str | None) -> None:
        with self._errors("open"):
            for attempt in range(5):
                try:
                    _meta.create_all(self.engine, checkfirst=True)
                    break
                except sa.exc.DBAPIError as exc:  # another client created them meanwhile
                    text = str(exc.orig).lower()
                    if attempt == 4 or ("already exists" not in text and "duplicate" not in text):
                        raise
            recorded = self._recorded_artifacts()
        if recorded is not None and wanted is not None and recorded != wanted:
            raise ConfigError(
                f"The registry {self.url} keeps its artifacts in {recorded}, not in {wanted}. "
                "Leave 'artifacts=' out of the URL to use the recorded place.",
                detail={"url": self.url, "recorded": recorded, "given": wanted},
            )
        if recorded is not None:
            self.artifacts_url = recorded
            self._recorded = True
        elif wanted is not None and wanted != IN_DATABASE:
            self._record_artifacts()
        if self.artifacts_url != IN_DATABASE:
            self._artifacts = open_remote(self.artifacts_url)
            # the registry decides how files are cut; the artifact store only keeps chunks
            self._artifacts.chunk_size = self.chunk_size

    def _recorded_artifacts(self) -> str | None:
        with self.engine.connect() as connection:
            value = connection.execute(
                sa.select(_settings.c.value).where(_settings.c.key == "artifacts")
            ).scalar()
        return None if value is None else str(value)

    def _record_artifacts(self) -> None:
        if self._recorded:
            return
        with self._errors("write to"), self.engine.begin() as connection:
            values = {"key": "artifacts", "value": self.artifacts_url}
            _upsert(connection, _settings, values, ["key"], update=False)
        recorded = self._recorded_artifacts()
        if recorded != self.artifacts_url:
            raise ConfigError(
                f"Another client set the registry {self.url} to keep its artifacts in "
                f"{recorded}. Run again to use that place.",
                detail={"url": self.url, "recorded": recorded},
            )
        self._recorded = True

    def close(self) -> None:
        if self._artifacts is not None:
            self._artifacts.close()
        self.engine.dispose()

    # -- chunks ------------------------------------------------------------------------

    def has_chunk(self, digest: str, size: int) -> bool:
        if self._artifacts is not None:
            return self._artifacts.has_chunk(digest, size)
        with self._errors("read from"), self.engine.connect() as connection:
            found = connection.execute(
                sa.select(_chunks.c.size).where(_chunks.c.sha256 == digest)
            ).scalar()
        return found == size

    def put_chunk(self, digest: str, data: bytes) -> None:
        if self._artifacts is not None:
            self._artifacts.put_chunk(digest, data)
            return
        self._record_artifacts()
        with self._errors("write to"), self.engine.begin() as connection:
            values = {"sha256": digest, "size": len(data), "data": data}
            _upsert(connection, _chunks, values, ["sha256"], update=False)

    def get_chunk(self, digest: str) -> bytes:
        if self._artifacts is not None:
            return self._artifacts.get_chunk(digest)
        with self._errors("read from"), self.engine.connect() as connection:
            data = connection.execute(
                sa.select(_chunks.c.data).where(_chunks.c.sha256 == digest)
            ).scalar()
        if data is None:
            raise IntegrityError(
                f"Chunk {digest} is missing from {self.url}. Push the item again from a "
                "machine that has it.",
                detail={"url": self.url, "chunk": digest},
            )
        return bytes(data)

    def chunk_list(self, digest: str) -> ChunkList | None:
        with self._errors("read from"), self.engine.connect() as connection:
            text = connection.execute(
                sa.select(_files.c.chunks).where(_files.c.sha256 == digest)
            ).scalar()
        where = f"{self.url} (file {digest})"
        return None if text is None else ChunkList.from_json(str(text), where)

    def put_chunk_list(self, digest: str, chunks: ChunkList) -> None:
        with self._errors("write to"), self.engine.begin() as connection:
            values = {"sha256": digest, "chunks": chunks.to_json().decode()}
            _upsert(connection, _files, values, ["sha256"], update=False)

    # -- the index ---------------------------------------------------------------------

    def _record(self, row: Any) -> Record:
        pushed_at: datetime = row.pushed_at
        if pushed_at.tzinfo is None:  # SQLite keeps no time zone; it was written in UTC
            pushed_at = pushed_at.replace(tzinfo=UTC)
        try:
            manifest = json.loads(row.manifest)
        except ValueError:
            raise IntegrityError(
                f"The record of '{row.name}:{row.version}' in {self.url} is damaged. Push "
                "that version again.",
                detail={"url": self.url, "tag": f"{row.name}:{row.version}"},
            ) from None
        return Record(row.name, row.version, manifest, row.pushed_by, pushed_at)

    def names(self, kind: str) -> list[str]:
        with self._errors("read from"), self.engine.connect() as connection:
            rows = connection.execute(
                sa.select(_items.c.name).where(_items.c.kind == kind).distinct()
            )
            return sorted(str(row.name) for row in rows)

    def records(self, kind: str, name: str) -> list[Record]:
        return self.search(kind, name)

    def record(self, kind: str, name: str, version: str) -> Record | None:
        query = sa.select(_items).where(
            _items.c.kind == kind, _items.c.name == name, _items.c.version == version
        )
        with self._errors("read from"), self.engine.connect() as connection:
            row = connection.execute(query).first()
        return None if row is None else self._record(row)

    def add_record(self, kind: str, record: Record) -> bool:
        manifest = dict(record.manifest)
        labels = manifest.get("labels") or {}
        metadata = manifest.get("metadata") or {}
        try:
            with self._errors("write to"), self.engine.begin() as connection:
                key = connection.execute(
                    _items.insert().values(
                        kind=kind,
                        name=record.name,
                        version=record.version,
                        created_at=record.created_at,
                        pushed_at=record.pushed_at,
                        pushed_by=record.pushed_by,
                        size=record.size,
                        digest=record.digest,
                        manifest=json.dumps(manifest, default=str),
                    )
                ).inserted_primary_key
                assert key is not None
                item_id = key[0]
                if labels:
                    connection.execute(
                        _labels.insert(),
                        [{"item_id": item_id, "key": k, "value": v} for k, v in labels.items()],
                    )
                rows = [
                    {"item_id": item_id, "key": k, "value": metadata_text(v)}
                    for k, v in metadata.items()
                    if len(k) <= 255
                ]
                if rows:
                    connection.execute(_metadata.insert(), rows)
        except sa.exc.IntegrityError:
            return False
        return True

    def search(
        self,
        kind: str,
        name: str | None = None,
        *,
        labels: Mapping[str, str] | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> list[Record]:
        query = sa.select(_items).where(_items.c.kind == kind)
        if name is not None:
            query = query.where(_items.c.name == name)
        for key, value in (labels or {}).items():
            query = query.where(
                sa.exists().where(
                    _labels.c.item_id == _items.c.id,
                    _labels.c.key == key,
                    _labels.c.value == value,
                )
            )
        for key, value in (metadata or {}).items():
            query = query.where(
                sa.exists().where(
                    _metadata.c.item_id == _items.c.id,
                    _metadata.c.key == key,
                    _metadata.c.value == value,
                )
            )
        query = query.order_by(_items.c.name, _items.c.created_at, _items.c.version)
        with self._errors("read from"), self.engine.connect() as connection:
            return [self._record(row) for row in connection.execute(query)]

    def aliases(self, kind: str, name: str) -> dict[str, str]:
        query = (
            sa.select(_aliases.c.alias, _aliases.c.version)
            .where(_aliases.c.kind == kind, _aliases.c.name == name)
            .order_by(_aliases.c.alias)
        )
        with self._errors("read from"), self.engine.connect() as connection:
            return {str(row.alias): str(row.version) for row in connection.execute(query)}

    def set_alias(self, kind: str, name: str, alias: str, version: str) -> None:
        values = {
            "kind": kind,
            "name": name,
            "alias": alias,
            "version": version,
            "updated_by": who(),
            "updated_at": datetime.now(UTC),
        }
        with self._errors("write to"), self.engine.begin() as connection:
            _upsert(connection, _aliases, values, ["kind", "name", "alias"], update=True)

    def remove_alias(self, kind: str, name: str, alias: str) -> bool:
        with self._errors("write to"), self.engine.begin() as connection:
            result = connection.execute(
                _aliases.delete().where(
                    _aliases.c.kind == kind, _aliases.c.name == name, _aliases.c.alias == alias
                )
            )
        return bool(result.rowcount)
