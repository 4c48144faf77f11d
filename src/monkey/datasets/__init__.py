"""Datasets: each loader turns a configured root into a list of `Source` rows (one subject image each)."""

from monkey.datasets.base import Source, load_sources

__all__ = ["Source", "load_sources"]
