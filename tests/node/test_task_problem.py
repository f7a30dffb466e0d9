"""A node checks a task's model and aggregation rule before it deposits anything."""

from __future__ import annotations

import pytest

from node.runtime.driver import task_problem


@pytest.mark.parametrize(("model", "rule"), [("mnist_cnn", "fedavg"), ("mnist_2nn", "multi_krum:2")])
def test_a_task_we_can_run_has_no_problem(model: str, rule: str) -> None:
    assert task_problem(model, rule) is None


@pytest.mark.parametrize(
    ("model", "rule", "says"),
    [
        ("resnet50", "fedavg", "model 'resnet50' is not one this node knows"),
        ("mnist_cnn", "mean", "unknown aggregation rule 'mean'"),
        ("mnist_cnn", "median:x", "is not '<rule>' or '<rule>:<f>'"),
    ],
)
def test_a_task_we_cannot_run_is_named_with_the_fix(model: str, rule: str, says: str) -> None:
    problem = task_problem(model, rule)
    assert problem is not None and says in problem and "upgrade fl-node or pick another task" in problem
