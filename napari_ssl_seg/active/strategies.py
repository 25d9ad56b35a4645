"""The ranking strategies a project's queue can be ordered by, and the model-free baselines.

Model-based strategies are scores of a case's prediction (:mod:`napari_ssl_seg.inference.case_scores`,
``structure_entropy`` the default). Model-free baselines, for comparison in the active-learning simulation:

* ``random``: a fixed pseudo-random number per (project seed, case), so a "random" queue is
  reproducible and independent of the order cases were imported.
* ``least_recent``: seconds since the case was last labeled (or imported, if never labeled), so
  the case nobody has looked at for longest comes first.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

from napari_ssl_seg.inference.case_scores import MODEL_STRATEGIES

__all__ = [
    "DEFAULT_STRATEGY",
    "MODEL_FREE_STRATEGIES",
    "MODEL_STRATEGIES",
    "STRATEGIES",
    "least_recent_score",
    "random_score",
]

MODEL_FREE_STRATEGIES = ("random", "least_recent")
STRATEGIES = MODEL_STRATEGIES + MODEL_FREE_STRATEGIES
DEFAULT_STRATEGY = "structure_entropy"


def random_score(seed: int, case_name: str) -> float:
    """A reproducible number in [0, 1) for (seed, case); independent of import order."""
    digest = hashlib.sha256(f"{seed}:{case_name}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def least_recent_score(last_touched: str, now: datetime | None = None) -> float:
    """Seconds since ``last_touched`` (an ISO-8601 UTC time): larger means longer untouched."""
    then = datetime.fromisoformat(last_touched.replace("Z", "+00:00"))
    if then.tzinfo is None:
        then = then.replace(tzinfo=UTC)
    return max(((now or datetime.now(UTC)) - then).total_seconds(), 0.0)
