"""The launcher's own check of each round's global model on the dataset's test split.

The model file is a node's own output (the codec format, never pickle) and is decoded
against the task's architecture with the codec's size bound, as a peer's blob would be.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch

from node.datasets import load_builtin
from node.models import build_model
from protocol.codec import ModelSpec, check_finite, decode_state_dict
from protocol.data import to_tensors
from protocol.training import Metrics, evaluate

__all__ = ["TestSetEvaluator"]


class TestSetEvaluator:
    """Loads a built-in dataset's test split once; evaluates encoded models of one
    architecture."""

    __test__ = False  # not a pytest class

    def __init__(
        self, data_root: Path, model: str = "mnist_cnn", threads: int = 1, dataset: str = "mnist"
    ) -> None:
        self.model_name = model
        self.spec = ModelSpec.of(build_model(model))
        self.images, self.labels = to_tensors(load_builtin(dataset, "test", data_root))
        self.threads = threads

    def evaluate_blob(self, blob: bytes) -> Metrics:
        return self.evaluate_state(decode_state_dict(blob, self.spec))

    def evaluate_state(self, state: Mapping[str, torch.Tensor]) -> Metrics:
        check_finite(state)
        model = build_model(self.model_name)
        model.load_state_dict(state)
        return self._evaluate(model)

    def evaluate_file(self, path: Path) -> Metrics:
        limit = self.spec.max_encoded_size()
        with open(path, "rb") as handle:
            blob = handle.read(limit + 1)  # decode_state_dict rejects anything over the bound
        return self.evaluate_blob(blob)

    def evaluate_initial(self, seed: int) -> Metrics:
        return self._evaluate(build_model(self.model_name, seed=seed))

    def _evaluate(self, model: torch.nn.Module) -> Metrics:
        previous = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        try:
            return evaluate(model, self.images, self.labels)
        finally:
            torch.set_num_threads(previous)
