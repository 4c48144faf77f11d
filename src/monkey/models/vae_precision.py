"""Keep a pipeline's VAE in its own precision (fp32 under an fp16 UNet) without changing the pipelines.

SD1.5's VAE can overflow in fp16 (its config's `force_upcast`; diffusers upcasts only in some pipelines).
Here the VAE's weights stay in `vae_dtype`, forward pre-hooks cast whatever the pipeline or a method
hands the encoder and decoder paths to it, and the encoder path's output (latents for the UNet) goes
back to the UNet's dtype. The decoder's output stays in `vae_dtype`: pipelines only post-process it.
"""

import torch
from diffusers import AutoencoderKL


def cast_input(dtype: torch.dtype):
    def hook(module: torch.nn.Module, args: tuple) -> tuple:
        return (args[0].to(dtype), *args[1:])

    return hook


def cast_output(dtype: torch.dtype):
    def hook(module: torch.nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        return output.to(dtype)

    return hook


def keep_vae_in(vae: AutoencoderKL, vae_dtype: torch.dtype, latent_dtype: torch.dtype) -> None:
    """Run `vae` in `vae_dtype`; its encoder path returns latents in `latent_dtype` (the UNet's)."""
    vae.to(vae_dtype)
    encode_exit = vae.quant_conv if vae.quant_conv is not None else vae.encoder
    decode_entry = vae.post_quant_conv if vae.post_quant_conv is not None else vae.decoder
    vae.encoder.register_forward_pre_hook(cast_input(vae_dtype))
    encode_exit.register_forward_hook(cast_output(latent_dtype))
    decode_entry.register_forward_pre_hook(cast_input(vae_dtype))
    vae.decoder.register_forward_pre_hook(cast_input(vae_dtype))
