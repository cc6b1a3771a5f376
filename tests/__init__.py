"""Tests for qdup."""
