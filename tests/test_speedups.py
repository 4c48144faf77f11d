"""The `runtime:` speed-up keys: compiled MONKEY keeps its capture, step control, per-item embeddings and
early exit (same masks and images as eager); bad values and CUDA graphs stop in one line; an SDPA backend
without a kernel fails naming the key; every key that moves pixels enters the config hash and the folder."""

from pathlib import Path

import monkey.conf
import pytest
import torch
import torch._dynamo
from conftest import compose_config
from monkey_helpers import PAPER_LAYER, settings, subject_embeds
from omegaconf import OmegaConf
from test_bad_input import SMALL, failed_line

from monkey.adapter.sampler import MonkeySampler, SubjectBatch
from monkey.cli import run_job
from monkey.errors import ConfigError
from monkey.models import speedups
from monkey.models.profiles import load_runtime_pipeline, profile_from_config, resolve_runtime
from monkey.models.speedups import Speedups, is_compiled, sampling, speedups_from_config
from monkey.runner import generation_config

# Every kind of step MONKEY's controller makes, in as few steps as compile allows: pass 1 records step 0
# and leaves the UNet at the capture layer; pass 2 runs IP scale 0 (step 0), masked (1), unmasked (2).
KNOBS = {"initial_steps": 1, "capture_steps": (0,), "final_steps": 3, "ip_steps": (1, 2), "mask_steps": (1,)}
# Dynamo's "eager" backend runs the captured graphs op by op, so compiled and eager agree to float
# rounding of the same kernels; inductor's fused kernels differ more (docs/gpu-speed.md states its figure)
IMAGE_TOLERANCE = 1e-5


def runtime(**keys):
    model = profile_from_config(compose_config("model=tiny").model)
    return resolve_runtime(model, "cpu", "float32", speedups=Speedups(**keys))


@torch.no_grad()
def monkey_with_counts(pipe):
    """MONKEY on two subjects in one batch; also how often the UNet's last layer (conv_out) ran."""
    embeds = torch.cat([subject_embeds(pipe, 0), subject_embeds(pipe, 1)])  # [2, 1, D]
    batch = SubjectBatch(["dog in the snow", "cat on the beach"], [3, 4], embeds, 64, 64)
    calls = []
    handle = pipe.unet.conv_out.register_forward_hook(lambda *_: calls.append(1))
    try:
        output = MonkeySampler(pipe, settings("tiny", **KNOBS))(batch, output_type="pt")
    finally:
        handle.remove()
    return output, len(calls)


@pytest.fixture(scope="module")
def eager_and_compiled():
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(speedups, "COMPILE_BACKEND", "eager")  # see COMPILE_BACKEND: the test's one compile
        torch._dynamo.reset()
        torch._dynamo.utils.counters.clear()
        eager = monkey_with_counts(load_runtime_pipeline(runtime()))
        pipe = load_runtime_pipeline(runtime(compile="default"))
        compiled = monkey_with_counts(pipe)
        graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
        again = monkey_with_counts(pipe)  # a second call reuses the graphs
        graphs_again = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    return eager, compiled, again, pipe, (graphs, graphs_again)


def test_compiled_monkey_records_masks_and_images_as_eager(eager_and_compiled):
    (eager, _), (compiled, _), (again, _), pipe, (graphs, graphs_again) = eager_and_compiled
    assert is_compiled(pipe.unet) and graphs > 0  # the forward really went through Dynamo ...
    assert graphs_again == graphs  # ... and a second call with new processors and controllers built none
    for output in (compiled, again):
        for item in range(2):
            record, reference = output.pass1.records[item], eager.pass1.records[item]
            assert list(record) == list(reference) == [f"{PAPER_LAYER}@0"]  # the capture ran under compile
            torch.testing.assert_close(record[f"{PAPER_LAYER}@0"], reference[f"{PAPER_LAYER}@0"], atol=1e-6, rtol=0)
            assert torch.equal(output.masks[item].mask, eager.masks[item].mask)
        torch.testing.assert_close(output.images, eager.images, atol=IMAGE_TOLERANCE, rtol=0)


