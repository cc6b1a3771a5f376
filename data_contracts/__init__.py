"""Data contracts: versioned Great Expectations suites, stored as JSON."""
