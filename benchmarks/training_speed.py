"""Where a training iteration's time goes, per method, against the compute its networks need.

    .venv/bin/python benchmarks/training_speed.py [--config quick] [--methods all] [--iterations 6]
        [--widths 8,16]

For every method, on the same generated CT cohort (4 labeled, 8 unlabeled cases) and the same
config, one process times ``--iterations`` iterations (after ``--warmup``) of the training loop's
own run object, split into:

* data: drawing, cropping and augmenting the patch batch (``training.sampler.TwoStreamSampler.batch``), the
  targets the method derives from it on the CPU (``data_targets``: UG-MCL's signed distance maps, normalised
  from the crops of its per-case ``case_target``) and moving it;
* forward: the method's loss for the batch (every network pass it makes, MC dropout included);
* backward: back-propagation of that loss (SAM's second forward and backward count here too);
* update: the optimiser step and the method's teacher update (EMA).

The **compute bound** is what the method's networks cost at the least: each trainable network's
forward and backward pass over the whole batch (labeled and unlabeled patches), and one forward
pass without gradients of each other network (a teacher) over the patches the method gives it (the
unlabeled ones, or every patch where the method needs the teacher's maps on the labeled ones too, as
UG-CEMT's UMIX and UG-MCL's consistency terms do: recorded from the teacher's encodings); twice the
trainable part for SAM (its ascent step); and for MC-dropout methods, T decoder passes of the
teacher on features encoded once (what the inference engine's encode-once split costs); all per
optimiser step, each timed alone in this run on the same shapes (UG-CEMT's student as its V-Net).
``iteration / bound`` says how much of an iteration is above what the networks need: per-batch
targets, repeated encodings and data work are what an excess is made of.

The phases are timed by replaying the loop's ``step`` in its parts (zero_grad, loss, backward,
optimiser step), because the loop itself only keeps a per-iteration total.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from napari_ssl_seg.runtime.precision import Execution

ALL_METHODS = ("supervised", "mt", "uamt", "cps", "ucmt", "ugcemt", "ugmcl", "curecl", "ccedual")


def _seconds(function: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    value = function()
    return time.perf_counter() - start, value


def _scalar(output: Any) -> torch.Tensor:
    """A scalar depending on every tensor a network returns (tuples, feature wrappers)."""
    if isinstance(output, torch.Tensor):
        return output.float().mean()
    if isinstance(output, tuple | list):
        return sum(_scalar(item) for item in output)
    tensors = [value for value in vars(output).values() if isinstance(value, torch.Tensor | tuple | list)]
    return sum(_scalar(item) for item in tensors)


def _pass_seconds(
    network: torch.nn.Module, images: torch.Tensor, execution: Execution, *, backward: bool, repeats: int
) -> float:
    network.train(backward)
    times = []
    for _ in range(repeats + 1):  # the first pass warms up allocators and kernels
        network.zero_grad(set_to_none=True)
        start = time.perf_counter()
        if backward:
            with execution.autocast():
                scalar = _scalar(network(images))
            scalar.backward()
        else:
            with torch.no_grad(), execution.autocast():
                network(images)
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:])


def _decoder_seconds(network: torch.nn.Module, images: torch.Tensor, execution: Execution, *, repeats: int) -> float:
    """One MC-dropout sample's own cost: the decoder and classifier on features encoded once."""
    network.eval()
    with torch.no_grad(), execution.autocast():
        features = network.encode(images)
        times = []
        for _ in range(repeats + 1):
            start = time.perf_counter()
            network.classify(network.decode_features(features))
            times.append(time.perf_counter() - start)
    return statistics.median(times[1:])


