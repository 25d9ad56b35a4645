"""The synthetic cohort generator: deformed, re-scanned copies of one labeled volume, for demos and benchmarks."""
