"""How does each network of a training run validate? Students against their teacher, for example.

Run: .venv/bin/python benchmarks/run_networks.py RUN_DIR PROJECT [--split validation] [--out DIR]

A run keeps every network it trains in its resume state (``RUN_DIR/state``); the shipped model holds
only the inference network. This scores each network of the last checkpoint on ``--split`` of
``PROJECT`` (the split the loop selects models on; never the test split by default), as if it were the
inference network: same card, same sliding window. It answers whether a method's students learn and
its teacher follows them (UCMT's teacher is an EMA of its two students' average).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
from pathlib import Path

from safetensors.torch import load_file

from napari_ssl_seg.evaluation.evaluate import evaluate_project
from napari_ssl_seg.networks.checkpoint import ModelCard, build_network, save_checkpoint
from napari_ssl_seg.runtime.allocator import keep_freed_memory
from napari_ssl_seg.store import Project
from napari_ssl_seg.training.state import resume_paths


def network_states(run: Path) -> tuple[dict[str, dict], int | None]:
    """Each network's weights in the run's last checkpoint, and that checkpoint's iteration."""
    weights_path, json_path = resume_paths(run)
    tensors = load_file(str(weights_path))
    states: dict[str, dict] = {}
    for key, value in tensors.items():
        if key.startswith("net."):
            name, parameter = key[len("net.") :].split(".", 1)
            states.setdefault(name, {})[parameter] = value
    document = json.loads(json_path.read_text(encoding="utf-8"))
    info = document.get("info", {})
    return states, info.get("iteration", document.get("iteration"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a training run folder (model.json, state/)")
    parser.add_argument("project", type=Path, help="the project it trained on")
    parser.add_argument("--split", default="validation")
    parser.add_argument("--out", type=Path, help="keep the per-network models here (default: a temporary folder)")
    args = parser.parse_args(argv)
    keep_freed_memory()
    card = ModelCard.from_json((args.run / "model.json").read_text(encoding="utf-8"), source=str(args.run))
    states, iteration = network_states(args.run)
    out = args.out or Path(tempfile.mkdtemp(prefix="run_networks_"))
    print(f"{args.run}: checkpoint at iteration {iteration}, {args.split} split")
    print(f"{'network':<12} {'mean Dice':>9}  per class")
    with Project.open(args.project) as project:
        for name, state in sorted(states.items()):
            network = build_network(card.network)
            try:
                network.load_state_dict(state, strict=True)
            except RuntimeError:
                print(f"{name:<12} {'-':>9}  (not a network of the inference architecture)")
                continue
            single = dataclasses.replace(card, extra_networks={})
            model_path = save_checkpoint(out / name, {"model": network}, single, overwrite=True)[1]
            summary = evaluate_project(project, model_path, split=args.split).summary
            per_class = {k: round(v["dice_mean"], 2) for k, v in summary["classes"].items()}
            print(f"{name:<12} {summary['overall']['dice_mean']:9.3f}  {per_class}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
