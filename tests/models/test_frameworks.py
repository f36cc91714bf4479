"""Framework handlers: round trips through the store with real models, detection, plugins."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
import textwrap
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
import xgboost
from skl2onnx import to_onnx
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from tiffin.exceptions import FrameworkError, InvalidArgument
from tiffin.models import ModelStore, frameworks
from tiffin.models.frameworks import pickle as pickle_framework

RNG = np.random.default_rng(0)
X = RNG.normal(size=(60, 4)).astype(np.float32)
Y = (X[:, 0] + X[:, 1] > 0).astype(np.int64)

HEAVY_MODULES = ("numpy", "onnx", "onnxruntime", "sklearn", "torch", "xgboost")


class TinyNet(torch.nn.Module):
    """A network with parameters and buffers (batch norm), whose output depends on the mode."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(4, 3)
        self.norm = torch.nn.BatchNorm1d(3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.norm(self.linear(x)))


def trained_net() -> TinyNet:
    torch.manual_seed(0)
    net = TinyNet()
    net.train()
    net(torch.from_numpy(X))  # moves the batch norm's running statistics
    return net


def torchscript(fn: Callable[[], Any]) -> Any:
    """Run a TorchScript call; recent torch deprecates TorchScript with a warning."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", r"`torch\.jit", DeprecationWarning)
        return fn()


def assert_state_equal(got: torch.nn.Module, want: torch.nn.Module) -> None:
    got_state, want_state = got.state_dict(), want.state_dict()
    assert list(got_state) == list(want_state)
    for key, tensor in want_state.items():
        assert torch.equal(got_state[key], tensor), key


# -- scikit-learn ----------------------------------------------------------------------


def test_sklearn_round_trip(store: ModelStore) -> None:
    clf = LogisticRegression().fit(X, Y)

    model = store.save("clf", clf)

    info = model.info.framework
    assert (info.name, info.version) == ("sklearn", importlib.metadata.version("scikit-learn"))
    assert info.options == {}
    assert {k: v.model_dump() for k, v in model.info.signatures.items()} == {
        "predict": {"batchable": True, "batch_dim": 0},
        "predict_proba": {"batchable": True, "batch_dim": 0},
    }
    loaded = store.get("clf:latest").load()
    assert type(loaded) is LogisticRegression
    np.testing.assert_array_equal(loaded.predict(X), clf.predict(X))
    np.testing.assert_array_equal(loaded.predict_proba(X), clf.predict_proba(X))


def test_sklearn_pipeline_with_large_arrays_goes_out_of_band(store: ModelStore) -> None:
    scaler = StandardScaler().fit(X)
    scaler.extra_table_ = RNG.normal(size=(400, 400))  # 1.2 MiB, an attribute like any other
    pipeline = make_pipeline(scaler, LogisticRegression()).fit(X, Y)

    model = store.save("pipe", pipeline)

    assert model.info.framework.name == "sklearn"
    assert len(model.info.framework.options["buffers"]) == 1
    assert "buffers.bin" in model.info.files
    loaded = model.load()
    np.testing.assert_array_equal(loaded[0].extra_table_, scaler.extra_table_)
    np.testing.assert_array_equal(loaded.predict(X), pipeline.predict(X))
    assert set(model.info.signatures) == {"predict", "predict_proba"}
    assert set(store.save("scaler", StandardScaler().fit(X)).info.signatures) == {"transform"}


def test_sklearn_load_takes_no_arguments(store: ModelStore) -> None:
    model = store.save("clf", LogisticRegression().fit(X, Y))

    with pytest.raises(InvalidArgument) as caught:
        model.load(device="cuda")

    assert caught.value.message == (
        "Loading a scikit-learn model takes no arguments, but got device. Call load() without them."
    )


# -- torch -----------------------------------------------------------------------------


@pytest.mark.parametrize("training", [False, True])
def test_torch_module_round_trip(store: ModelStore, training: bool) -> None:
    net = trained_net().train(training)

    model = store.save("net", net)

    info = model.info.framework
    assert (info.name, info.version) == ("torch", importlib.metadata.version("torch"))
    assert info.options == {"format": "module"}
    assert model.info.signatures["__call__"].model_dump() == {"batchable": False, "batch_dim": 0}
    loaded = store.get("net").load()
    assert type(loaded) is TinyNet
    assert loaded.training is training
    assert [m.training for m in loaded.modules()] == [training] * 3
    assert_state_equal(loaded, net)
    with torch.no_grad():
        assert torch.equal(loaded(torch.from_numpy(X)), net(torch.from_numpy(X)))


def test_torch_torchscript_round_trip(store: ModelStore) -> None:
    net = trained_net().eval()
    scripted = torchscript(lambda: torch.jit.script(net))

    model = torchscript(lambda: store.save("scripted", scripted))

    assert model.info.framework.name == "torch"
    assert model.info.framework.options == {"format": "torchscript"}
    loaded = torchscript(lambda: model.load(map_location="cpu"))
    assert isinstance(loaded, torch.jit.ScriptModule)
    assert loaded.training is False
    assert_state_equal(loaded, net)
    with torch.no_grad():
        assert torch.equal(loaded(torch.from_numpy(X)), net(torch.from_numpy(X)))


def test_torch_state_dict_by_name(store: ModelStore) -> None:
    state = trained_net().state_dict()

    model = store.save("weights", state, framework="torch")

    assert model.info.framework.options == {"format": "object"}
    loaded = model.load()
    assert list(loaded) == list(state)
    assert all(torch.equal(loaded[key], tensor) for key, tensor in state.items())


def test_torch_load_rejects_unknown_arguments(store: ModelStore) -> None:
    model = store.save("net", trained_net())

    with pytest.raises(InvalidArgument) as caught:
        model.load(map_locaton="cpu")

    assert caught.value.message == (
        "Loading a torch model takes map_location=, but got map_locaton. "
        "Remove the other arguments."
    )


def test_torch_tensor_is_not_a_module_so_pickle_saves_it(store: ModelStore) -> None:
    tensor = torch.arange(6.0)

    model = store.save("tensor", tensor)

    assert model.info.framework.name == "pickle"
    assert torch.equal(model.load(), tensor)


# -- onnx ------------------------------------------------------------------------------


def test_onnx_round_trip(store: ModelStore) -> None:
    clf = LogisticRegression().fit(X, Y)
    proto = to_onnx(clf, X[:1], options={"zipmap": False})

    model = store.save("clf-onnx", proto)

    info = model.info.framework
    assert (info.name, info.version) == ("onnx", importlib.metadata.version("onnx"))
    assert info.options == {
        "ir_version": proto.ir_version,
        "opset": {entry.domain: entry.version for entry in proto.opset_import},
    }
    assert set(model.info.signatures) == {"run"}
    session = model.load()
    assert isinstance(session, onnxruntime.InferenceSession)
    assert session.get_providers() == ["CPUExecutionProvider"]
    labels, probabilities = session.run(None, {session.get_inputs()[0].name: X})
    np.testing.assert_array_equal(labels, clf.predict(X))
    np.testing.assert_allclose(probabilities, clf.predict_proba(X), rtol=1e-5, atol=1e-6)
    raw = model.load(raw=True)
    assert isinstance(raw, onnx.ModelProto)
    assert raw == proto


def test_onnx_session_options_and_unavailable_provider(store: ModelStore) -> None:
    clf = LogisticRegression().fit(X, Y)
    model = store.save("clf-onnx", to_onnx(clf, X[:1], options={"zipmap": False}))
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1

    session = model.load(providers=["CPUExecutionProvider"], sess_options=options)

    assert session.get_session_options().intra_op_num_threads == 1
    with pytest.raises(InvalidArgument) as caught:
        model.load(providers=["NoSuchExecutionProvider"])
    available = ", ".join(onnxruntime.get_available_providers())
    assert caught.value.message == (
        "The ONNX Runtime execution provider(s) NoSuchExecutionProvider are not available in "
        f"this installation (available: {available}). Install the onnxruntime build that "
        "provides them, or choose from the available ones."
    )
    with pytest.raises(InvalidArgument, match=r"^raw=True returns the onnx.ModelProto"):
        model.load(raw=True, providers=["CPUExecutionProvider"])


# -- xgboost ---------------------------------------------------------------------------


def test_xgboost_booster_round_trip(store: ModelStore) -> None:
    booster = xgboost.train(
        {"max_depth": 2, "nthread": 1}, xgboost.DMatrix(X, label=Y), num_boost_round=4
    )

    model = store.save("booster", booster)

    info = model.info.framework
    assert (info.name, info.version) == ("xgboost", xgboost.__version__)
    assert info.options == {"class": "xgboost.core:Booster"}
    assert list(model.info.files) == ["model.ubj"]
    loaded = model.load()
    assert type(loaded) is xgboost.Booster
    np.testing.assert_array_equal(
        loaded.predict(xgboost.DMatrix(X)), booster.predict(xgboost.DMatrix(X))
    )


def test_xgboost_classifier_round_trip(store: ModelStore) -> None:
    clf = xgboost.XGBClassifier(n_estimators=4, max_depth=2, n_jobs=1).fit(X, Y)

    model = store.save("xgb", clf)

    assert model.info.framework.name == "xgboost"
    assert model.info.framework.options == {"class": "xgboost.sklearn:XGBClassifier"}
    assert {k: v.batchable for k, v in model.info.signatures.items()} == {
        "predict": True,
        "predict_proba": True,
    }
    loaded = model.load()
    assert type(loaded) is xgboost.XGBClassifier
    np.testing.assert_array_equal(loaded.predict(X), clf.predict(X))
    np.testing.assert_array_equal(loaded.predict_proba(X), clf.predict_proba(X))


class ClippedRegressor(xgboost.XGBRegressor):
    """A user's subclass of a wrapper: the same class must come back."""

    def predict_clipped(self, x: np.ndarray) -> np.ndarray:
        return np.clip(self.predict(x), 0.0, 1.0)  # type: ignore[no-any-return]