def test_compiled_pass1_still_leaves_the_unet_at_the_capture_layer(eager_and_compiled):
    (_, eager_exits), (_, compiled_exits), *_ = eager_and_compiled
    # conv_out (the UNet's last layer) runs in pass 2's three steps only: pass 1's one evaluation left early
    assert eager_exits == compiled_exits == KNOBS["final_steps"]


def test_compiled_masks_follow_the_step_plan(eager_and_compiled):
    """Pass 2 with full masks instead of the recorded ones moves the images: the compiled forward applies
    the masks it is handed on the mask step rather than a plan frozen into a graph."""
    _, (compiled, _), _, pipe, _ = eager_and_compiled
    assert not all(bool(mask.mask.all()) for mask in compiled.masks)  # the recorded masks leave something out
    embeds = torch.cat([subject_embeds(pipe, 0), subject_embeds(pipe, 1)])
    batch = SubjectBatch(["dog in the snow", "cat on the beach"], [3, 4], embeds, 64, 64)
    with torch.no_grad():
        full = MonkeySampler(pipe, settings("tiny", **KNOBS)).final(batch, torch.ones(2, 64, 64), output_type="pt")
    assert (full - compiled.images).abs().max() > 100 * IMAGE_TOLERANCE


@pytest.mark.parametrize(
    ("override", "names"),
    [
        ("runtime.compile=fast", "runtime.compile='fast'"),
        ("runtime.sdpa_backend=xformers", "runtime.sdpa_backend='xformers'"),
        ("runtime.channels_last=maybe", "runtime.channels_last='maybe'"),
        ("runtime.cudnn_benchmark=fast", "runtime.cudnn_benchmark='fast'"),
        ("runtime.cuda_graphs=true", "runtime.cuda_graphs=true is refused"),
    ],
)
def test_bad_speedup_values_stop_in_one_line_before_any_work(tmp_path, caplog, override, names):
    cfg = compose_config(*SMALL, "run.stages=[generate]", override)
    message = failed_line(caplog, run_job(cfg, tmp_path / "run"))
    assert names in message and ("allowed" in message or "compile=reduce-overhead" in message)
    assert not (tmp_path / "run" / "images").exists()


def test_an_sdpa_backend_without_a_kernel_names_the_key_and_writes_nothing(tmp_path, caplog):
    cfg = compose_config(*SMALL, "run.stages=[generate]", "runtime.sdpa_backend=efficient")  # no CPU kernel
    message = failed_line(caplog, run_job(cfg, tmp_path / "run"))
    assert "runtime.sdpa_backend='efficient' has no kernel" in message and "cpu" in message
    assert not list((tmp_path / "run").rglob("*.png"))


def flash_enabled_inside(module: torch.nn.Module, seen: list[bool]) -> None:
    module.register_forward_pre_hook(lambda *_: seen.append(torch.backends.cuda.flash_sdp_enabled()))


