"""Tests of the benchmark's pure helpers."""
