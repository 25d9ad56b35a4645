"""What uncertainty costs: plain prediction vs MC-dropout (fast engine, fast mode, obvious method).

Run: .venv/bin/python benchmarks/inference.py [--sizes small,ct] [--obvious small|all|none] [--device auto]
     [--amp on|off|both] [--samples 8]

``--amp both`` runs every size in float32 (standard layout, the reference) and then as the device's
mixed precision runs it (bfloat16 and channels-last on a CPU with native bfloat16, float16 on CUDA).

For the papers' V-Net (base width 16, 2 classes, patch z,y,x = 80,112,112, overlap 0.25, Gaussian
blending) on a 96x160x160 volume ("small") and a 300x512x512 CT-sized one ("ct"), all in one process:
seconds for a plain prediction, for prediction + T-pass MC-dropout entropy with this project's engine
(encoder once, decoder T times, batched), for the documented fast mode (dropout before the classifier
only) and for the obvious method (T+1 full sliding-window passes, as MONAI Label's epistemic scorer
does); the ratios to the plain prediction; the compute bound of the engine measured on one window,
(t_encoder + T t_decoder) / (t_encoder + t_decoder); and the peak resident memory of each run
(sampled every 20 ms from /proc, so each run's own peak, not the process's lifetime maximum).
"""

from __future__ import annotations

import argparse
import os
import statistics
import threading
import time
from collections.abc import Callable

import numpy as np
import torch

from napari_ssl_seg.inference.mc_dropout import dropout_sampling
from napari_ssl_seg.inference.naive_mc_dropout import obvious_mc_dropout
from napari_ssl_seg.inference.predictor import Predictor
from napari_ssl_seg.io import Volume
from napari_ssl_seg.networks import ModelCard, VNet
from napari_ssl_seg.runtime.allocator import keep_freed_memory
from napari_ssl_seg.runtime.precision import Execution

SIZES = {"small": (96, 160, 160), "ct": (300, 512, 512)}
PATCH = (80, 112, 112)
PAGE = os.sysconf("SC_PAGE_SIZE")


class PeakMemory:
    """Samples this process's resident set size in a thread; ``peak`` is the maximum seen (bytes)."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def current() -> int:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * PAGE

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.current())
            self._stop.wait(0.02)

    def __enter__(self) -> PeakMemory:
        self.peak = self.current()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.current())


def measure(run: Callable[[], object], device: torch.device) -> tuple[float, float]:
    """(seconds, peak RSS in GB) of one call."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    with PeakMemory() as memory:
        start = time.perf_counter()
        run()
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
    return seconds, memory.peak / 1e9


def compute_bound(network: VNet, execution: Execution, samples: int, repeats: int = 7) -> float:
    """(t_encoder + T t_sampled_decoder) / (t_encoder + t_decoder) for one window, medians of ``repeats``.

    The decoder (the stochastic part) is timed once with the network in eval mode, as a plain pass
    runs it, and once with its dropout layers sampling, as every MC pass runs it (a pass pays for
    drawing its masks); the bound uses the eval decoder below the fraction and the sampling one
    above it, i.e. a perfect engine: the encoder once, T single sampled decoder passes, nothing else.
    """
    device = execution.device
    execution.prepare_module(network)
    x = execution.prepare_input(torch.randn(1, 1, *PATCH, device=device))

    def timed(run: Callable[[], object]) -> float:
        times = []
        for _ in range(repeats):
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            run()
            if device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    with torch.no_grad(), execution.autocast():
        network(x)  # warm-up
        features = network.encode(x)
        t_enc = timed(lambda: network.encode(x))
        t_dec = timed(lambda: network.decode(features))
        with dropout_sampling(network):
            t_sampled = timed(lambda: network.decode(features))
    return (t_enc + samples * t_sampled) / (t_enc + t_dec)