def test_xgboost_subclass_round_trip_and_local_class_refused(store: ModelStore) -> None:
    reg = ClippedRegressor(n_estimators=2, n_jobs=1).fit(X, Y)

    model = store.save("clipped", reg)

    assert model.info.framework.options == {"class": f"{__name__}:ClippedRegressor"}
    loaded = model.load()
    assert type(loaded) is ClippedRegressor
    np.testing.assert_array_equal(loaded.predict_clipped(X), reg.predict_clipped(X))

    class Local(xgboost.XGBRegressor):
        pass

    with pytest.raises(InvalidArgument) as caught:
        store.save("local", Local(n_estimators=1, n_jobs=1).fit(X, Y))
    assert caught.value.message == (
        "The class test_xgboost_subclass_round_trip_and_local_class_refused.<locals>.Local is "
        "defined inside a function, so it cannot be created again when the model is loaded. "
        "Define it at module level."
    )


@pytest.mark.parametrize(
    ("recorded", "message"),
    [
        (
            "subprocess:Popen",
            "The options of this XGBoost model name subprocess:Popen, which is not a subclass "
            "of xgboost.Booster or xgboost.XGBModel, so it is not loaded. The model.yaml was "
            "edited or damaged; save the model again.",
        ),
        (
            "os.system",
            "The options of this XGBoost model name the class 'os.system', which is not of the "
            "form 'module:qualname'. The model.yaml was edited or damaged; save the model again.",
        ),
        (
            "xgboost.core:NoSuchBooster",
            "The XGBoost model's class xgboost.core:NoSuchBooster cannot be imported (module "
            "'xgboost.core' has no attribute 'NoSuchBooster'). Install the code that defines it "
            "where the model is loaded.",
        ),
    ],
)
def test_xgboost_refuses_classes_it_does_not_know(
    store: ModelStore, recorded: str, message: str
) -> None:
    booster = xgboost.train({"nthread": 1}, xgboost.DMatrix(X, label=Y), num_boost_round=1)
    model = store.save("booster", booster)

    with pytest.raises(FrameworkError) as caught:
        frameworks.get("xgboost").load(model.path, {"class": recorded})

    assert caught.value.message == message


