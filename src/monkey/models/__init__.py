"""Model profiles: hub ids or local paths loaded through the libraries' own `from_pretrained` calls."""

from monkey.models.profiles import ModelProfile, Runtime, load_pipeline, profile_from_config, resolve_runtime

__all__ = ["ModelProfile", "Runtime", "load_pipeline", "profile_from_config", "resolve_runtime"]
