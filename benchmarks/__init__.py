"""Speed and memory measurements (run as scripts: ``python benchmarks/<name>.py``)."""
