"""Simulated labeling sessions: does uncertainty-guided labeling pay?

A session runs on a project whose training cases all have ground truth (a label, or a withheld
reference label as ``make-cohort --labeled`` keeps). For each seed it builds a fresh COPY of the
project in ``<work>/seed<k>/project`` (the user's project is only read): validation and test
cases keep their labels, every training case starts unlabeled with its ground truth stored as
the copy's reference label, and ``initial`` training cases drawn with the seed are "labeled"
(the reference is saved as a label version of kind ``simulation``). Round 0 trains a teacher on
them; every later round ranks the remaining pool with the strategy, labels the top ``budget``
cases, fine-tunes from the previous teacher and evaluates on the test split. Every round's test
Dice is recorded against the number of labeled cases.

Which teacher goes on is the GUI's one-click retrain rule (``promotion="validation"``): the
fine-tuned model replaces the teacher only if its validation Dice is at least the teacher's
(:func:`napari_ssl_seg.training.promote.is_better`); otherwise the round keeps, ranks with and is
scored by the previous teacher. ``promotion="always"`` takes every fine-tuned model (how the
sessions measured before the rule was simulated ran): a fine-tune that loses accuracy then
carries its loss into every later round.

The seed changes the initial cases, the training seed and (as the copy's project seed) the
random strategy's draws. ``<work>/result.json`` is rewritten after every round, so a long
session that is interrupted keeps what it measured.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from napari_ssl_seg.active.ranking import candidate_cases, rank_project
from napari_ssl_seg.active.simulated_project import GroundTruthSource, copy_project, read_source, reveal
from napari_ssl_seg.active.simulation_records import RoundRecord, SimulationResult
from napari_ssl_seg.active.strategies import DEFAULT_STRATEGY, STRATEGIES
from napari_ssl_seg.errors import InputError
from napari_ssl_seg.evaluation.evaluate import evaluate_project
from napari_ssl_seg.inference.case_scores import MODEL_STRATEGIES
from napari_ssl_seg.inference.predictor import Predictor
from napari_ssl_seg.methods.registry import method_class
from napari_ssl_seg.progress import CaseProgress
from napari_ssl_seg.store import Project
from napari_ssl_seg.store.models import register_model
from napari_ssl_seg.store.ranking_cache import read_prediction
from napari_ssl_seg.training.config import TrainConfig
from napari_ssl_seg.training.loop import train
from napari_ssl_seg.training.promote import is_better, validation_dice

__all__ = [
    "PROMOTIONS",
    "FixedOrder",
    "RoundRecord",
    "SimulationResult",
    "SimulationSettings",
    "initial_cases",
    "parse_initial",
    "simulate",
]

PROMOTIONS = ("validation", "always")


@dataclass(frozen=True)
class FixedOrder:
    """A strategy that labels cases in a given order: replays a real session, and lets tests
    separate the simulation's bookkeeping from what a ranking chooses."""

    order: tuple[str, ...]
    name: str = "fixed_order"


Strategy = str | FixedOrder


@dataclass
class SimulationSettings:
    """How a session runs. ``budget``: cases labeled per round. ``rounds`` None: until the pool
    is used up. ``initial``: how many training cases start labeled (drawn with the seed), or
    exactly which. ``init_model``: the teacher round 0 fine-tunes from (None: from scratch), or
    one per seed (each session's starting teacher trained on that seed's initial cases).
    ``promotion``: which teacher goes on after a round (see the module doc, ``PROMOTIONS``)."""

    strategy: Strategy = DEFAULT_STRATEGY
    budget: int = 1
    rounds: int | None = None
    initial: int | Sequence[str] = 2
    seeds: Sequence[int] = (0,)
    samples: int = 8
    uncertainty: str | None = None
    init_model: Path | Mapping[int, Path] | None = None
    device: str = "auto"
    promotion: str = "validation"

    @property
    def strategy_name(self) -> str:
        return self.strategy if isinstance(self.strategy, str) else self.strategy.name

    def starting_teacher(self, seed: int) -> Path | None:
        """The teacher session ``seed`` starts from (None: round 0 trains from scratch)."""
        if isinstance(self.init_model, Mapping):
            return Path(self.init_model[seed])
        return self.init_model


