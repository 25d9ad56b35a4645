"""Networks a teacher's weights do not fit (CCE dual's and CURE-CL's ResNet) learn from it before the coupling."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from helpers import make_tiny_project, tiny_config

from napari_ssl_seg.methods.base import Batch, StepContext
from napari_ssl_seg.methods.registry import build_method
from napari_ssl_seg.runtime.class_ids import class_ids
from napari_ssl_seg.training.loop import train
from napari_ssl_seg.training.peers import in_distillation, ramps, step_loss, untrained_peers
from napari_ssl_seg.training.runlog import read_log

PEERS = {"networks": ["subnet_a"], "source": "subnet_b", "distillation_iterations": 3, "rampup_iterations": 0}


@pytest.fixture(scope="module")
def tiny_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_project(tmp_path_factory.mktemp("peers") / "project")


def _cce():
    return build_method("ccedual", tiny_config().network_config(3), {"resnet_blocks": [1, 1]})


def _batch(seed: int = 0) -> Batch:
    generator = torch.Generator().manual_seed(seed)
    return Batch(
        labeled_image=torch.randn(1, 1, 8, 16, 16, generator=generator),
        labeled_target=torch.randint(0, 3, (1, 8, 16, 16), generator=generator),
        unlabeled_image=torch.randn(2, 1, 8, 16, 16, generator=generator),
    )


def test_a_peer_the_teacher_does_not_fit_distils_first_then_is_coupled_at_full_weight() -> None:
    cce = _cce()
    config = tiny_config(rampup_iterations=0, iterations=12)  # peer_distillation 0.25: 3 iterations
    peers = untrained_peers(cce, ["subnet_b"], config)
    assert peers == PEERS
    assert untrained_peers(cce, ["subnet_a", "subnet_b"], config) is None
    ucmt = build_method("ucmt", tiny_config().network_config(3))
    assert untrained_peers(ucmt, list(ucmt.networks), config) is None
    # Nothing to learn from (the network the method infers with is the untrained one), or distillation
    # switched off: the coupling ramps up over the whole run, as every run before distillation did.
    ramped = {"rampup_iterations": 12}
    assert untrained_peers(cce, ["subnet_a"], config) == {"networks": ["subnet_b"], **ramped}
    assert untrained_peers(cce, ["subnet_b"], dataclasses.replace(config, peer_distillation=0.0)) == {
        "networks": ["subnet_a"],
        **ramped,
    }
    assert ramps(0, config, None) == (1.0, 1.0)
    assert [ramps(i, config, peers) for i in (0, 2, 3, 11)] == [(0.0, 0.0), (0.0, 0.0), (1.0, 1.0), (1.0, 1.0)]
    assert [in_distillation(i, peers) for i in (0, 2, 3)] == [True, True, False] and not in_distillation(0, None)
    # The schedule a run recorded before distillation resumes with.
    early = ramps(1, config, {"networks": ["subnet_a"], "rampup_iterations": 10})
    assert early[0] == early[1] < 0.05


def test_distillation_trains_the_peer_alone_on_the_teachers_prediction() -> None:
    torch.manual_seed(0)
    cce = _cce()
    cce.train(True)
    source = cce.networks["subnet_b"]
    before = {key: value.clone() for key, value in source.state_dict().items()}
    batch = _batch()
    output = step_loss(cce, batch, StepContext(0, 10, 0.0, num_classes=3, coupling=0.0), PEERS)
    output.loss.backward()
    assert set(output.logs) == {"distillation", "peer_agreement"}
    assert all(p.grad is None for p in source.parameters())
    assert any(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in cce.networks["subnet_a"].parameters())
    # The teacher predicted as deployed: its BatchNorm statistics untouched, its mode given back.
    assert all(torch.equal(before[key], value) for key, value in source.state_dict().items()) and source.training
    after = step_loss(cce, batch, StepContext(3, 10, 1.0, num_classes=3), PEERS)
    assert "cps" in after.logs and "distillation" not in after.logs  # the method's own loss

    # Trained on the distillation loss, the peer comes to predict what the teacher predicts in evaluation.
    source.eval()
    with torch.no_grad():
        wanted = class_ids(source(batch.unlabeled_image))
    source.train(True)
    peer = cce.networks["subnet_a"]
    optimizer = torch.optim.Adam(peer.parameters(), lr=0.01)
    agreement = []
    for _ in range(100):
        optimizer.zero_grad()
        output = step_loss(cce, batch, StepContext(0, 10, 0.0, num_classes=3, coupling=0.0), PEERS)
        output.loss.backward()
        optimizer.step()
        agreement.append(float(output.logs["peer_agreement"]))
    peer.eval()
    with torch.no_grad():
        learnt = (class_ids(peer(batch.unlabeled_image)) == wanted).float().mean()
    assert agreement[-1] > agreement[0] and agreement[-1] > 0.9 and float(learnt) > 0.9


def test_a_warm_started_run_distils_then_runs_the_method_and_resumes_on_its_schedule(
    tiny_project: Path, tmp_path: Path
) -> None:
    teacher = tmp_path / "teacher"
    train(tiny_project, tiny_config(iterations=2, validate_every=2), teacher, device="cpu")
    tuned = tiny_config(
        method="ccedual", iterations=8, rampup_iterations=0, validate_every=2, log_every=1, checkpoint_every=2
    )
    tuned.method_settings = {"resnet_blocks": [1, 1]}
    calls = iter(range(100))
    # Cancelled after 4 iterations, then resumed: the resumed half keeps the schedule the run began with
    # (its info, not the --init model, says which network started untrained).
    stop_after_four = lambda: next(calls) >= 4  # noqa: E731
    train(tiny_project, tuned, tmp_path / "cce", device="cpu", init_model=teacher, should_stop=stop_after_four)
    notes = [r["message"] for r in read_log(tmp_path / "cce" / "log.jsonl") if r["kind"] == "note"]
    assert any("untrained at the start: subnet_a; it learns from subnet_b for the first 2" in n for n in notes)
    train(tiny_project, tuned, tmp_path / "cce", device="cpu", resume=True)
    records = [r for r in read_log(tmp_path / "cce" / "log.jsonl") if r["kind"] == "train"]
    assert [r["iteration"] for r in records] == list(range(1, 9))
    assert ["distillation" in r for r in records] == [True, True] + [False] * 6
    assert all("cps" in r for r in records[2:])
    # Without distillation the finetune-like config (no ramp-up) would couple at full weight from the start.
    assert [r["rampup"] for r in records] == [0.0, 0.0] + [1.0] * 6
