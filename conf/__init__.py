"""Hydra config groups, importable so Hydra finds them as pkg://monkey.conf when installed."""