def test_xgboost_by_name_refuses_other_objects(store: ModelStore) -> None:
    with pytest.raises(InvalidArgument) as caught:
        store.save("nope", {"a": 1}, framework="xgboost")

    assert caught.value.message == (
        "The 'xgboost' framework saves xgboost.Booster and its scikit-learn wrappers "
        "(XGBClassifier, XGBRegressor, ...), not dict. Pass another framework=, or leave it "
        "out to have one detected."
    )
    assert store.list() == []


# -- detection and the generic pickle handler ------------------------------------------


def test_detection_picks_the_most_specific_handler() -> None:
    clf = LogisticRegression().fit(X, Y)
    cases = {
        "sklearn": clf,
        "xgboost": xgboost.XGBRegressor(),  # also a sklearn.base.BaseEstimator
        "torch": TinyNet(),
        "onnx": to_onnx(clf, X[:1]),
        "pickle": torch.zeros(2),  # torch, but not a module
    }
    assert {name: frameworks.detect(obj).name for name, obj in cases.items()} == {
        name: name for name in cases
    }


def test_pickle_arrays_in_and_out_of_band(store: ModelStore) -> None:
    big = RNG.normal(size=(512, 512))  # 2 MiB
    obj: dict[str, Any] = {
        "big": big,
        "small": np.arange(10, dtype=np.int32),
        "view": big[::2, ::3],  # not contiguous: pickled in band
        "fortran": np.asfortranarray(RNG.normal(size=(300, 600))),  # 1.4 MiB
        "label": "weights",
    }

    model = store.save("arrays", obj)

    info = model.info.framework
    assert (info.name, info.version) == ("pickle", None)
    spans = info.options["buffers"]
    assert [length for _, length in spans] == [big.nbytes, obj["fortran"].nbytes]
    assert all(offset % 64 == 0 for offset, _ in spans)
    assert set(model.info.files) == {"model.pkl", "buffers.bin"}
    assert model.info.files["model.pkl"].size < pickle_framework.OUT_OF_BAND_MIN
    loaded = model.load()
    assert set(loaded) == set(obj)
    for key in ("big", "small", "view", "fortran"):
        np.testing.assert_array_equal(loaded[key], obj[key])
        assert loaded[key].dtype == obj[key].dtype
        assert loaded[key].flags.writeable
    assert loaded["fortran"].flags.f_contiguous
    assert loaded["label"] == "weights"
    store.verify(model.tag)


