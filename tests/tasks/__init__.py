"""Tests for tasks/."""
