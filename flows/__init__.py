"""Flows: each module composes tasks into one user-facing entry point."""