def _plan(source: GroundTruthSource, settings: SimulationSettings) -> int:
    """Check the settings against the project before any work; return the number of rounds."""
    strategy = settings.strategy
    if settings.promotion not in PROMOTIONS:
        raise InputError(f"unknown promotion {settings.promotion!r} (known: {', '.join(PROMOTIONS)})")
    if isinstance(strategy, str) and strategy not in STRATEGIES:
        raise InputError(f"unknown strategy {strategy!r} (known: {', '.join(STRATEGIES)})")
    if not settings.seeds or len(set(settings.seeds)) != len(settings.seeds):
        raise InputError(f"seeds must be one or more distinct integers, got {list(settings.seeds)}")
    if isinstance(settings.init_model, Mapping):
        missing = [seed for seed in settings.seeds if seed not in settings.init_model]
        if missing:
            raise InputError(f"no starting teacher for seed(s) {', '.join(map(str, missing))}")
    if strategy in MODEL_STRATEGIES and settings.uncertainty == "none":
        raise InputError(f"strategy {strategy} ranks by uncertainty; --uncertainty none gives none")
    if settings.budget < 1:
        raise InputError(f"budget must be at least 1 case per round, got {settings.budget}")
    if isinstance(settings.initial, int):
        initial = settings.initial
    else:
        unknown = [name for name in settings.initial if name not in source.train]
        if unknown:
            raise InputError(f"initial case(s) {', '.join(unknown)} are not training cases")
        initial = len(set(settings.initial))
    if not 1 <= initial < len(source.train):
        raise InputError(
            f"initial labeled cases must be between 1 and {len(source.train) - 1} "
            f"(the project has {len(source.train)} training cases), got {initial}"
        )
    pool = len(source.train) - initial
    if settings.budget > pool:
        raise InputError(f"budget {settings.budget} is larger than the pool of {pool} unlabeled training cases")
    rounds = pool // settings.budget if settings.rounds is None else settings.rounds
    if rounds < 1:
        raise InputError(f"rounds must be at least 1, got {rounds}")
    if rounds * settings.budget > pool:
        raise InputError(
            f"{rounds} rounds of {settings.budget} case(s) need {rounds * settings.budget} unlabeled training "
            f"cases; the pool has {pool}"
        )
    return rounds


def parse_initial(text: str) -> int | list[str]:
    """A command line's initial cases: a count (drawn per seed), or comma-separated case names."""
    text = text.strip()
    return int(text) if text.isdigit() else sorted({name.strip() for name in text.split(",") if name.strip()})


def initial_cases(info: GroundTruthSource, settings: SimulationSettings, seed: int) -> list[str]:
    """The training cases session ``seed`` starts with labeled: ``settings.initial``, named or drawn."""
    if not isinstance(settings.initial, int):
        return sorted(set(settings.initial))
    picked = np.random.default_rng([seed, 0x51]).choice(len(info.train), size=settings.initial, replace=False)
    return sorted(info.train[int(index)] for index in picked)


def _pick(project: Project, settings: SimulationSettings, teacher: Path) -> tuple[list[str], list[float | None]]:
    """The next ``budget`` cases of the strategy's queue, never a labeled, validation or test case."""
    pool = candidate_cases(project)
    strategy = settings.strategy
    if isinstance(strategy, FixedOrder):
        queue: list[tuple[str, float | None]] = [(name, None) for name in strategy.order if name in pool]
    else:
        # Model-free strategies get no model: ranking then skips the network entirely.
        model = teacher if strategy in MODEL_STRATEGIES else None
        result = rank_project(
            project,
            model=model,
            strategy=strategy,
            device=settings.device,
            samples=settings.samples,
            uncertainty=settings.uncertainty,
        )
        queue = [(name, score) for name, score in result.queue if name in pool]
    if len(queue) < settings.budget:
        raise InputError(
            f"strategy {settings.strategy_name} ordered {len(queue)} of the pool's cases; {settings.budget} are needed"
        )
    chosen = queue[: settings.budget]
    return [name for name, _ in chosen], [score for _, score in chosen]


def _teacher_predictions(
    project: Project, teacher: Path | None, names: list[str], device: str
) -> dict[str, tuple[str, np.ndarray]]:
    """The teacher's label map of each picked case, the one the annotator would correct: the
    ranking's cached prediction, else a plain one (model-free strategies rank without a network)."""
    if teacher is None:
        return {}
    version = register_model(project, teacher)
    predictor: Predictor | None = None
    maps = {}
    for name in names:
        cached = read_prediction(project, version.name, name)
        if cached is None:
            predictor = predictor or Predictor.from_checkpoint(version.checkpoint(project), device=device)
            label = predictor.predict(project.read_image(name), uncertainty="none", name=name).label
        else:
            label = cached[0]
        maps[name] = (version.name, np.asarray(label.array))
    return maps


def _train(
    project: Project, config: TrainConfig, out: Path, init: Path | None, device: str
) -> tuple[Path, float | None, float]:
    tick = time.perf_counter()
    result = train(project.root, config, out, init_model=init, device=device)
    seconds = time.perf_counter() - tick
    if result.model_path is None:
        raise InputError(f"training in {out} exported no model (status {result.status})")
    return result.model_path, result.best_validation_dice, seconds


