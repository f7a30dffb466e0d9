"""Model references (built-in, imported from a module outside fl-node, entry point),
architecture specs and their hash, and a node refusing a task whose hash it cannot
reproduce."""

from __future__ import annotations

import dataclasses
import sys
from importlib.metadata import EntryPoint
from pathlib import Path

import numpy as np
import pytest
import torch

import node.models
from node.config import ConfigError, DataConfig, parse_config
from node.datasets import BUILTIN, SourceOptions, load_source
from node.models import (
    architecture_of,
    build_model,
    data_problem,
    model_problem,
    worker_data_problem,
)
from node.runtime.driver import task_problem
from protocol.codec import decode_state_dict, encode_state_dict
from protocol.data import CIFAR10_SPEC, Dataset, decode_dataset, encode_dataset
from protocol.errors import CodecError
from protocol.models import (
    ENTRY_POINT_GROUP,
    ArchitectureSpec,
    ModelReference,
    ModelReferenceError,
)
from protocol.training import TrainConfig, evaluate, train_local

ZERO = bytes(32)
CONFIG = {
    "node": {"role": "worker", "data_dir": "data"},
    "chain": {"rpc_url": "embedded", "private_key_file": "k",
              "registry": "0x00000000000000000000000000000000000000aa"},
}


def test_reference_syntax() -> None:
    parsed = ModelReference.parse(" tabular_mlp( features = 30,classes=2 ) ")
    assert parsed.builtin and parsed.kwargs == {"features": 30, "classes": 2}
    assert str(parsed) == "tabular_mlp(classes=2, features=30)"
    assert ModelReference.parse("my_pkg.nets:make(width=3)").imported
    for bad in ("a b", "tabular_mlp(features=3.5)", "x(features=1, features=2)", "m:(", "x" * 300,
                "mnist_cnn(depth=99999999)"):
        with pytest.raises(ModelReferenceError):
            ModelReference.parse(bad)


def test_builtin_sizes_and_hash_pinning() -> None:
    assert architecture_of("cifar_cnn").parameter_count() == 620_362
    mlp = architecture_of("tabular_mlp(features=30, classes=2)")
    assert [t[2] for t in mlp.tensors] == [(64, 30), (64,), (64, 64), (64,), (2, 64), (2,)]
    # The hash follows the architecture: any shape change moves it, the same reference
    # (however spelled) does not.
    wider = architecture_of("tabular_mlp(features=31, classes=2)")
    assert mlp.hash() != wider.hash() and len(mlp.hash()) == 32
    assert architecture_of("tabular_mlp(classes=2,features=30)").hash() == mlp.hash()
    assert architecture_of("mnist_cnn").hash() != architecture_of("mnist_2nn").hash()


def test_codec_decodes_against_the_spec_and_its_bound() -> None:
    spec = architecture_of("tabular_mlp(features=30, classes=2)")
    state = build_model("tabular_mlp(features=30, classes=2)", seed=1).state_dict()
    blob = encode_state_dict(state)
    decoded = decode_state_dict(blob, spec.codec_spec())
    assert all(torch.equal(decoded[k], state[k]) for k in state)
    other = architecture_of("tabular_mlp(features=31, classes=2)").codec_spec()
    with pytest.raises(CodecError, match="shape .* expected"):
        decode_state_dict(blob, other)
    assert spec.codec_spec().max_encoded_size() < len(blob) + 1024
    with pytest.raises(CodecError, match="over the"):
        decode_state_dict(blob + b"\0" * 2048, spec.codec_spec())


def test_model_from_a_module_outside_fl_node_trains(plugins: Path) -> None:
    reference = "fl_test_plugins:make_tiny(features=6, classes=4)"
    first, second = build_model(reference, seed=3), build_model(reference, seed=3)
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(),
                                                 second.state_dict().values(), strict=True))
    data = load_source("fl_test_plugins:load_blobs", "train", SourceOptions(progress=None))
    assert data.spec is not None and data_problem(reference, data.spec, "blobs") is None
    x, y = torch.from_numpy(data.images), torch.from_numpy(data.labels.astype(np.int64))
    before = evaluate(first, x, y).accuracy
    train_local(first, x, y, TrainConfig(epochs=3, batch_size=20, lr=0.1, seed=0))
    after = evaluate(first, x, y).accuracy
    assert after > 0.9 and after > before + 0.2


