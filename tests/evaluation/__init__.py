"""Tests of qdup.evaluation."""
