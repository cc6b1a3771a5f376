"""Tests of the question index, search, mining and retrieval evaluation (qdup.search)."""
