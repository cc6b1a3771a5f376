"""Tests of qdup.registry."""
