"""The benchmarks' shared harness: each `python -m bench.X` script keeps only its own measurement.

- `bench.harness.stats`: percentiles, latency summaries (p50/p90/p99), throughput, timed and repeated calls;
- `bench.harness.procs`: CPU seconds and peak RSS of this process, of a child, and of a process tree;
- `bench.harness.steps`: named steps run in a child process (wall and CPU seconds, peak RSS, load around it);
- `bench.harness.machine`: the machine, its load, the exact command and the git commit of a run;
- `bench.harness.results`: a run's results JSON and Markdown page, with the header naming all of that;
- `bench.harness.tables`: Markdown tables, number formats and target/verdict rows.
"""
