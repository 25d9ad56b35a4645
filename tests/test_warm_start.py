"""Warm starts: a semi-supervised method can start every network it infers with from a supervised teacher."""

from __future__ import annotations

import pytest
import torch

from napari_ssl_seg.methods.registry import build_method
from napari_ssl_seg.networks.checkpoint import build_network
from napari_ssl_seg.training.run_start import copy_init_weights

NETWORK = {"name": "vnet", "in_channels": 1, "num_classes": 3, "base_width": 4, "depth": 3, "dropout": 0.2}
NETWORK["residual"] = True


def _same(module: torch.nn.Module, source: dict[str, torch.Tensor]) -> bool:
    own = module.state_dict()
    return set(own) == set(source) and all(torch.equal(own[k].float(), source[k].float()) for k in source)


def _vnets(method) -> dict[str, torch.nn.Module]:
    """Each network's V-Net: the network itself, or the sub-module that has the V-Net's keys."""
    reference = set(build_network(NETWORK).state_dict())
    found = {}
    for name in method.networks:
        for sub_name, module in method.unwrapped(name).named_modules():
            if set(module.state_dict()) == reference:
                found[f"{name}.{sub_name}" if sub_name else name] = module
                break
    return found


@pytest.mark.parametrize(
    ("method_name", "expected"),
    [
        ("ucmt", {"student1", "student2", "teacher"}),
        ("ugcemt", {"student.vnet", "teacher"}),
        ("mt", {"student", "teacher"}),
        ("cps", {"net1", "net2"}),
    ],
)
def test_every_network_of_the_method_starts_from_the_supervised_teacher(method_name: str, expected: set) -> None:
    torch.manual_seed(0)
    source = {k: v.clone() for k, v in build_network(NETWORK).state_dict().items()}
    method = build_method(method_name, NETWORK)
    vnets = _vnets(method)
    assert not any(_same(module, source) for module in vnets.values())  # fresh networks differ from it
    copied = copy_init_weights(method, source)
    assert set(copied) == expected
    assert all(_same(vnets[name], source) for name in copied)


def test_ucmt_warm_start_makes_the_students_average_a_working_teacher() -> None:
    """From one warm start the two students' channels correspond: their average is the teacher itself."""
    from napari_ssl_seg.methods.base import StepContext

    torch.manual_seed(0)
    source = {k: v.clone() for k, v in build_network(NETWORK).state_dict().items()}
    method = build_method("ucmt", NETWORK, {"ema_decay": 0.5})
    copy_init_weights(method, source)
    context = StepContext(iteration=10, max_iterations=20, rampup=1.0)
    method.update_teachers(context)
    assert _same(method.networks["teacher"], source)
