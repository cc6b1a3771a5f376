"""Evaluation: pair metrics, thresholds and curves."""