def test_unpicklable_object_leaves_the_store_empty(store: ModelStore, home: Path) -> None:
    obj = {"big": np.zeros(1 << 18), "fn": lambda x: x}  # the array is written first

    with pytest.raises(FrameworkError) as caught:
        store.save("bad", obj)

    message = caught.value.message
    # The middle is Python's own wording, which changes between versions.
    assert message.startswith("The 'pickle' framework could not save the model 'bad': ")
    assert "<lambda>" in message
    assert message.endswith(
        "Pass framework= to choose another handler, or make the object serialisable by this one."
    )
    assert store.list() == []
    assert list((home / "models" / ".staging").iterdir()) == []


def test_unknown_framework_lists_the_known_ones(store: ModelStore) -> None:
    with pytest.raises(InvalidArgument) as caught:
        store.save("m", [1, 2], framework="nope")

    known = frameworks.available()
    assert {"files", "onnx", "pickle", "sklearn", "torch", "xgboost"} <= set(known)
    assert caught.value.message == (
        f"Unknown framework 'nope'. Known frameworks: {', '.join(known)}. A plugin adds one "
        "under the 'tiffin.frameworks' entry point group."
    )
    assert store.list() == []


# -- imports ---------------------------------------------------------------------------


def run_python(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def test_handlers_import_no_framework() -> None:
    result = run_python(
        """
        import sys
        from tiffin.models import frameworks
        for name in frameworks.available():
            frameworks.get(name).version()
        assert frameworks.detect({"a": [1.0]}).name == "pickle"
        print(" ".join(sorted(set(sys.argv[1:]) & set(sys.modules))))
        """,
        *HEAVY_MODULES,
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""


@pytest.mark.parametrize(
    ("blocked", "make", "message"),
    [
        (
            "sklearn",
            lambda: LogisticRegression().fit(X, Y),
            "The package 'sklearn' is needed to load a scikit-learn model but is not "
            "installed. Run: pip install 'tiffin[sklearn]'",
        ),
        (
            "torch",
            trained_net,
            "The package 'torch' is needed to load a torch model but is not installed. "
            "Run: pip install 'tiffin[torch]'",
        ),
        (
            "onnxruntime",
            lambda: to_onnx(LogisticRegression().fit(X, Y), X[:1]),
            "The package 'onnxruntime' is needed to run an ONNX model but is not installed. "
            "Run: pip install 'tiffin[onnx]'",
        ),
        (
            "xgboost",
            lambda: xgboost.XGBRegressor(n_estimators=1, n_jobs=1).fit(X, Y),
            "The package 'xgboost' is needed to load an XGBoost model but is not installed. "
            "Run: pip install 'tiffin[xgboost]'",
        ),
    ],
)
def test_missing_framework_package_names_the_extra(
    store: ModelStore, home: Path, blocked: str, make: Callable[[], Any], message: str
) -> None:
    model = store.save("model", make())

    result = run_python(
        """
        import sys
        sys.modules[sys.argv[1]] = None  # makes "import <module>" fail, as if not installed
        from pathlib import Path
        from tiffin.exceptions import MissingDependency
        from tiffin.models import ModelStore
        try:
            ModelStore(Path(sys.argv[2])).get(sys.argv[3]).load()
        except MissingDependency as exc:
            print(exc.message)
        """,
        blocked,
        str(home),
        str(model.tag),
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == message


# -- plugins ---------------------------------------------------------------------------

PLUGIN_SOURCE = """
from __future__ import annotations

import json

from tiffin.models import Framework


class Counter:
    def __init__(self, count: int) -> None:
        self.count = count


class CounterFramework(Framework):
    name = "counter"
    modules = ("tiffin_counter",)
    package = "tiffin-counter"

    def save(self, obj, target):
        with target.open("count.json") as out:
            out.write(json.dumps({"count": obj.count}).encode())
        return {"unit": "items"}

    def load(self, path, options, **kwargs):
        return Counter(json.loads((path / "count.json").read_text())["count"])


class NotAFramework:
    pass
"""


@pytest.fixture
def install_plugin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[[str, str, dict[str, str]], None]]:
    """Install a distribution with modules and ``tiffin.frameworks`` entry points into a
    directory on ``sys.path``, the way pip would lay out its metadata."""
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    written: list[str] = []

    def install(distribution: str, module: str, entry_points: dict[str, str]) -> None:
        module_name = distribution.replace("-", "_")
        (site / f"{module_name}.py").write_text(module, encoding="utf-8")
        info = site / f"{module_name}-0.1.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: {distribution}\nVersion: 0.1\n", encoding="utf-8"
        )
        lines = "".join(f"{name} = {value}\n" for name, value in entry_points.items())
        (info / "entry_points.txt").write_text(
            f"[{frameworks.ENTRY_POINT_GROUP}]\n{lines}", encoding="utf-8"
        )
        written.append(module_name)
        frameworks.refresh()

    yield install
    for module_name in written:
        sys.modules.pop(module_name, None)
    frameworks.refresh()


def test_plugin_saves_and_loads_by_name_and_by_detection(
    store: ModelStore, install_plugin: Callable[[str, str, dict[str, str]], None]
) -> None:
    install_plugin("tiffin-counter", PLUGIN_SOURCE, {"counter": "tiffin_counter:CounterFramework"})
    import tiffin_counter  # type: ignore[import-not-found]

    assert "counter" in frameworks.available()
    by_name = store.save("by-name", tiffin_counter.Counter(3), framework="counter")
    detected = store.save("detected", tiffin_counter.Counter(5))

    for model, count in ((by_name, 3), (detected, 5)):
        info = model.info.framework
        assert (info.name, info.version, info.options) == ("counter", "0.1", {"unit": "items"})
        assert list(model.info.files) == ["count.json"]
        loaded = store.get(str(model.tag)).load()
        assert type(loaded) is tiffin_counter.Counter
        assert loaded.count == count


def test_broken_plugins_raise_framework_error_and_detection_skips_them(
    store: ModelStore, install_plugin: Callable[[str, str, dict[str, str]], None]
) -> None:
    install_plugin(
        "tiffin-broken", "raise ImportError('needs libcounter.so')\n", {"broken": "tiffin_broken:X"}
    )
    install_plugin(
        "tiffin-counter",
        PLUGIN_SOURCE,
        {"notone": "tiffin_counter:NotAFramework", "counter": "tiffin_counter:CounterFramework"},
    )

    with pytest.raises(FrameworkError) as failed_import:
        frameworks.get("broken")
    with pytest.raises(FrameworkError) as not_a_framework:
        store.save("m", [1], framework="notone")

    assert failed_import.value.message == (
        "The framework plugin 'broken' (tiffin_broken:X) failed to import: needs "
        "libcounter.so. Reinstall the package that provides it."
    )
    assert not_a_framework.value.message == (
        "The framework plugin 'notone' (tiffin_counter:NotAFramework) is not a subclass of "
        "tiffin.models.Framework. Fix the plugin's entry point."
    )
    assert store.list() == []
    assert store.save("fine", [1]).info.framework.name == "pickle"


def test_every_handler_refuses_load_arguments_it_does_not_take(store: ModelStore) -> None:
    pickled = store.save("plain", {"w": [1, 2]})
    with pytest.raises(InvalidArgument) as caught:
        pickled.load(mmap=True)
    assert caught.value.message == (
        "Loading a pickled model takes no arguments, but got mmap. Call load() without them."
    )
    with store.create("folder") as builder:
        (builder.path / "a.txt").write_text("a")
    assert builder.model is not None
    with pytest.raises(InvalidArgument) as caught:
        builder.model.load(extract=True)
    assert caught.value.message == (
        "Loading a directory model takes no arguments, but got extract. Call load() without them."
    )
    clf = LogisticRegression().fit(np.array([[0.0], [1.0]]), np.array([0, 1]))
    onnx_model = store.save("lr-onnx", to_onnx(clf, np.zeros((1, 1), dtype=np.float32)))
    with pytest.raises(InvalidArgument) as caught:
        onnx_model.load(provider=["CPUExecutionProvider"])
    assert caught.value.message == (
        "Loading an ONNX model takes providers=, sess_options= and raw=, but got provider. "
        "Remove the other arguments."
    )
    assert caught.value.detail == {"framework": "onnx", "arguments": ["provider"]}
