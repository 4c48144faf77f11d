"""monkey-bench: a reproducible benchmark harness for subject-driven generation (MONKEY Adapter)."""

__version__ = "0.1.0"
