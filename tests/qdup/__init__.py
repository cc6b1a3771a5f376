"""Tests for qdup/."""
