"""Data: fetching, contracts, splits and the demo generator."""
