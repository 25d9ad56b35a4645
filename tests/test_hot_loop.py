"""The training loop's hot path never makes the host wait for the device (issue 24, GPU path).

On CUDA, reading a tensor's value (``float(t)``, ``t.item()``, ``bool(t)``, ``.tolist()``, ``.cpu()``,
``torch.equal``, indexing by a boolean mask) blocks the host until the device has run everything
queued before it. These tests run every method's optimiser steps on the CPU with those reads
recorded, and pin what replaced them: tensor logs read once per record, identity-keyed caches,
masked sums instead of boolean indexing, the divergence check at record points, SDF targets in the
data stage.
"""

from __future__ import annotations

import json
import traceback
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from helpers import make_tiny_project, tiny_config

from napari_ssl_seg.errors import InputError
from napari_ssl_seg.method_names import METHODS
from napari_ssl_seg.methods.base import Batch, StepContext, cache_matches, tensor_token
from napari_ssl_seg.methods.perturbations import host_values
from napari_ssl_seg.methods.prototypes import prototype_contrastive_loss
from napari_ssl_seg.methods.pseudo_labels import masked_dice_loss
from napari_ssl_seg.methods.registry import build_method
from napari_ssl_seg.methods.sdf import sdf_targets
from napari_ssl_seg.methods.supervised import SupervisedMethod as Supervised
from napari_ssl_seg.training import loop
from napari_ssl_seg.training.log_sums import LogSums
from napari_ssl_seg.training.loop import train
from napari_ssl_seg.training.state import resume_paths

PACKAGE = Path(loop.__file__).resolve().parents[1]
SMALL_SETTINGS = {"curecl": {"aux_blocks": [1, 1]}, "ccedual": {"resnet_blocks": [1, 1]}}


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_project(tmp_path_factory.mktemp("hot") / "project")


class _Reads:
    """Records every blocking read of a tensor made while ``active`` (with where it was made)."""

    NAMES = ("item", "tolist", "numpy", "cpu", "__float__", "__int__", "__bool__", "__index__")

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.active = False
        self.seen: list[str] = []
        for name in self.NAMES:
            monkeypatch.setattr(torch.Tensor, name, self._wrap(name, getattr(torch.Tensor, name)))
        monkeypatch.setattr(torch.Tensor, "__getitem__", self._wrap_getitem(torch.Tensor.__getitem__))
        monkeypatch.setattr(torch, "equal", self._wrap("torch.equal", torch.equal))

    def _record(self, name: str) -> None:
        # The package's own reads only: a library's read of a tensor it made on the CPU (MONAI's
        # `torch.arange(...).tolist()` of the axes to reduce) is no wait on a device.
        # `host_values` reads random numbers drawn on the host: no device to wait for, and it refuses
        # device tensors (a test below pins that).
        if self.active:
            frame = traceback.extract_stack(limit=3)[0]
            if PACKAGE in Path(frame.filename).resolve().parents and frame.name != "host_values":
                self.seen.append(f"{name} at {Path(frame.filename).name}:{frame.lineno}")

    def _wrap(self, name, original):
        def wrapped(*args, **kwargs):
            self._record(name)
            return original(*args, **kwargs)

        return wrapped

    def _wrap_getitem(self, original):
        def wrapped(tensor, index):
            parts = index if isinstance(index, tuple) else (index,)
            if any(isinstance(p, torch.Tensor) and p.dtype == torch.bool for p in parts):
                self._record("boolean indexing")
            return original(tensor, index)

        return wrapped


