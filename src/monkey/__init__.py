"""monkey-bench: a reproducible benchmark harness for subject-driven generation (MONKEY Adapter)."""

from monkey.resolvers import register_resolvers

__version__ = "0.1.0"

register_resolvers()