def measure(
    project: Path,
    method: str,
    config_name: str,
    iterations: int,
    warmup: int,
    work: Path,
    amp: bool = True,
    overrides: tuple[str, ...] = (),
) -> dict[str, Any]:
    from napari_ssl_seg.inference.device import select_device
    from napari_ssl_seg.methods.base import StepContext, gaussian_rampup
    from napari_ssl_seg.store import Project
    from napari_ssl_seg.training.config import apply_overrides, preset
    from napari_ssl_seg.training.distributed import init_distributed
    from napari_ssl_seg.training.loop import _Run
    from napari_ssl_seg.training.run_start import run_info
    from napari_ssl_seg.training.sharpness_aware import sam_ascent

    total = warmup + iterations
    config = apply_overrides(preset(config_name), [f"method={method}", f"iterations={total}", f"amp={amp}", *overrides])
    device = select_device("auto")
    (work / method).mkdir(parents=True, exist_ok=True)
    with Project.open(project) as opened:
        info = run_info(opened, config, None, "benchmark")
        info.pop("init_state", None)
        info["config"] = config.to_dict()
        run = _Run(
            opened,
            config,
            work / method,
            info,
            device=device,
            dist=init_distributed(device.type),
            progress=None,
            should_stop=None,
            resume_state=None,
        )
        run.build()
    strategy = run.method
    strategy.train(True)
    teacher_rows = _record_teacher_rows(strategy)
    phases: dict[str, list[float]] = {"data": [], "forward": [], "backward": [], "update": []}
    for iteration in range(total):
        data, drawn = _seconds(lambda iteration=iteration: run.draw(iteration))  # with the method's data targets
        moved, batch = _seconds(lambda: run.device_batch(*drawn))  # noqa: B023
        forward = backward = update = 0.0
        for step in range(strategy.steps_per_iteration):
            ctx = StepContext(
                iteration, total, gaussian_rampup(iteration, config.rampup_iterations), step, run.num_classes
            )
            run.optimizer.zero_grad(set_to_none=True)
            seconds, (loss, _logs) = _seconds(lambda ctx=ctx: run._loss(batch, ctx))  # noqa: B023
            forward += seconds
            backward += _seconds(lambda loss=loss: run.scaler.scale(loss).backward())[0]
            if strategy.optimizer == "sam":
                start = time.perf_counter()
                perturbation = sam_ascent(run.params, strategy.sam_rho)
                run.optimizer.zero_grad(set_to_none=True)
                second, _ = run._loss(batch, ctx)
                run.scaler.scale(second).backward()
                perturbation.restore()
                backward += time.perf_counter() - start

            def optimiser_and_teachers(ctx: StepContext = ctx) -> None:
                run.scaler.step(run.optimizer)
                run.scaler.update()
                strategy.update_teachers(ctx)

            update += _seconds(optimiser_and_teachers)[0]
        if iteration >= warmup:
            for name, value in (("data", data + moved), ("forward", forward), ("backward", backward)):
                phases[name].append(value)
            phases["update"].append(update)
    if run.log is not None:
        run.log.close()

    labeled, unlabeled_images = batch.labeled_image, batch.unlabeled_image
    every = torch.cat([labeled, unlabeled_images]) if strategy.uses_unlabeled else labeled
    every = run.execution.prepare_input(every)
    # The teacher's passes cover the rows the method gave its teacher: the unlabeled patches for the Mean
    # Teacher lineage, every patch where the method needs the teacher's maps there too (UG-CEMT's UMIX mixes
    # labeled patches by the teacher's uncertainty; UG-MCL's consistency terms cover all data, Eq. 4 and 6).
    all_rows = teacher_rows and max(teacher_rows) >= every.shape[0]
    teacher_images = every if all_rows else run.execution.prepare_input(unlabeled_images)
    bound = 0.0
    for name in strategy.networks:
        network = strategy.unwrapped(name)
        # UG-CEMT's student also takes the teacher's bottleneck: its V-Net stands in for it (the
        # cross-attention block is a small part of the pass).
        network = getattr(network, "vnet", network) if name == "student" and strategy.name == "ugcemt" else network
        if name in strategy.trainable():
            bound += _pass_seconds(network, every, run.execution, backward=True, repeats=3)
        elif teacher_images.shape[0] > 0:
            bound += _pass_seconds(network, teacher_images, run.execution, backward=False, repeats=3)
    if strategy.optimizer == "sam":
        bound *= 2  # SAM's ascent step: a second forward and backward of the trainable networks
    samples = int(getattr(strategy.settings, "mc_samples", 0))
    teacher = strategy.unwrapped("teacher") if "teacher" in strategy.networks else None
    teacher = getattr(teacher, "vnet", teacher)  # UG-MCL's dual-task teacher: MC dropout runs its V-Net
    if samples and teacher is not None and teacher_images.shape[0] > 0:
        bound += samples * _decoder_seconds(teacher, teacher_images, run.execution, repeats=3)
    bound *= strategy.steps_per_iteration
    medians = {name: statistics.median(values) for name, values in phases.items()}
    iteration_seconds = sum(medians.values())
    return {
        "method": method,
        **medians,
        "iteration": iteration_seconds,
        "bound": bound,
        "execution": run.execution.label,
        "teacher_rows": max(teacher_rows, default=0),
    }


