"""The benchmark scripts (each run as ``python benchmarks/NAME.py``) and ``python -m benchmarks.tables``,
which writes their results into the docs."""
