"""Tests of qdup.model."""
