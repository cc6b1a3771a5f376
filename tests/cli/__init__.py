"""Tests for the qdup command line."""
