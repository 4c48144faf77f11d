"""Evaluation: metric backbones, scoring with embedding caches, aggregation, tables and plots."""
