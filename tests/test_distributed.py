"""Two CPU processes under torchrun (gloo): students and teachers end identical on every rank.

The worker half of this file runs under ``python -m torch.distributed.run``; it trains a tiny
EMA mean teacher defined here (so the test does not depend on the real ``mt`` method) whose
teacher also averages the student's BatchNorm buffers, which differ between ranks: without the
loop's teacher broadcast the ranks' teachers drift apart and the test fails.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import torch
from monai.losses import DiceCELoss

from napari_ssl_seg.methods.base import Batch, LossOutput, SemiSupervisedMethod, StepContext
from napari_ssl_seg.methods.settings import MethodSettings
from napari_ssl_seg.networks.checkpoint import build_network

HERE = Path(__file__).resolve()
REPO = HERE.parents[1]


@dataclasses.dataclass(frozen=True)
class TinyEMASettings(MethodSettings):
    decay: float = 0.9


class TinyEMA(SemiSupervisedMethod):
    """A minimal mean teacher: Dice+CE on labeled, MSE to a noisy-input EMA teacher on all patches."""

    name: ClassVar[str] = "mt"
    Settings: ClassVar[type[MethodSettings]] = TinyEMASettings
    disagreement_network: ClassVar[str | None] = "student"
    inference_network: ClassVar[str] = "teacher"
    instance: ClassVar[TinyEMA | None] = None

    def __init__(self, network: Mapping[str, Any], settings: Mapping[str, Any] | None = None) -> None:
        super().__init__(network, settings)
        self.networks["student"] = build_network(self.network_config)
        self.networks["teacher"] = copy.deepcopy(self.networks["student"])
        self.criterion = DiceCELoss(to_onehot_y=True, softmax=True, include_background=False, batch=True)
        TinyEMA.instance = self

    def trainable(self) -> list[str]:
        return ["student"]

    def loss(self, batch: Batch, ctx: StepContext) -> LossOutput:
        images = batch.all_images
        logits = self.networks["student"](images)
        supervised = self.criterion(logits[: batch.labeled_count], batch.labeled_target[:, None])
        with torch.no_grad():
            noise = torch.clamp(torch.randn_like(images) * 0.1, -0.2, 0.2)
            target = torch.softmax(self.networks["teacher"](images + noise), dim=1)
        consistency = torch.mean((torch.softmax(logits, dim=1) - target) ** 2)
        return LossOutput(supervised + ctx.rampup * consistency, {"consistency": float(consistency)})

    @torch.no_grad()
    def update_teachers(self, ctx: StepContext) -> None:
        decay = min(1 - 1 / (ctx.iteration + 1), self.settings.decay)
        student = self.unwrapped("student").state_dict()
        for key, value in self.networks["teacher"].state_dict().items():
            if value.is_floating_point():
                value.mul_(decay).add_(student[key], alpha=1 - decay)
            else:
                value.copy_(student[key])


def _digest(module: torch.nn.Module, *, buffers: bool = True) -> str:
    digest = hashlib.sha256()
    items = module.state_dict().items() if buffers else module.named_parameters()
    for key, tensor in sorted(items):
        digest.update(key.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _worker(project: str, out: str, hashes: str, mode: str = "train") -> None:
    sys.path.insert(0, str(HERE.parent))  # run by torchrun as a script: the tests' helpers
    from helpers import tiny_config

    from napari_ssl_seg.training.loop import train

    rank = os.environ["RANK"]
    asked: list[bool] = []

    def should_stop() -> bool:
        # Only rank 1 is asked to stop, from its second question on.
        asked.append(rank == "1" and len(asked) >= 1)
        return asked[-1]

    iterations = 4 if mode == "train" else 25
    config = tiny_config(
        method="__main__:TinyEMA",
        iterations=iterations,
        rampup_iterations=iterations,
        checkpoint_every=100,
        validate_every=iterations,
    )
    result = train(project, config, out, device="cpu", should_stop=should_stop if mode == "stop" else None)
    method = TinyEMA.instance
    record = {
        "iterations": result.iterations,
        "questions": len(asked),
        "status": result.status,
        "teacher": _digest(method.networks["teacher"]),
        # Student buffers (BatchNorm statistics) are local until DDP's next forward broadcasts rank 0's.
        "student": _digest(method.unwrapped("student"), buffers=False),
    }
    Path(hashes, f"rank{rank}.json").write_text(json.dumps(record))


def _two_ranks(tmp_path: Path, mode: str) -> list[dict[str, Any]]:
    """Run :func:`_worker` on two CPU ranks under torchrun; each rank's record."""
    sys.path.insert(0, str(HERE.parent))
    from helpers import make_tiny_project

    project = make_tiny_project(tmp_path / "project", labeled=2, unlabeled=2)
    hashes = tmp_path / "hashes"
    hashes.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    command += [str(HERE), str(project), str(tmp_path / "out"), str(hashes), mode]
    done = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    return [json.loads((hashes / f"rank{rank}.json").read_text()) for rank in (0, 1)]


def test_two_ranks_hold_identical_teachers(tmp_path: Path) -> None:
    records = _two_ranks(tmp_path, "train")
    assert records[0]["status"] == records[1]["status"] == "completed"
    assert records[0]["student"] == records[1]["student"]
    assert records[0]["teacher"] == records[1]["teacher"]
    assert (tmp_path / "out" / "model.safetensors").is_file()
    card = json.loads((tmp_path / "out" / "model.json").read_text())
    assert card["training"]["world_size"] == 2 and set(card["extra_networks"]) == {"student"}


def test_a_stop_asked_on_one_rank_stops_both_at_the_same_poll(tmp_path: Path) -> None:
    from napari_ssl_seg.training.distributed import STOP_POLL_EVERY

    records = _two_ranks(tmp_path, "stop")
    assert records[0]["status"] == records[1]["status"] == "cancelled"
    # Rank 1 asks to stop at its second poll: both ranks stop there, having asked only at the polls.
    assert records[0]["iterations"] == records[1]["iterations"] == STOP_POLL_EVERY
    assert records[0]["questions"] == records[1]["questions"] == 2
    assert records[0]["teacher"] == records[1]["teacher"]


if __name__ == "__main__":
    _worker(*sys.argv[1:])