def synthetic_ct(shape: tuple[int, int, int]) -> Volume:
    """A body-like ellipsoid of soft tissue in air with noise: realistic HU range, cheap to make."""
    _, y, x = np.ogrid[: shape[0], : shape[1], : shape[2]]
    inside = ((y - shape[1] / 2) / (0.4 * shape[1])) ** 2 + ((x - shape[2] / 2) / (0.45 * shape[2])) ** 2 < 1
    array = np.where(inside, 40.0, -1000.0).astype(np.float32) + np.zeros(shape, np.float32)
    array += np.random.default_rng(0).normal(0, 20, size=shape).astype(np.float32)
    return Volume(array=array, spacing=(1.0, 0.7, 0.7), modality="CT")


def papers_vnet_predictor(device: str) -> Predictor:
    """The papers' V-Net (base width 16, 2 classes, random weights: speed does not depend on them)."""
    torch.manual_seed(0)
    network = VNet(base_width=16, num_classes=2)
    card = ModelCard(
        method="supervised",
        network=network.config,
        patch_size=PATCH,
        intensity={"kind": "ct_window", "window": [-1000, 1000]},
        classes={0: "background", 1: "foreground"},
    )
    return Predictor({"model": network}, card, device=device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="small,ct", help="comma list of: small, ct")
    parser.add_argument(
        "--obvious", choices=("small", "all", "none"), default="all", help="where to time the obvious method"
    )
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--amp",
        choices=("on", "off", "both"),
        default="both",
        help="mixed precision (runtime/precision.py): on, off (float32) or both side by side",
    )
    parser.add_argument(
        "--malloc",
        choices=("keep", "default"),
        default="keep",
        help="keep: as the CLI runs (napari_ssl_seg.runtime.allocator)",
    )
    args = parser.parse_args()
    kept = keep_freed_memory() if args.malloc == "keep" else False
    predictor = papers_vnet_predictor(args.device)
    device = predictor.device
    amp_modes = {"on": [True], "off": [False], "both": [False, True]}[args.amp]
    print(
        f"device {device} ({torch.get_num_threads()} CPU threads, freed memory kept: {kept}); "
        f"V-Net base 16, patch {PATCH}, T={args.samples}"
    )
    header = (
        f"{'volume':<12} {'execution':<26} {'run':<34} {'seconds':>9} {'ratio':>7} {'bound':>7} {'peak RSS GB':>12}"
    )
    print(header)
    print("-" * len(header))
    T = args.samples
    # Warm-up on one window in every mode: the first call pays for kernel selection and allocator growth,
    # which would otherwise inflate whichever run comes first (the plain one, the ratios' denominator).
    warm = synthetic_ct(PATCH)
    for amp in amp_modes:
        predictor.amp = amp
        for kind in ("none", "mc_dropout", "fast"):
            predictor.predict(warm, uncertainty=kind, samples=T)
    for size in args.sizes.split(","):
        volume = synthetic_ct(SIZES[size])
        label = "x".join(map(str, SIZES[size]))
        for amp in amp_modes:
            predictor.amp = amp
            bound = compute_bound(predictor.networks["model"], predictor.execution, T)
            runs: list[tuple[str, Callable[[], object], str]] = [
                ("plain prediction", lambda v=volume: predictor.predict(v, uncertainty="none"), ""),
                (f"+ MC dropout T={T} (this engine)", lambda v=volume: predictor.predict(v, samples=T), f"{bound:.2f}"),
                (
                    f"+ fast mode T={T} (last layer)",
                    lambda v=volume: predictor.predict(v, uncertainty="fast", samples=T),
                    "",
                ),
            ]
            if args.obvious == "all" or (args.obvious == "small" and size == "small"):
                runs.append(
                    (
                        f"+ MC dropout T={T} (obvious, T+1)",
                        lambda v=volume: obvious_mc_dropout(predictor, v, T),
                        f"{T + 1:.2f}",
                    )
                )
            plain_seconds = None
            for name, run, shown_bound in runs:
                seconds, peak = measure(run, device)
                plain_seconds = plain_seconds or seconds
                ratio = seconds / plain_seconds
                print(
                    f"{label:<12} {predictor.execution.label:<26} {name:<34} {seconds:9.2f} {ratio:7.2f} "
                    f"{shown_bound:>7} {peak:12.2f}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
