"""Serving: loading an exported model and scoring questions with it."""
