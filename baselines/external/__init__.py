"""External methods: made by a program in its own environment, driven by the harness (see method.py)."""

from monkey.baselines.external.method import Environment, ExternalMethod
from monkey.baselines.external.process import ExternalProcessError

__all__ = ["Environment", "ExternalMethod", "ExternalProcessError"]
