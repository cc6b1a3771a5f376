"""Registry: the artifact store, publishing with its gate, lineage."""
