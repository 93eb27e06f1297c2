"""Benchmarks; a package only so that tests/bench and mypy can import bench.loadbench."""