@pytest.mark.parametrize("method", list(METHODS))
def test_no_method_reads_a_tensor_during_its_steps(
    method: str, project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads = _Reads(monkeypatch)
    original_step = loop._Run.step

    def watched_step(run, batch, ctx):
        update = run.method.update_teachers
        reads.active = True
        try:
            logs = original_step(run, batch, ctx)
            update(ctx)  # the loop's next call: EMA teachers belong to the hot path too
        finally:
            reads.active = False
        return logs

    monkeypatch.setattr(loop._Run, "step", watched_step)
    config = tiny_config(
        method=method,
        iterations=3,
        log_every=3,
        validate_every=3,
        checkpoint_every=3,
        method_settings=SMALL_SETTINGS.get(method, {}),
    )
    result = train(project, config, tmp_path / "run", device="cpu")
    assert result.status == "completed"
    assert reads.seen == []
    # ... and the logs still arrive, as numbers, at the record point.
    records = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    train_records = [r for r in records if r["kind"] == "train"]
    assert train_records and all(isinstance(v, float) for k, v in train_records[-1].items() if k.endswith("loss"))


def test_host_values_refuses_what_is_not_on_the_host() -> None:
    assert host_values(torch.tensor([0.5, 2.0])) == [0.5, 2.0]
    with pytest.raises(ValueError, match="host"):
        host_values(torch.zeros(2, device="meta"))


def test_the_watch_sees_a_read(project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The recorder above is not blind: a method that reads its loss is caught."""
    reads = _Reads(monkeypatch)
    original_loss = Supervised.loss

    def reading_loss(self, batch, ctx):
        output = original_loss(self, batch, ctx)
        sums = LogSums()
        sums.add({"loss": output.loss.detach()})
        reads.active = True
        sums.means(ctx.iteration)  # a read in the package (the loop's own, at record points)
        reads.active = False
        return output

    monkeypatch.setattr(Supervised, "loss", reading_loss)
    train(project, tiny_config(iterations=1), tmp_path / "run", device="cpu")
    assert any(seen.startswith("tolist at log_sums.py") for seen in reads.seen)


def _indexed_prototype_loss(features, labels, reliable, num_classes, temperature=0.1, separation_weight=1.0):
    """The boolean-indexed form the masked one replaced (reads the device at every mask)."""
    flat = features.float().movedim(1, -1).reshape(-1, features.shape[1])
    labels, reliable = labels.reshape(-1), reliable.reshape(-1).bool()
    one_hot = F.one_hot(labels[reliable].long(), num_classes).float()
    counts = one_hot.sum(0)
    prototypes = (one_hot.t() @ flat[reliable]) / counts.clamp_min(1).unsqueeze(1)
    present = counts > 0
    if int(present.sum()) < 2:
        return flat.sum() * 0.0
    index = torch.full((num_classes,), -1, dtype=torch.long)
    index[present] = torch.arange(int(present.sum()))
    normalised = F.normalize(prototypes[present], dim=1)
    uncertain = ~reliable & present[labels]
    pull = flat.sum() * 0.0
    if bool(uncertain.any()):
        similarity = F.normalize(flat[uncertain], dim=1) @ normalised.detach().t()
        pull = F.cross_entropy(similarity / temperature, index[labels[uncertain]])
    pairwise = normalised @ normalised.t()
    separation = pairwise[~torch.eye(pairwise.shape[0], dtype=torch.bool)].mean()
    return pull + separation_weight * separation


@pytest.mark.parametrize(
    "case", ["all classes", "one class absent", "one prototype", "none reliable", "a reliable voxel without features"]
)
def test_the_masked_prototype_loss_equals_the_indexed_form_with_gradients(case: str) -> None:
    generator = torch.Generator().manual_seed(3)
    features = torch.randn(2, 5, 3, 4, 4, generator=generator)
    labels = torch.randint(0, 4, (2, 3, 4, 4), generator=generator)
    reliable = torch.rand(2, 3, 4, 4, generator=generator) > 0.5
    if case == "one class absent":
        reliable &= labels != 2
    elif case == "one prototype":
        reliable &= labels == 1
    elif case == "none reliable":
        reliable[:] = False
    elif case == "a reliable voxel without features":
        # All channels 0, as after a ReLU: the norm's root must not pass an infinite slope to it.
        features[0, :, 0, 0, 0] = 0.0
        reliable[0, 0, 0, 0] = True
    mine = features.clone().requires_grad_(True)
    theirs = features.clone().requires_grad_(True)
    loss, logs = prototype_contrastive_loss(mine, labels, reliable, 4, temperature=0.1, separation_weight=0.5)
    expected = _indexed_prototype_loss(theirs, labels, reliable, 4, temperature=0.1, separation_weight=0.5)
    loss.backward()
    expected.backward()
    assert float(loss.detach()) == pytest.approx(float(expected.detach()), abs=1e-5)
    assert torch.allclose(mine.grad, theirs.grad, atol=1e-5)
    assert all(torch.isfinite(value).all() for value in logs.values())


def test_an_empty_mask_gives_dice_loss_zero_with_zero_finite_gradients() -> None:
    logits = torch.randn(1, 3, 2, 4, 4, requires_grad=True)
    target = torch.randint(0, 3, (1, 2, 4, 4))
    loss = masked_dice_loss(logits, target, torch.zeros_like(target, dtype=torch.bool))
    loss.backward()
    assert float(loss.detach()) == 0.0 and torch.equal(logits.grad, torch.zeros_like(logits))


def test_a_cache_is_recognised_by_its_batch_not_by_equal_contents() -> None:
    images = torch.randn(1, 1, 2, 4, 4)
    batch = Batch(images, torch.zeros(1, 2, 4, 4, dtype=torch.long), torch.randn(1, 1, 2, 4, 4))
    ctx = StepContext(7, 10, 1.0)
    assert batch.all_images is batch.all_images  # concatenated once per batch
    cache = {"iteration": 7, "labeled": 1, "source": tensor_token(batch.all_images)}
    assert cache_matches(cache, batch, ctx)
    copy = Batch(batch.labeled_image.clone(), batch.labeled_target, batch.unlabeled_image.clone())
    assert not cache_matches(cache, copy, ctx)  # equal contents, another batch: recomputed, never trusted
    assert not cache_matches(cache, batch, StepContext(8, 10, 1.0))
    batch.all_images.mul_(2)  # changed in place since the cache was made
    assert not cache_matches(cache, batch, ctx)


def test_a_diverged_loss_stops_the_run_before_it_overwrites_saved_work(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    original_loss = Supervised.loss

    def diverging(self, batch, ctx):
        output = original_loss(self, batch, ctx)
        if ctx.iteration == 2:  # the third iteration, between two record points
            output.loss = output.loss * float("nan")
        return output

    monkeypatch.setattr(Supervised, "loss", diverging)
    out = tmp_path / "run"
    config = tiny_config(iterations=6, log_every=2, validate_every=2, checkpoint_every=2, amp=False)
    with pytest.raises(InputError, match="diverged: loss is nan by iteration 4"):
        train(project, config, out, device="cpu")
    state = json.loads(resume_paths(out)[1].read_text(encoding="utf-8"))
    assert state["iteration"] == 2  # the checkpoint of iteration 2 stands; iteration 4's was never written
    card = json.loads((out / "model.json").read_text(encoding="utf-8"))
    assert card["training"]["iterations"] == 2


def test_ugmcl_sdf_targets_from_the_data_stage_give_the_same_loss() -> None:
    method = build_method("ugmcl", tiny_config().network_config(3))
    method.train()
    generator = torch.Generator().manual_seed(0)
    labels = torch.zeros(2, 8, 16, 16, dtype=torch.long)
    labels[:, 2:6, 4:12, 4:12] = 1
    labels[1, 3:5, 6:9, 6:9] = 2
    images = torch.randn(2, 1, 8, 16, 16, generator=generator)
    unlabeled = torch.randn(1, 1, 8, 16, 16, generator=generator)
    extras = method.data_targets(labels)
    assert torch.equal(extras["sdf"], sdf_targets(labels, 3))
    ctx = StepContext(1, 10, 0.5, num_classes=3)
    torch.manual_seed(11)
    with_extras = method.loss(Batch(images, labels, unlabeled, extras), ctx)
    torch.manual_seed(11)
    computed_here = method.loss(Batch(images, labels, unlabeled), ctx)
    assert float(with_extras.loss.detach()) == pytest.approx(float(computed_here.loss.detach()), rel=1e-6)
