"""Scoring segmentations: one Dice (``dice``), the full metrics in mm (``metrics``), a project split
(``evaluate``) and the training loop's validation through the deployed predictor (``validation``)."""
