"""A retrain and predictions at once: does the training child give the GUI's work a core?

    .venv/bin/python benchmarks/core_sharing.py [--rounds 2] [--seconds 15] [--cases 12] [--work DIR]

On a generated 12-case CT cohort with the shipped UCMT teacher (as ``gui_latency.py``), each round starts the
one-click retrain (``RetrainJob``: a supervised fine-tune, ``finetune`` preset, in its niced child process), lets
it run ``--seconds`` alone, then predicts ``--cases`` cases in a row with MC dropout (T=8), as a re-rank does, in
a thread wrapped as the docks wrap their work (``widgets/background.in_background_priority``: niced, on the
cores a retrain leaves, inside ``core_sharing.computing()``), and cancels the retrain. Each round runs twice,
side by side: **sharing** (the product: the child trains on half its threads, here one of two, while the
predictions run, ``runtime/core_sharing.py``) and **not sharing** (the signal is never raised: the child keeps
every core, as before). The predictions alone, with no retrain, are the floor.

Printed per round and mode: the retrain's iterations per second alone and during the predictions (its logged
iteration count, polled as the Retrain dock polls it) and the predictions' seconds; then the ratios of the modes.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from pathlib import Path

from gui_latency import shipped_teacher_cohort

LONG = 1_000_000  # iterations a round never reaches


def iterations_per_second(job: object, seconds: float) -> float:
    """The job's logged iterations over ``seconds`` of polling."""
    first, _ = job.progress  # type: ignore[attr-defined]
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        time.sleep(0.2)
    last, _ = job.progress  # type: ignore[attr-defined]
    return (last - first) / (time.perf_counter() - started)


def predict_as_the_dock(predictor: object, volumes: list[object]) -> float:
    """Seconds of MC-dropout predictions of ``volumes``, one after another, run the way the docks run them."""
    from napari_ssl_seg.widgets.background import in_background_priority

    def work() -> None:
        for volume in volumes:
            predictor.predict(volume, uncertainty="mc_dropout", name="case")  # type: ignore[attr-defined]

    seconds: list[float] = []

    def timed() -> None:
        started = time.perf_counter()
        in_background_priority(work)()
        seconds.append(time.perf_counter() - started)

    thread = threading.Thread(target=timed)  # as napari's worker thread, which waits on the niced one
    thread.start()
    thread.join()
    return seconds[0]


def one_round(root: Path, predictor: object, volumes: list[object], seconds: float, sharing: bool) -> dict[str, float]:
    from napari_ssl_seg.runtime import core_sharing
    from napari_ssl_seg.training.job import SHARE_FILE, RetrainJob

    job = RetrainJob.start(root, method="supervised", iterations=LONG, overrides=["log_every=1"], device="cpu")
    if not sharing:  # as before: the child is never signalled, and the GUI's work takes every core but one
        core_sharing.stop_sharing_with(job.out_dir / SHARE_FILE)
    try:
        deadline = time.monotonic() + 300
        while job.progress[0] < 20:  # past start-up and the first iterations
            if job.state != "running" or time.monotonic() > deadline:
                raise SystemExit(f"the retrain did not start: {job.state} {job.error}")
            time.sleep(0.2)
        alone = iterations_per_second(job, seconds)
        before, _ = job.progress
        started = time.perf_counter()
        predict_seconds = predict_as_the_dock(predictor, volumes)
        during = (job.progress[0] - before) / (time.perf_counter() - started)
    finally:
        job.cancel()
        job.wait(120)
        job.poll()
    return {"alone": alone, "during": during, "predict_s": predict_seconds}


def median(rows: list[dict[str, float]], key: str) -> float:
    return statistics.median(row[key] for row in rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=20.0, help="the retrain alone, per round")
    parser.add_argument("--cases", type=int, default=12, help="cases predicted in a row (as a re-rank does)")
    parser.add_argument("--work", type=Path, help="folder for the cohort (default: a temporary folder)")
    args = parser.parse_args()

    from napari_ssl_seg.inference.predictor import Predictor
    from napari_ssl_seg.shipped_models import shipped_model_path
    from napari_ssl_seg.store import Project

    work = args.work or Path(tempfile.mkdtemp(prefix="core_sharing_"))
    root = shipped_teacher_cohort(work)
    with Project.open(root) as project:
        volumes = [project.read_image(case.name) for case in project.cases()][: args.cases]
    predictor = Predictor.from_checkpoint(shipped_model_path("ucmt"), device="cpu")
    floor = predict_as_the_dock(predictor, volumes)
    print(f"predictions alone (MC dropout, T=8, {len(volumes)} cases): {floor:.1f} s", flush=True)
    rows: dict[str, list[dict[str, float]]] = {"sharing": [], "not sharing": []}
    for round_index in range(args.rounds):
        for mode in rows:
            row = one_round(root, predictor, volumes, args.seconds, sharing=mode == "sharing")
            rows[mode].append(row)
            print(
                f"round {round_index + 1} {mode:<12} retrain alone {row['alone']:5.2f} it/s, during the predictions "
                f"{row['during']:5.2f} it/s; predictions {row['predict_s']:5.1f} s",
                flush=True,
            )
    print(f"\n{'mode':<12} {'retrain alone it/s':>18} {'during predictions':>18} {'predictions s':>13}")
    for mode, found in rows.items():
        alone, during, seconds = (median(found, key) for key in ("alone", "during", "predict_s"))
        print(f"{mode:<12} {alone:18.2f} {during:18.2f} {seconds:13.1f}")
    for index, (shared, kept) in enumerate(zip(rows["sharing"], rows["not sharing"], strict=True)):
        training = shared["during"] / kept["during"] if kept["during"] else float("inf")
        prediction = shared["predict_s"] / kept["predict_s"]
        print(
            f"round {index + 1}: sharing / not sharing: retrain during the predictions {training:.2f}x, "
            f"predictions' time {prediction:.2f}x"
        )


if __name__ == "__main__":
    main()