def _record_teacher_rows(strategy: Any) -> list[int]:
    """The batch rows of every encoding the method's teacher V-Net makes, recorded as the loop runs."""
    rows: list[int] = []
    teacher = strategy.unwrapped("teacher") if "teacher" in strategy.networks else None
    vnet = getattr(teacher, "vnet", teacher)
    if vnet is None or not hasattr(vnet, "encode"):
        return rows
    encode = vnet.encode

    def recording(x: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        rows.append(int(x.shape[0]))
        return encode(x, *args, **kwargs)

    vnet.encode = recording  # an instance attribute: shadows the method for this run object only
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="quick", help="training preset (quick, paper, finetune)")
    parser.add_argument("--methods", default="all", help="comma-separated method names, or all")
    parser.add_argument("--iterations", type=int, default=6, help="timed iterations per method")
    parser.add_argument("--warmup", type=int, default=2, help="untimed iterations first")
    parser.add_argument("--work", type=Path, help="folder for the cohort and the runs (default: temporary)")
    parser.add_argument(
        "--amp",
        default="on",
        choices=("on", "off", "both"),
        help="mixed precision (runtime/precision.py); both: side by side",
    )
    parser.add_argument(
        "--widths", help="comma-separated network widths timed side by side (default: the config's own)"
    )
    args = parser.parse_args(argv)

    from napari_ssl_seg.cohort.cohort_project import build_cohort_project
    from napari_ssl_seg.sample_data import sample_path

    methods = ALL_METHODS if args.methods == "all" else tuple(args.methods.split(","))
    work = args.work or Path(tempfile.mkdtemp(prefix="training_speed_"))
    project = work / "cohort"
    if not project.exists():
        with build_cohort_project(
            project, sample_path("CTChest4.nrrd"), sample_path("Segmentation.seg.nrrd"), cases=12, seed=0, labeled=4
        ):
            pass
    print(f"config {args.config}, torch {torch.__version__}, {torch.get_num_threads()} threads", flush=True)
    header = f"{'method':<11} {'execution':<26} {'data':>7} {'forward':>8} {'backward':>9} {'update':>7}"
    print(f"{header} {'iter s':>7} {'it/s':>6} {'bound s':>8} {'iter/bound':>10} {'teacher rows':>12}", flush=True)
    modes = {"on": (True,), "off": (False,), "both": (False, True)}[args.amp]
    widths = [None] if not args.widths else [int(w) for w in args.widths.split(",")]
    for method in methods:
        for amp in modes:
            for width in widths:
                changes = () if width is None else (f"base_width={width}",)
                runs = work / f"runs_{args.config}_{amp}" / ("" if width is None else f"width{width}")
                row = measure(project, method, args.config, args.iterations, args.warmup, runs, amp, changes)
                if width is not None:
                    row["method"] = f"{method} w{width}"
                _print_row(row)
    return 0


def _print_row(row: dict[str, Any]) -> None:
    print(
        f"{row['method']:<11} {row['execution']:<26} {row['data']:7.3f} {row['forward']:8.3f}"
        f" {row['backward']:9.3f} {row['update']:7.3f}"
        f" {row['iteration']:7.3f} {1 / row['iteration']:6.2f} {row['bound']:8.3f}"
        f" {row['iteration'] / row['bound']:10.2f} {row['teacher_rows'] or '-':>12}",
        flush=True,
    )


if __name__ == "__main__":
    raise SystemExit(main())
