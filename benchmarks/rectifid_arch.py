"""RectifID's models for the benchmarks, built from configs with random weights (no download).

`perflow_pipeline`: PeRFlow SD1.5's architecture (SD1.5 UNet 320/640/1280/1280, cross-attention 768;
the SD VAE; a CLIP ViT-L/14-sized text encoder) in a StableDiffusionPipeline with the project's
PeRFlowScheduler. `identity_loss`: OWL-ViT base-patch32 and DINOv2 ViT-B/14 shapes, random, written
once into the cache in their hub layouts and loaded through from_pretrained. `quick=True` gives the
tiny twins of the test suite instead.
"""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def ensure_monkey_importable() -> None:
    """Without an install (the GPU machine): `monkey` from src/, `monkey.baselines` from baselines/."""
    try:
        import monkey.baselines.rectifid
    except ImportError:
        sys.path.insert(0, str(ROOT / "src"))
        import monkey

        monkey.__path__.append(str(ROOT))  # monkey.baselines -> ROOT/baselines, as pyproject's package-dir


ensure_monkey_importable()

import diffusers  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from monkey.baselines.rectifid.detector import OwlVitDetector  # noqa: E402
from monkey.baselines.rectifid.embedder import Dinov2Embedder  # noqa: E402
from monkey.baselines.rectifid.loss import IdentityLoss  # noqa: E402
from monkey.baselines.rectifid.scheduler import PeRFlowScheduler  # noqa: E402

from monkey.models.tiny_rectifid import materialize_dinov2, materialize_owlvit  # noqa: E402
from monkey.models.tiny_tokenizer import write_tiny_clip_tokenizer  # noqa: E402

CROSS_DIM = 768
PROMPT = "dog on top of a wooden floor"


def sd15_unet(time_cond_proj_dim: int | None = None) -> diffusers.UNet2DConditionModel:
    """SD1.5's UNet (PeRFlow keeps it; LCM adds time_cond_proj_dim=256)."""
    return diffusers.UNet2DConditionModel(
        sample_size=64,
        block_out_channels=(320, 640, 1280, 1280),
        cross_attention_dim=CROSS_DIM,
        attention_head_dim=8,
        layers_per_block=2,
        time_cond_proj_dim=time_cond_proj_dim,
    )


def sd_vae() -> diffusers.AutoencoderKL:
    return diffusers.AutoencoderKL(
        block_out_channels=(128, 256, 512, 512),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=2,
        latent_channels=4,
        sample_size=512,
    )


def clip_text(folder: Path) -> tuple[transformers.CLIPTokenizer, transformers.CLIPTextModel]:
    write_tiny_clip_tokenizer(folder / "tokenizer", PROMPT.split())
    tokenizer = transformers.CLIPTokenizer.from_pretrained(folder / "tokenizer")
    config = transformers.CLIPTextConfig(
        vocab_size=49408,
        hidden_size=CROSS_DIM,
        intermediate_size=3072,
        num_attention_heads=12,
        num_hidden_layers=12,
        max_position_embeddings=77,
        projection_dim=CROSS_DIM,
        hidden_act="quick_gelu",
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return tokenizer, transformers.CLIPTextModel(config)


def perflow_scheduler() -> PeRFlowScheduler:
    stock = diffusers.PNDMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
    return PeRFlowScheduler.from_config(stock.config, prediction_type="diff_eps", num_time_windows=4)


def perflow_pipeline(folder: Path, device: torch.device, dtype: torch.dtype, quick: bool = False):
    """PeRFlow SD1.5's architecture, random weights (quick: the tiny twin of the tests)."""
    torch.manual_seed(0)
    if quick:
        from monkey.models.tiny import materialize_tiny

        pipe = diffusers.StableDiffusionPipeline.from_pretrained(
            materialize_tiny("perflow").pipeline, safety_checker=None, requires_safety_checker=False
        )
        pipe.scheduler = PeRFlowScheduler.from_config(pipe.scheduler.config, prediction_type="diff_eps")
    else:
        tokenizer, text_encoder = clip_text(folder)
        pipe = diffusers.StableDiffusionPipeline(
            vae=sd_vae(),
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            unet=sd15_unet(),
            scheduler=perflow_scheduler(),
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
    pipe.to(device, dtype)
    pipe.set_progress_bar_config(disable=True)
    for module in (pipe.unet, pipe.vae, pipe.text_encoder):
        module.requires_grad_(False)
    return pipe


def identity_loss(device: torch.device, dtype: torch.dtype, quick: bool = False) -> IdentityLoss:
    """OWL-ViT base-patch32 and DINOv2 ViT-B/14 shapes with random weights (quick: tiny twins)."""
    detector = OwlVitDetector(str(materialize_owlvit(full_size=not quick)), device=device)
    embedder = Dinov2Embedder(str(materialize_dinov2(full_size=not quick)), device=device)
    detector.model.to(dtype)
    embedder.model.to(dtype)
    return IdentityLoss(detector, embedder)