def test_bad_plugin_references_are_named(plugins: Path) -> None:
    trusted = ("fl_test_plugins:not_a_model", "fl_test_plugins:make_tiny", "no_such_models_pkg:make")
    assert "not a torch nn.Module" in str(model_problem("fl_test_plugins:not_a_model", ZERO, trusted))
    assert "bad arguments" in str(model_problem("fl_test_plugins:make_tiny(depth=2)", ZERO, trusted))
    missing = model_problem("no_such_models_pkg:make", ZERO, trusted)
    assert missing is not None and "cannot import 'no_such_models_pkg'" in missing
    assert missing.endswith("install the package that defines it, or put it on PYTHONPATH; "
                            "or pick another task")  # not "upgrade fl-node": it is not ours


def test_a_task_cannot_make_a_node_import_and_call_what_it_names(
    plugins: Path, tmp_path: Path
) -> None:
    """The cheapest attack on a model reference read from the chain: name any installed
    callable. Only factories the node's own config lists are imported."""
    (tmp_path / "fl_test_trap.py").write_text("def boom(**kwargs):\n    raise SystemExit(1)\n")
    sys.path.insert(0, str(tmp_path))
    try:
        for hostile in ("os:abort", "fl_test_trap:boom", "builtins:exit"):
            problem = model_problem(hostile)
            assert problem is not None and "does not trust" in problem
            assert "[node] trusted_models" in problem
        assert "fl_test_trap" not in sys.modules  # not even imported
    finally:
        sys.path.remove(str(tmp_path))
    # Trusted by target, whatever its arguments; a requester trusts its own [task] model.
    reference = "fl_test_plugins:make_tiny(features=6, classes=4)"
    assert model_problem(reference, ZERO, ("fl_test_plugins:make_tiny",)) is None
    worker = parse_config(
        {**CONFIG, "node": {**CONFIG["node"], "trusted_models": ["fl_test_plugins:make_tiny"]}},
        tmp_path / "w.toml",
    )
    assert worker.trusted_models == ("fl_test_plugins:make_tiny",)
    requester = parse_config(
        {**CONFIG, "node": {**CONFIG["node"], "role": "requester"}, "task": {"model": reference}},
        tmp_path / "r.toml",
    )
    assert model_problem(reference, ZERO, requester.trusted_models) is None
    with pytest.raises(ConfigError, match="trusted_models must be \"package.module:factory\""):
        parse_config({**CONFIG, "node": {**CONFIG["node"], "trusted_models": ["mnist_cnn"]}},
                     tmp_path / "x.toml")


def test_entry_point_models(monkeypatch: pytest.MonkeyPatch, plugins: Path) -> None:
    point = EntryPoint("tiny", "fl_test_plugins:make_tiny", ENTRY_POINT_GROUP)

    def points(group: str) -> list[EntryPoint]:
        return [point] if group == ENTRY_POINT_GROUP else []

    monkeypatch.setattr(node.models, "entry_points", points)
    assert architecture_of("tiny(features=6, classes=4)") == architecture_of(
        "fl_test_plugins:make_tiny(features=6, classes=4)"
    )
    unknown = model_problem("resnet50")
    assert unknown is not None and "model 'resnet50' is not one this node knows" in unknown
    assert ENTRY_POINT_GROUP in unknown


