"""Benchmark of the qdup pipeline: per-stage time and memory, training throughput, warm re-run, inference."""
