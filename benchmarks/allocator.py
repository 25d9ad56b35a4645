"""Does keeping freed memory (napari_ssl_seg.runtime.allocator) pay on this machine? Both settings, side by side.

Run: .venv/bin/python benchmarks/allocator.py [--ct] [--repeats 5]

glibc's malloc settings are process-wide and cannot be undone, so every measurement runs in a child
process of its own, once with ``keep_freed_memory()`` applied (as the command line and the docks'
child processes run) and once with ``NAPARI_SSL_SEG_MALLOC=default``; the two children of a row run
back to back. Rows:

- 20 cycles of making and freeing a 64 MB tensor (the size of one full-resolution activation map
  of a window): seconds, minor page faults, the heap glibc holds afterwards;
- one 80x112x112 window through the papers' V-Net (base width 16, eval, no grad), median of
  ``--repeats`` after two warm-up windows: seconds, minor page faults and system CPU seconds per window;
- with ``--ct``: a plain sliding-window prediction of a synthetic 300x512x512 CT (overlap 0.25,
  Gaussian blending), the CT-size row of benchmarks/inference.py: seconds and peak resident memory.

The ratio column is default / kept: above 1, keeping freed memory is faster (or faults less).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
MB64_FLOATS = 16 * 1024 * 1024
WINDOW = (80, 112, 112)
MALLINFO2_FIELDS = (
    "arena",
    "ordblks",
    "smblks",
    "hblks",
    "hblkhd",
    "usmblks",
    "fsmblks",
    "uordblks",
    "fordblks",
    "keepcost",
)


def _usage() -> tuple[int, float]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_minflt, usage.ru_stime


def _heap_bytes() -> int | None:
    import ctypes
    import ctypes.util

    class MallInfo2(ctypes.Structure):
        # All ten fields: the struct is returned by value, so a shorter one is overrun.
        _fields_ = [(name, ctypes.c_size_t) for name in MALLINFO2_FIELDS]

    try:
        function = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallinfo2
    except (OSError, AttributeError):
        return None
    function.restype = MallInfo2
    return int(function().arena)


def measure_tensor_cycles() -> dict:
    import torch

    for _ in range(3):
        torch.ones(MB64_FLOATS).sum()
    faults, _ = _usage()
    start = time.perf_counter()
    for _ in range(20):
        torch.ones(MB64_FLOATS).sum()
    seconds = time.perf_counter() - start
    heap = _heap_bytes()
    return {"seconds": seconds, "faults": _usage()[0] - faults, "heap_mb": None if heap is None else heap / 2**20}


def measure_window(repeats: int) -> dict:
    import torch

    from napari_ssl_seg.networks import VNet

    torch.manual_seed(0)
    network = VNet(base_width=16, num_classes=2).eval()
    window = torch.randn(1, 1, *WINDOW)
    times, faults, system = [], [], []
    with torch.no_grad():
        for _ in range(2):
            network(window)
        for _ in range(repeats):
            faults_before, system_before = _usage()
            start = time.perf_counter()
            network(window)
            times.append(time.perf_counter() - start)
            faults_after, system_after = _usage()
            faults.append(faults_after - faults_before)
            system.append(system_after - system_before)
    return {
        "seconds": statistics.median(times),
        "faults": statistics.median(faults),
        "system": statistics.median(system),
    }


def measure_ct() -> dict:
    from inference import PATCH, PeakMemory, papers_vnet_predictor, synthetic_ct

    predictor = papers_vnet_predictor("cpu")
    predictor.predict(synthetic_ct(PATCH), uncertainty="none")  # kernel selection, as inference.py warms up
    volume = synthetic_ct((300, 512, 512))
    with PeakMemory() as memory:
        start = time.perf_counter()
        predictor.predict(volume, uncertainty="none")
        seconds = time.perf_counter() - start
    return {"seconds": seconds, "peak_gb": memory.peak / 1e9}


def child(what: str, repeats: int) -> None:
    from napari_ssl_seg.runtime.allocator import keep_freed_memory

    applied = keep_freed_memory()
    import torch

    result = {"tensor": measure_tensor_cycles, "window": lambda: measure_window(repeats), "ct": measure_ct}[what]()
    result.update(applied=applied, threads=torch.get_num_threads())
    print(json.dumps(result))


def run_child(what: str, mode: str, repeats: int) -> dict:
    environment = dict(os.environ)
    if mode == "default":
        environment["NAPARI_SSL_SEG_MALLOC"] = "default"
    else:
        environment.pop("NAPARI_SSL_SEG_MALLOC", None)
    command = [sys.executable, str(Path(__file__).resolve()), "--child", what, "--repeats", str(repeats)]
    output = subprocess.run(command, env=environment, capture_output=True, text=True, check=True, cwd=HERE).stdout
    result = json.loads(output.strip().splitlines()[-1])
    if result["applied"] != (mode == "kept"):
        raise SystemExit(f"the {mode} child did not get the setting it asked for: applied={result['applied']}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ct", action="store_true", help="also the 300x512x512 plain prediction (minutes)")
    parser.add_argument("--repeats", type=int, default=5, help="windows timed per setting")
    parser.add_argument("--child", choices=("tensor", "window", "ct"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.repeats)
        return
    rows = [
        ("20 x 64 MB tensor", "tensor", [("seconds", "s"), ("faults", "faults"), ("heap_mb", "heap MB")]),
        (
            "one 80x112x112 window",
            "window",
            [("seconds", "s"), ("faults", "faults"), ("system", "system s")],
        ),
    ]
    if args.ct:
        rows.append(("300x512x512 plain prediction", "ct", [("seconds", "s"), ("peak_gb", "peak RSS GB")]))
    print(f"{'what':<30} {'measure':<12} {'kept':>12} {'default':>12} {'default/kept':>13}")
    print("-" * 83)
    for title, what, measures in rows:
        kept = run_child(what, "kept", args.repeats)
        default = run_child(what, "default", args.repeats)
        for key, name in measures:
            a, b = kept[key], default[key]
            # Nothing to divide by: "inf" where the kept setting had none at all and the default some.
            ratio = f"{b / a:13.2f}" if a and b is not None else f"{'inf' if b else '':>13}"
            shown = [f"{value:12.3f}" if value is not None else f"{'n/a':>12}" for value in (a, b)]
            print(f"{title:<30} {name:<12} {shown[0]} {shown[1]} {ratio}", flush=True)
        title = ""
    print(f"torch threads per child: {kept['threads']}")


if __name__ == "__main__":
    main()