def test_a_task_pinning_another_architecture_is_refused(plugins: Path) -> None:
    """The requester pinned the hash of its version of the factory; this node has another
    version installed under the same name: refused, both hashes named."""
    reference = "fl_test_plugins:make_tiny"
    requester_hash = ArchitectureSpec.of(build_model("fl_test_plugins:make_wider")).hash()
    ours = architecture_of(reference).hash()
    trusted = ("fl_test_plugins:make_tiny",)
    problem = model_problem(reference, requester_hash, trusted)
    assert problem is not None
    assert f"pins architecture spec hash 0x{requester_hash.hex()}" in problem
    assert f"this node builds 0x{ours.hex()}" in problem
    assert model_problem(reference, ours, trusted) is None
    assert model_problem(reference, bytes(32), trusted) is None  # not pinned


def test_worker_data_checked_against_the_task_model_before_deposit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "rows.npz"
    np.savez(path, x=np.zeros((10, 6), np.float32), y=np.arange(10) % 4)
    config = DataConfig(source=str(path))
    assert worker_data_problem(config, "tabular_mlp(features=6, classes=4)") is None
    wrong = worker_data_problem(config, "mnist_2nn")
    assert wrong is not None and str(path) in wrong and "do not fit model 'mnist_2nn'" in wrong
    assert "point [data] source at samples this model takes" in wrong
    # Not local, and its mirror unreachable (a closed port here: tests never go online).
    offline = dataclasses.replace(BUILTIN["kmnist"], mirrors=("http://127.0.0.1:9/",))
    monkeypatch.setitem(BUILTIN, "kmnist", offline)
    unreachable = worker_data_problem(DataConfig(source="kmnist", root=tmp_path), "mnist_cnn")
    assert unreachable is not None and "dataset 'kmnist'" in unreachable
    assert "51467d22d8cc72929e2a028a0428f2086b092bb31cfb79c69cc0a90ce135fde4" in unreachable
    assert "\n" not in unreachable and "\n" not in wrong  # a node's stop reason is one line


def test_the_node_task_check_refuses_a_spec_hash_it_cannot_reproduce() -> None:
    """What a node runs on a task's on-chain parameters before it deposits anything."""
    ours = architecture_of("mnist_2nn").hash()
    theirs = architecture_of("mnist_cnn").hash()
    assert task_problem("mnist_2nn", "fedavg", ours) is None
    problem = task_problem("mnist_2nn", "fedavg", theirs)
    assert problem is not None and "\n" not in problem  # one line, naming both hashes
    assert f"0x{theirs.hex()}" in problem and f"0x{ours.hex()}" in problem
    untrusted = task_problem("fl_test_plugins:make_tiny", "fedavg", bytes(32))
    assert untrusted is not None and "does not trust" in untrusted


def test_data_check_is_kept_while_a_node_polls_for_tasks(
    plugins: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import fl_test_plugins

    config = DataConfig(source="fl_test_plugins:load_counted")
    reference = "tabular_mlp(features=6, classes=4)"
    before = len(fl_test_plugins.LOADS)
    for _ in range(3):
        assert worker_data_problem(config, reference) is None
    assert len(fl_test_plugins.LOADS) == before + 1  # read once, not on every poll
    # A failure is asked again once the retry interval passed (files may have been copied in).
    missing = DataConfig(source=str(tmp_path / "later.npz"))
    assert "no such file" in str(worker_data_problem(missing, reference))
    np.savez(tmp_path / "later.npz", x=np.zeros((4, 6), np.float32), y=np.arange(4))
    assert worker_data_problem(missing, reference) is not None  # still within the interval
    monkeypatch.setattr(node.models, "RETRY_DATA_CHECK_S", 0.0)
    assert worker_data_problem(missing, reference) is None


def test_a_validation_set_that_does_not_fit_the_task_model_is_named() -> None:
    colour = Dataset(np.zeros((2, 3, 32, 32), np.uint8), np.array([0, 1]), CIFAR10_SPEC)
    back = decode_dataset(encode_dataset(colour))  # what a validator receives
    problem = data_problem("mnist_2nn", back, "the requester's validation set")
    assert problem is not None
    assert problem.startswith("the requester's validation set: samples of shape (3, 32, 32)")
    assert data_problem("cifar_cnn", back, "the requester's validation set") is None
