"""A simulated machine room for whole-system benchmarks (see __main__.py)."""
