"""Synthetic data for demos and benchmarks (no Qt, no napari)."""
