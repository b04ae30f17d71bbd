"""Benchmarks: `make bench` (= `python -m benchmarks [names] [--repeat N]`).

Every figure is a ratio against a baseline measured in the same run (the machine
is small and noisy); nothing here asserts on time. Results go to
benchmarks/results/<name>.json (git-ignored). Keep this module import-light:
benchmarks.prep_worker children import it too.
"""