class _Scores:
    """Test Dice and the promotion criterion per checkpoint, each computed once: a kept teacher is
    scored again in every round it stays, and its labels (validation, test) never change."""

    def __init__(self, project: Project, device: str) -> None:
        self.project, self.device = project, device
        self._tested: dict[str, tuple[float, float | None]] = {}
        self._validated: dict[str, float] = {}

    def test(self, checkpoint: Path) -> tuple[float, float | None]:
        """Test Dice and HD95 (mm; None when no (case, class) pair has a distance)."""
        key = str(checkpoint)
        if key not in self._tested:
            overall = evaluate_project(self.project, checkpoint, split="test", device=self.device).summary["overall"]
            hd95 = overall.get("hd95_mm_mean")
            finite = hd95 is not None and math.isfinite(hd95)
            self._tested[key] = (float(overall["dice_mean"]), float(hd95) if finite else None)
        return self._tested[key]

    def validation(self, checkpoint: Path) -> float:
        key = str(checkpoint)
        if key not in self._validated:  # the very criterion the retrain's promotion uses
            self._validated[key] = validation_dice(self.project, checkpoint, device=self.device)
        return self._validated[key]


def simulate(
    project_root: Path | str,
    work_dir: Path | str,
    config: TrainConfig,
    settings: SimulationSettings,
    *,
    progress: CaseProgress | None = None,
) -> SimulationResult:
    """Run one simulated labeling session per seed in ``work_dir`` (new or empty); see the module doc.

    ``config`` is the training config of every round (its ``seed`` is replaced by each session's
    seed). Raises :class:`InputError` for unusable input before anything is trained.
    """
    work = Path(work_dir)
    if work.exists() and (not work.is_dir() or any(work.iterdir())):
        raise InputError(f"work folder {work} already exists and is not empty; choose another --work")
    method_class(config.method)  # unknown or unavailable method: fail before anything is copied
    with Project.open(project_root) as source:
        info = read_source(source)
        rounds = _plan(info, settings)
        work.mkdir(parents=True, exist_ok=True)
        summary = {**dataclasses.asdict(settings), "rounds": rounds, "project": str(Path(project_root))}
        summary["strategy"] = settings.strategy_name
        summary["initial"] = settings.initial if isinstance(settings.initial, int) else list(settings.initial)
        summary["init_model"] = (
            {str(seed): str(settings.starting_teacher(seed)) for seed in settings.seeds}
            if isinstance(settings.init_model, Mapping)
            else None
            if settings.init_model is None
            else str(settings.init_model)
        )
        summary["seeds"] = list(settings.seeds)
        summary["config"] = config.to_dict()
        result = SimulationResult(settings.strategy_name, config.method, work, summary)
        total = len(settings.seeds) * (rounds + 1)
        for index, seed in enumerate(settings.seeds):
            with copy_project(source, info, work / f"seed{seed}" / "project", seed) as copy:
                _session(copy, info, config, settings, seed, rounds, result, progress, done=index * (rounds + 1))
    if progress:
        progress(total, total, "done")
    return result


def _session(
    project: Project,
    info: GroundTruthSource,
    config: TrainConfig,
    settings: SimulationSettings,
    seed: int,
    rounds: int,
    result: SimulationResult,
    progress: CaseProgress | None,
    *,
    done: int,
) -> None:
    total = len(settings.seeds) * (rounds + 1)
    seeded = dataclasses.replace(config, seed=seed, method_settings=dict(config.method_settings))
    labeled = initial_cases(info, settings, seed)
    reveal(project, labeled)
    teacher = settings.starting_teacher(seed)
    scores = _Scores(project, settings.device)
    runs = project.root.parent / "runs"
    for round_index in range(rounds + 1):
        if progress:
            progress(done + round_index, total, f"seed {seed} round {round_index}")
        picked: list[str] = []
        picked_scores: list[float | None] = []
        tick = time.perf_counter()
        corrected: list[int] = []
        scratch: list[int] = []
        if round_index > 0:
            picked, picked_scores = _pick(project, settings, teacher)
        rank_seconds = time.perf_counter() - tick
        if picked:
            saved = reveal(project, picked, _teacher_predictions(project, teacher, picked, settings.device))
            corrected = [version.changed_voxels or 0 for version in saved]
            scratch = [version.foreground_voxels or 0 for version in saved]
            labeled = sorted([*labeled, *picked])
        model, validation, seconds = _train(project, seeded, runs / f"round{round_index:02d}", teacher, settings.device)
        promoted = (
            teacher is None
            or settings.promotion == "always"
            or is_better(scores.validation(model), scores.validation(teacher))
        )
        if promoted:
            teacher = model
        test_dice, test_hd95 = scores.test(teacher)
        result.records.append(
            RoundRecord(
                seed=seed,
                round=round_index,
                labeled=len(labeled),
                labeled_cases=list(labeled),
                picked=picked,
                picked_scores=picked_scores,
                test_dice=test_dice,
                test_hd95_mm=test_hd95,
                validation_dice=validation,
                model=str(model),
                train_seconds=round(seconds, 2),
                rank_seconds=round(rank_seconds, 2),
                promoted=promoted,
                teacher=str(teacher),
                corrected_voxels=corrected,
                scratch_voxels=scratch,
            )
        )
        # Rewritten every round: an interrupted session keeps what it measured.
        (result.work_dir / "result.json").write_text(json.dumps(result.as_dict(), indent=1), encoding="utf-8")
