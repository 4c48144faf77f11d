"""The method interface every generator (MONKEY, baselines, wrapped external tools) implements."""

from monkey.methods.base import GenerationRequest, GenerationResult, Method, build_method

__all__ = ["GenerationRequest", "GenerationResult", "Method", "build_method"]
