"""Tests of qdup.serving."""
