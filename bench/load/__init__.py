"""Load benchmark of `qdup serve-model` with wrk (a C client): `python -m bench.load --help`."""
