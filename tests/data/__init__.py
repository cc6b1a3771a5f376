"""Tests of qdup.data."""