@torch.no_grad()
def test_the_sdpa_backend_holds_inside_the_unet_only_and_is_put_back_even_after_an_exception():
    """The VAE (fp32 under an fp16 UNet, where flash has no kernel) keeps torch's choice; the UNet gets
    only the chosen backend; the flags come back after every evaluation, also one left by an exception."""
    pipe = load_runtime_pipeline(runtime(sdpa_backend="math"))
    unet_attention = next(m for name, m in pipe.unet.named_modules() if name.endswith("attn1"))
    seen_unet: list[bool] = []
    seen_vae: list[bool] = []
    flash_enabled_inside(unet_attention, seen_unet)
    flash_enabled_inside(pipe.vae.decoder.mid_block.attentions[0], seen_vae)
    with sampling(Speedups(sdpa_backend="math")):  # one whole call, as the runner makes it
        pipe(
            prompt="a dog",
            num_inference_steps=2,
            height=64,
            width=64,
            ip_adapter_image_embeds=[subject_embeds(pipe)],
            output_type="pil",
        )
    assert len(seen_unet) == 2 and not any(seen_unet)  # only math inside the UNet, at both steps
    assert seen_vae == [True]  # the VAE's decode: torch's own choice
    assert torch.backends.cuda.flash_sdp_enabled() and torch.backends.cuda.math_sdp_enabled()  # put back
    latents = torch.randn(1, pipe.unet.config.in_channels, 8, 8)
    text = torch.randn(1, 77, pipe.unet.config.cross_attention_dim)
    unet_call = {"encoder_hidden_states": text, "added_cond_kwargs": {"image_embeds": [subject_embeds(pipe)]}}
    handle = unet_attention.register_forward_pre_hook(lambda *_: (_ for _ in ()).throw(ValueError("planted")))
    with pytest.raises(ValueError, match="planted"):
        pipe.unet(latents, 10, **unet_call)
    handle.remove()
    assert torch.backends.cuda.flash_sdp_enabled()  # the exit hook ran although the forward raised
    query = torch.randn(1, 2, 4, 8)
    only_cudnn = torch.nn.attention.sdpa_kernel([torch.nn.attention.SDPBackend.CUDNN_ATTENTION])
    refused = pytest.raises(ConfigError, match=r"runtime\.sdpa_backend='cudnn'")  # inside a UNet: a config error
    with refused, sampling(Speedups(sdpa_backend="cudnn")), only_cudnn:
        torch.nn.functional.scaled_dot_product_attention(query, query, query)


def test_keys_that_move_pixels_enter_the_hash_and_the_folder_name():
    cfg = compose_config("model=tiny")
    base = generation_config(cfg, runtime())
    assert "runtime" not in base  # the defaults leave existing run folders' hashes as they were
    for keys, expected in (
        ({"compile": "default"}, {"compile": "default"}),
        ({"channels_last": True}, {"channels_last": True}),  # other conv kernels: pixels move by ~1e-6
        ({"sdpa_backend": "math"}, {"sdpa_backend": "math"}),
        ({"cudnn_benchmark": True}, {"cudnn_benchmark": True}),  # other convolution algorithms
    ):
        assert generation_config(cfg, runtime(**keys))["runtime"] == expected
    config_yaml = Path(monkey.conf.__file__).with_name("config.yaml")
    excluded = set(OmegaConf.load(config_yaml).hydra.job.config.override_dirname.exclude_keys)
    assert not excluded & {f"runtime.{key}" for key in speedups.KEYS}  # overridden, they name the folder


def test_config_values_are_read_once_into_the_record():
    assert speedups_from_config(compose_config().runtime) == Speedups()
    node = {"compile": "max-autotune", "channels_last": True, "sdpa_backend": "flash", "cuda_graphs": False}
    assert speedups_from_config(node) == Speedups("max-autotune", True, "flash", False)
    assert speedups_from_config({"compile": True}).compile == "default"
    assert speedups_from_config({"cudnn_benchmark": True}) == Speedups(cudnn_benchmark=True)


def test_cudnn_benchmark_is_on_only_during_a_call_and_put_back_after_an_error():
    assert not torch.backends.cudnn.benchmark
    with sampling(Speedups(cudnn_benchmark=True)):
        assert torch.backends.cudnn.benchmark
    assert not torch.backends.cudnn.benchmark
    with pytest.raises(RuntimeError, match="planted"), sampling(Speedups(cudnn_benchmark=True)):
        raise RuntimeError("planted")  # not a missing kernel: passed on as it is
    assert not torch.backends.cudnn.benchmark
    with sampling(Speedups()):
        assert not torch.backends.cudnn.benchmark


def test_channels_last_puts_the_unet_and_vae_weights_in_that_layout():
    pipe = load_runtime_pipeline(runtime(channels_last=True))
    for conv in (pipe.unet.conv_in, pipe.vae.decoder.conv_in):
        assert conv.weight.is_contiguous(memory_format=torch.channels_last) and not conv.weight.is_contiguous()
