from __future__ import annotations

import pytest
import torch

from protocol.errors import ProtocolError
from protocol.models import MODELS, build_model, count_parameters


def test_mnist_cnn_is_mcmahans_architecture() -> None:
    model = build_model("mnist_cnn", seed=0)
    # McMahan et al. 2017 report 1,663,370 parameters for this CNN.
    assert count_parameters(model) == 1_663_370
    shapes = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    assert shapes == {
        "conv1.weight": (32, 1, 5, 5),
        "conv1.bias": (32,),
        "conv2.weight": (64, 32, 5, 5),
        "conv2.bias": (64,),
        "fc1.weight": (512, 3136),
        "fc1.bias": (512,),
        "fc2.weight": (10, 512),
        "fc2.bias": (10,),
    }
    assert model(torch.zeros(3, 1, 28, 28)).shape == (3, 10)


def test_mnist_2nn_parameter_count() -> None:
    assert count_parameters(build_model("mnist_2nn")) == 199_210


REFERENCES = [*sorted(set(MODELS) - {"tabular_mlp"}), "tabular_mlp(features=30, classes=2)"]


@pytest.mark.parametrize("name", REFERENCES)
def test_seeded_init_is_deterministic_and_leaves_global_rng_alone(name: str) -> None:
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    a = build_model(name, seed=5).state_dict()
    assert torch.equal(torch.rand(1), expected_next)
    b = build_model(name, seed=5).state_dict()
    c = build_model(name, seed=6).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_unknown_name_lists_known_ones() -> None:
    with pytest.raises(ProtocolError, match="unknown model architecture 'resnet'.*mnist_2nn, mnist_cnn, tabular_mlp"):
        build_model("resnet")
