"""Tests for deployments/."""
