"""The progress callbacks the core reports long work through (no imports, so every layer may use them).

The GUI turns them into napari progress bars, the CLI into tqdm bars; the core never knows which.
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["CaseProgress", "StepProgress"]

#: ``(done, total)``: windows of a sliding-window pass, passes of a prediction.
StepProgress = Callable[[int, int], None]
#: ``(done, total, case)``: cases of a project, ``case`` the one just finished.
CaseProgress = Callable[[int, int, str], None]
