"""Inference: sliding-window prediction, MC-dropout and disagreement uncertainty, case scores.

Core code: no Qt or napari imports here.
"""

# Here, not in window_functions.py, so the CLI can list the choices without importing torch.
#: "mc_dropout": the papers' MC dropout, both dropout layers, T passes of the decoder.
#: "fast": MC dropout before the classifier only (see mc_dropout.py), close to a plain pass in cost.
#: "disagreement": entropy of the averaged softmax of the teacher and the exported student (UCMT).
#: "none": plain prediction.
UNCERTAINTY_KINDS = ("mc_dropout", "fast", "disagreement", "none")
