"""Inference: sliding-window prediction, MC-dropout and disagreement uncertainty, case scores.

Core code: no Qt or napari imports here.
"""
