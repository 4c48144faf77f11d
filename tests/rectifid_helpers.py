"""Shared by the RectifID tests (imported by them; not a test module): the tiny PeRFlow runtime, the
method on the tiny OWL-ViT and DINOv2 twins, and one torch thread for a module's many small ops."""

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from monkey.baselines.rectifid.method import RectifIDMethod

from monkey.methods.presets import model_profile_config
from monkey.models.profiles import Runtime, profile_from_config, resolve_runtime


@contextmanager
def one_torch_thread() -> Iterator[None]:
    """One thread inside, the previous count put back after (many small ops per guided iteration: one
    thread is faster than two on a busy CPU)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def tiny_perflow_runtime(dtype: str = "float32", vae_dtype: str = "auto") -> Runtime:
    """The tiny PeRFlow profile on the CPU."""
    return resolve_runtime(profile_from_config(model_profile_config("tiny_perflow")), "cpu", dtype, vae_dtype)


def tiny_part(kind: str) -> dict:
    """The `method.detector` / `method.embedder` config of the tiny OWL-ViT / DINOv2 twin."""
    target = {"detector": "detector.OwlVitDetector", "embedder": "embedder.Dinov2Embedder"}[kind]
    return {"_target_": f"monkey.baselines.rectifid.{target}", "tiny": True}


def tiny_rectifid(runtime: Runtime, **settings) -> RectifIDMethod:
    """RectifID on `runtime` with the tiny detector and embedder; `settings`: its other arguments."""
    return RectifIDMethod(
        "rectifid", runtime, detector=tiny_part("detector"), embedder=tiny_part("embedder"), **settings
    )
