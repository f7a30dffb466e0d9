"""node.runtime.learning: bad peer blobs are rejected with a reason, never used; honest
ones are scored. Real crypto, a real block store, real MNIST (a small slice)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from node.blocks import BlockStore, build_file_dag
from node.config import BehaviourConfig, TrainingConfig
from node.datasets import load_mnist, mnist_available
from node.runtime import learning
from protocol import verdict as verdicts
from protocol.aggregation.rule import AggregationRule
from protocol.codec import encode_state_dict
from protocol.contribution import leave_one_out
from protocol.data import Dataset, to_tensors
from protocol.envelope import generate_keypair, public_key_of
from protocol.errors import DatasetError, EnvelopeError, ModelValidationError, ProtocolError
from protocol.models import build_model
from protocol.state.records import GlobalModel, Update
from protocol.training import Metrics, evaluate

REPO = Path(__file__).resolve().parents[2]
DATA_ROOT = Path(os.environ.get("FL_NODE_DATA_ROOT", REPO.parent / "shared/datasets/mnist"))
TASK = bytes(range(20))
ARCH = "mnist_2nn"


def put(store: BlockStore, blob: bytes) -> str:
    root, blocks = build_file_dag(blob)
    for block in blocks:
        store.put(block.cid, block.data)
    return root


@pytest.fixture
def book(tmp_path: Path) -> learning.ModelBook:
    private, _ = generate_keypair()
    store = BlockStore(tmp_path / "blocks")
    return learning.ModelBook(ARCH, store, learning.TaskCrypto(private, TASK))


def sealed_update(book: learning.ModelBook, state: dict[str, torch.Tensor]) -> str:
    me = public_key_of(book.crypto.private_key)
    return put(book.store, book.crypto.seal(encode_state_dict(state), [me]))


def test_dataset_round_trip_and_strict_decoding() -> None:
    images = np.arange(3 * 28 * 28, dtype=np.uint8).reshape(3, 28, 28)
    dataset = Dataset(images, np.array([1, 2, 3], dtype=np.uint8))
    blob = learning.encode_dataset(dataset)
    back = learning.decode_dataset(blob)
    assert np.array_equal(back.images, images) and list(back.labels) == [1, 2, 3]
    with pytest.raises(DatasetError):
        learning.decode_dataset(blob[:-5])
    with pytest.raises(DatasetError, match="not valid msgpack|must be a map"):
        learning.decode_dataset(b"\xc1garbage")


def test_updates_not_for_us_or_not_finite_are_refused(book: learning.ModelBook) -> None:
    state = build_model(ARCH, seed=1).state_dict()
    good = sealed_update(book, state)
    assert set(book.update(good)) == set(state)

    _, stranger = generate_keypair()
    not_ours = put(book.store, book.crypto.seal(encode_state_dict(state), [stranger]))
    with pytest.raises(EnvelopeError, match="not addressed"):
        book.update(not_ours)

    poisoned = {name: t.clone() for name, t in state.items()}
    next(iter(poisoned.values()))[0] = float("nan")
    with pytest.raises(ModelValidationError, match="NaN"):
        book.update(sealed_update(book, poisoned))

    other_arch = build_model("mnist_cnn", seed=1).state_dict()
    with pytest.raises(ProtocolError):
        book.update(sealed_update(book, other_arch))


@pytest.mark.skipif(not mnist_available(DATA_ROOT, "test"), reason=f"no MNIST under {DATA_ROOT}")
def test_evaluation_accepts_trained_rejects_noise_and_missing(book: learning.ModelBook) -> None:
    test = load_mnist(DATA_ROOT, "test")
    train = Dataset(test.images[:2000], test.labels[:2000])
    validation = Dataset(test.images[2000:2500], test.labels[2000:2500])
    base_cid = put(book.store, learning.initial_model_blob(ARCH, 0))
    base = book.global_state(GlobalModel(base_cid))
    trained = learning.train_update(
        book, base, train, TrainingConfig(lr=0.1), BehaviourConfig(), seed=1
    )
    noise = learning.train_update(
        book, base, train, TrainingConfig(), BehaviourConfig(worker="noise"), seed=1
    )
    workers = (b"\x01" * 20, b"\x02" * 20, b"\x03" * 20)
    candidates = (
        Update(workers[0], sealed_update(book, trained), 2000),
        Update(workers[1], sealed_update(book, noise), 2000),
    )  # the third worker's blob could not be fetched
    result = learning.evaluate_round(book, workers, candidates, base, validation, 500_000)
    assert result.workers == workers
    assert result.accepts == (True, False, False)
    assert result.accuracies[0] is not None and result.accuracies[0] > 0.5
    assert result.accuracies[2] is None
    assert result.scores[1] == result.scores[2] == 0
    assert result.scores[0] > 0  # better than the untrained base it replaces
    assert result.global_accuracy > 500_000
    lied = learning.lie_about(result)
    assert lied.accepts == (False, True, True) and lied.scores != result.scores


def test_the_global_model_is_built_by_the_tasks_rule(tmp_path: Path) -> None:
    """Everyone combines a round's accepted updates by the task's on-chain rule: with
    median:1, one wild update among three does not move the global model."""
    private, _ = generate_keypair()
    store = BlockStore(tmp_path / "blocks")
    crypto = learning.TaskCrypto(private, TASK)
    median = learning.ModelBook(ARCH, store, crypto, AggregationRule.parse("median:1"))
    fedavg = learning.ModelBook(ARCH, store, crypto)
    honest = [build_model(ARCH, seed=s).state_dict() for s in (1, 2)]
    wild = {name: torch.full_like(t, 1e3) for name, t in honest[0].items()}
    updates = tuple(
        Update(bytes([i]) * 20, sealed_update(median, state), 100)
        for i, state in enumerate([*honest, wild], start=1)
    )
    model = GlobalModel(put(store, learning.initial_model_blob(ARCH, 0)), 1, updates)
    by_median = median.global_state(model)
    by_fedavg = fedavg.global_state(model)
    for name, tensor in by_median.items():
        low = torch.minimum(honest[0][name], honest[1][name])
        high = torch.maximum(honest[0][name], honest[1][name])
        assert bool(((tensor >= low) & (tensor <= high)).all()), name  # the middle value
        assert bool((by_fedavg[name] > 300).all()), name  # the mean is pulled to the wild one


def reference_evaluation(
    book: learning.ModelBook,
    workers: tuple[bytes, ...],
    candidates: tuple[Update, ...],
    base: learning.StateDict,
    validation: Dataset,
    threshold: int,
) -> tuple[tuple[int, ...], tuple[bool, ...], int, tuple[float | None, ...]]:
    """A round's verdict built plainly from its parts: every update measured, leave-one-out
    over the qualified ones with the rule, the aggregate measured again for the global
    accuracy. Validators on other machines may compute it this way: any faster path must
    reveal exactly these scores."""
    images, labels = to_tensors(validation)
    by_worker = {u.worker: u for u in candidates}
    states = {w: book.update(by_worker[w].cid) for w in workers if w in by_worker}
    accuracies = [
        evaluate(book.module(states[w]), images, labels).accuracy if w in states else None
        for w in workers
    ]
    qualified = verdicts.qualified_indices(accuracies, threshold)
    chosen = [states[workers[i]] for i in qualified]
    counts = [by_worker[workers[i]].n_samples for i in qualified]
    contributions = leave_one_out(
        chosen, counts, lambda s: evaluate(book.module(dict(s)), images, labels).loss,
        book.rule, baseline=base,
    )  # fmt: skip
    result = book.rule(chosen, counts)
    verdict = verdicts.verdict(
        workers, accuracies, threshold, contributions,
        evaluate(book.module(result), images, labels).accuracy,
    )  # fmt: skip
    return verdict.scores, verdict.accepts, verdict.global_accuracy, tuple(accuracies)


@pytest.mark.skipif(not mnist_available(DATA_ROOT, "test"), reason=f"no MNIST under {DATA_ROOT}")
@pytest.mark.parametrize(("rule", "honest"), [("fedavg", 3), ("median:1", 4), ("fedavg", 1)])
def test_evaluation_reveals_the_scores_of_the_plain_computation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rule: str, honest: int
) -> None:
    """The validator's evaluation measures the aggregate of all qualified updates once
    (leave-one-out's reference and the global model) and still reveals, bit for bit, the
    scores, accepts and accuracies of the plain computation on real MNIST updates."""
    private, _ = generate_keypair()
    book = learning.ModelBook(
        ARCH, BlockStore(tmp_path / "blocks"), learning.TaskCrypto(private, TASK),
        AggregationRule.parse(rule),
    )  # fmt: skip
    test = load_mnist(DATA_ROOT, "test")
    validation = Dataset(test.images[8000:8500], test.labels[8000:8500])
    base = book.global_state(GlobalModel(put(book.store, learning.initial_model_blob(ARCH, 0))))
    states = [
        learning.train_update(
            book, base, Dataset(test.images[i * 1000 : (i + 1) * 1000], test.labels[i * 1000 : (i + 1) * 1000]),
            TrainingConfig(lr=0.05), BehaviourConfig(), seed=i,
        )
        for i in range(honest)
    ]  # fmt: skip
    states.append(
        learning.train_update(
            book, base, Dataset(test.images[:1000], test.labels[:1000]), TrainingConfig(),
            BehaviourConfig(worker="noise"), seed=9,
        )
    )
    workers = tuple(bytes([i + 1]) * 20 for i in range(len(states) + 1))  # the last: missing
    candidates = tuple(
        Update(w, sealed_update(book, s), 1000 + 100 * i)
        for i, (w, s) in enumerate(zip(workers, states, strict=False))
    )
    expected = reference_evaluation(book, workers, candidates, base, validation, 500_000)
    passes = []

    def counted(*args: object, **kwargs: object) -> Metrics:
        passes.append(1)
        return evaluate(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(learning, "evaluate", counted)
    result = learning.evaluate_round(book, workers, candidates, base, validation, 500_000)
    assert (result.scores, result.accepts, result.global_accuracy, result.accuracies) == expected
    assert result.accepts[:honest] == (True,) * honest and result.accepts[honest:] == (False, False)
    assert len(set(result.scores[:honest])) == honest or honest == 1
    # each update, the aggregate, each aggregate without one (one: the base instead)
    assert len(passes) == len(states) + 1 + (honest if honest > 1 else 1)


KEPT_MEMORY_CHECK = """
import sys, torch
from node.runtime import learning
from protocol.models import build_model
from protocol.training import evaluate
torch.manual_seed(0)
torch.set_num_threads(1)
model = build_model("mnist_cnn", seed=0)
images, labels = torch.randn(300, 1, 28, 28), torch.randint(0, 10, (300,))
before = [evaluate(model, images, labels) for _ in range(2)]
applied = learning.keep_freed_memory()
after = [evaluate(model, images, labels) for _ in range(2)]
print(applied, before[0] == before[1] == after[0] == after[1])
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_keeping_freed_memory_changes_no_measured_bit() -> None:
    """In a process of its own (it changes that process's malloc for good): glibc takes the
    setting, and a model's loss, accuracy, precision and recall are the same bits after."""
    ran = subprocess.run(
        [sys.executable, "-c", KEPT_MEMORY_CHECK], cwd=REPO, capture_output=True, text=True,
        timeout=120, check=False,
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.split() == ["True", "True"]


def test_a_model_is_measured_once_for_the_same_bits_and_data(
    book: learning.ModelBook, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A validator measures its accepted aggregate, then the same model as the round's
    global model and as the next round's base: one forward pass. A model or a set that
    differs in one bit is measured anew, and every answer is what a fresh measure gives."""
    from protocol import work as paid_work

    passes: list[int] = []
    fresh = paid_work.measure

    def counted(*args: object, **kwargs: object) -> paid_work.Measured:
        passes.append(1)
        return fresh(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(paid_work, "measure", counted)
    generator = torch.Generator().manual_seed(5)
    images = torch.rand(64, 1, 28, 28, generator=generator)
    labels = torch.randint(0, 10, (64,), generator=generator)
    state = build_model(ARCH, seed=1).state_dict()
    measured = learning.MeasuredModels(keep=2)

    first = measured.measure(book, state, images, labels)
    copy = {name: tensor.clone() for name, tensor in state.items()}
    assert measured.measure(book, copy, images, labels) == first and len(passes) == 1
    with torch.no_grad():
        assert first == fresh(book.module(state), images, labels)

    nudged = {name: tensor.clone() for name, tensor in state.items()}
    name = next(iter(nudged))
    flat = nudged[name].view(-1).view(torch.int32)
    flat[0] ^= 1  # the last bit of one weight
    measured.measure(book, nudged, images, labels)
    other_labels = labels.clone()
    other_labels[0] = (other_labels[0] + 1) % 10
    again = measured.measure(book, state, images, other_labels)
    assert len(passes) == 3
    with torch.no_grad():
        assert again == fresh(book.module(state), images, other_labels)
    # two kept: the first one has gone
    measured.measure(book, state, images, labels)
    assert len(passes) == 4


WARMED_TRAINING_CHECK = """
import sys
import torch
from node.runtime import learning
from protocol.models import build_model
from protocol.training import TrainConfig, train_local
learning.load_optimizer_code()
before = set(sys.modules)
images, labels = torch.rand(8, 1, 28, 28), torch.randint(0, 10, (8,))
train_local(build_model("mnist_2nn"), images, labels, TrainConfig(epochs=1, batch_size=4, lr=0.1))
print(sorted(m for m in set(sys.modules) - before if m.split(".")[0] == "torch"))
"""


def test_the_warm_up_leaves_a_first_training_nothing_of_torch_to_import() -> None:
    """A worker warms up while it waits for its task: in a fresh process, once
    `load_optimizer_code` ran, a whole local training imports no torch module."""
    ran = subprocess.run(
        [sys.executable, "-c", WARMED_TRAINING_CHECK], cwd=REPO, capture_output=True,
        text=True, timeout=120, check=False,
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip() == "[]"
