"""The tiny checkpoints are written in the hub layouts and round-trip through the real loaders."""

import json

import torch
from diffusers.models.attention_processor import AttnProcessor2_0, IPAdapterAttnProcessor2_0
from safetensors import safe_open
from transformers import CLIPTokenizer

from monkey.hashing import file_sha256
from monkey.models.profiles import load_pipeline, profile_from_config, resolve_runtime
from monkey.models.tiny import materialize_tiny

PAPER_LAYER = "up_blocks.1.attentions.1.transformer_blocks.0.attn2"


def test_pipeline_folder_has_hub_layout():
    paths = materialize_tiny("lcm")
    index = json.loads((paths.pipeline / "model_index.json").read_text())
    assert index["_class_name"] == "LatentConsistencyModelPipeline"
    assert index["scheduler"] == ["diffusers", "LCMScheduler"]
    for part in ("unet", "vae", "text_encoder", "tokenizer", "scheduler", "feature_extractor"):
        assert (paths.pipeline / part).is_dir(), part
    tokenizer_files = {p.name for p in (paths.pipeline / "tokenizer").iterdir()}
    assert {"vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json"} <= tokenizer_files
    assert "tokenizer.json" not in tokenizer_files  # as in the SD hub repos
    unet_config = json.loads((paths.pipeline / "unet" / "config.json").read_text())
    assert unet_config["time_cond_proj_dim"] is not None  # an LCM UNet


def test_ip_adapter_file_has_h94_keys():
    paths = materialize_tiny("lcm")
    with safe_open(paths.ip_adapter / "models" / "ip-adapter_sd15.safetensors", "pt") as handle:
        keys = set(handle.keys())
    assert {"image_proj.proj.weight", "image_proj.proj.bias", "image_proj.norm.weight"} <= keys
    indices = sorted({int(k.split(".")[1]) for k in keys if k.startswith("ip_adapter.")})
    assert indices == list(range(1, 2 * len(indices), 2))  # 1, 3, 5, ...: the cross-attention slots
    assert all(f"ip_adapter.{i}.to_v_ip.weight" in keys for i in indices)
    encoder = json.loads((paths.ip_adapter / "models" / "image_encoder" / "config.json").read_text())
    assert encoder["architectures"] == ["CLIPVisionModelWithProjection"]


def test_writing_is_deterministic(tmp_path, monkeypatch):
    first = materialize_tiny("lcm")
    monkeypatch.setenv("MONKEY_CACHE", str(tmp_path))
    second = materialize_tiny("lcm")
    assert first.pipeline != second.pipeline
    name = "models/ip-adapter_sd15.safetensors"
    assert file_sha256(first.ip_adapter / name) == file_sha256(second.ip_adapter / name)
    unet = "unet/diffusion_pytorch_model.safetensors"
    assert file_sha256(first.pipeline / unet) == file_sha256(second.pipeline / unet)


def test_loaded_pipeline_has_ip_processors_on_every_attn2(tiny_pipe):
    processors = tiny_pipe.unet.attn_processors
    cross = {n: p for n, p in processors.items() if n.endswith("attn2.processor")}
    assert len(cross) == 16  # SD1.5's attn2 layout (layers_per_block 2)
    assert all(isinstance(p, IPAdapterAttnProcessor2_0) for p in cross.values())
    assert all(isinstance(p, AttnProcessor2_0) for n, p in processors.items() if n not in cross)
    assert f"{PAPER_LAYER}.processor" in cross
    assert tiny_pipe.image_encoder is not None


def test_loaded_weights_equal_the_files(tiny_pipe):
    """load_ip_adapter mapped file slot k to the k-th processor, with the stored values."""
    paths = materialize_tiny("lcm")
    names = list(tiny_pipe.unet.attn_processors)
    with safe_open(paths.ip_adapter / "models" / "ip-adapter_sd15.safetensors", "pt") as handle:
        for key in handle.keys():  # noqa: SIM118 (safe_open is not a dict)
            if not key.startswith("ip_adapter."):
                continue
            _, slot, proj, _ = key.split(".")
            processor = tiny_pipe.unet.attn_processors[names[int(slot)]]
            loaded = getattr(processor, proj)[0].weight
            assert torch.equal(loaded, handle.get_tensor(key)), key
        proj = tiny_pipe.unet.encoder_hid_proj.image_projection_layers[0].image_embeds.weight
        assert torch.equal(proj, handle.get_tensor("image_proj.proj.weight"))


def test_tokenizer_keeps_prompt_words_whole():
    tokenizer = CLIPTokenizer.from_pretrained(materialize_tiny("lcm").pipeline / "tokenizer")
    prompt = "bear plushie on top of green grass with sunflowers around it"
    assert tokenizer.tokenize(prompt) == [word + "</w>" for word in prompt.split(" ")]
    assert tokenizer.tokenize("zq") == ["z", "q</w>"]  # unknown words still tokenize, by character


def test_sd15_profile_loads(make_config):
    profile = profile_from_config(make_config("model=tiny_sd15").model)
    runtime = resolve_runtime(profile, "cpu", "float32")
    pipe = load_pipeline(runtime.model, runtime.device, runtime.dtype)
    assert type(pipe).__name__ == "StableDiffusionPipeline"
    assert pipe.unet.config.time_cond_proj_dim is None
    assert isinstance(pipe.unet.attn_processors[f"{PAPER_LAYER}.processor"], IPAdapterAttnProcessor2_0)
