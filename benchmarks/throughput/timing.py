"""How the throughput benchmark measures: peak memory, FLOPs, the device's peak, rotating rounds of the
three methods per batch size, and MONKEY's parts timed alone."""

import copy
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from benchtools import sync, timed
from lcm_arch import Shapes
from torch.utils.flop_counter import FlopCounterMode

from monkey.adapter.sampler import MonkeySampler
from monkey.adapter.settings import MonkeySettings
from throughput.workload import Workload, log, pixels_of

# Dense fp16/bf16 tensor-core peaks from NVIDIA's data sheets (without sparsity), TFLOP/s, by device name.
SPEC_PEAKS = {"H100 PCIe": 756.0, "H100": 989.4, "H200": 989.4, "A100": 312.0, "L40S": 362.1, "L4": 121.0}


def peak_memory_mib(fn: Callable[[], Any], device: torch.device) -> float | None:
    """CUDA allocator peak of one call (None on CPU: the RSS of a shared process says little)."""
    if device.type != "cuda":
        fn()
        return None
    sync(device)
    torch.cuda.reset_peak_memory_stats(device)
    fn()
    sync(device)
    return torch.cuda.max_memory_allocated(device) / 2**20


def flops_of(fn: Callable[[], Any]) -> int:
    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return int(counter.get_total_flops())


def matmul_peak_tflops(device: torch.device, dtype: torch.dtype, seconds: float = 1.5) -> float | None:
    """A large dense matmul's rate: what this device reaches in practice (CUDA only)."""
    if device.type != "cuda":
        return None
    n = 8192
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    sync(device)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(10):
            a @ b
        count += 10
        sync(device)
    return 2 * n**3 * count / (time.perf_counter() - start) / 1e12


def spec_peak(name: str) -> float | None:
    for key, value in SPEC_PEAKS.items():  # "H100 PCIe" before "H100"
        if key in name:
            return value
    return None


def unet_evaluations(pipe, fn: Callable[[], Any]) -> int:
    """UNet evaluations started during `fn` (an early-exited one counts as started)."""
    count = [0]
    handle = pipe.unet.register_forward_pre_hook(lambda *_: count.__setitem__(0, count[0] + 1))
    try:
        fn()
    finally:
        handle.remove()
    return count[0]


def measure_batch(work: Workload, rounds: int, device: torch.device) -> dict[str, Any]:
    methods = work.methods()
    peaks = {name: peak_memory_mib(fn, device) for name, fn in methods.items()}  # also the warm-up
    times: dict[str, list[float]] = {name: [] for name in methods}
    names = list(methods)
    for index in range(rounds):  # rotate the order, so drifting load or clocks hit every method alike
        order = names[index % len(names) :] + names[: index % len(names)]
        for name in order:
            times[name].append(timed(methods[name], device))
    batch = len(work.batch)
    result: dict[str, Any] = {"batch_size": batch, "rounds": rounds}
    for name in names:
        median = statistics.median(times[name])
        result[name] = {
            "seconds": times[name],
            "median_s": median,
            "images_per_s": batch / median,
            "peak_memory_mib": peaks[name],
        }
    result["monkey_over_ip_adapter"] = statistics.median(
        m / i for m, i in zip(times["monkey"], times["ip_adapter"], strict=True)
    )
    result["shared_over_ip_adapter"] = statistics.median(
        m / i for m, i in zip(times["monkey_shared_pass1"], times["ip_adapter"], strict=True)
    )
    return result


def flop_profile(pipe, sampler: MonkeySampler, shapes: Shapes, size: int, device) -> dict[str, Any]:
    """FLOPs per image (batch 1) of each way, and of one UNet evaluation whole and cut at the capture layer."""
    work = Workload(pipe, sampler, shapes, 1, size, device)
    text = sampler.encode_text(work.batch)
    unet_full = flops_of(
        lambda: pipe(
            **sampler.call_kwargs(work.batch, text),
            ip_adapter_image_embeds=[work.embeds],
            num_inference_steps=1,
            output_type="latent",
        )
    )
    text_flops = flops_of(lambda: sampler.encode_text(work.batch))
    cut = MonkeySampler(pipe, MonkeySettings(capture_steps=(0,), initial_steps=sampler.settings.initial_steps))
    unet_cut = flops_of(lambda: cut.record(work.batch, text))
    per_image = {name: flops_of(fn) for name, fn in work.methods().items()}
    evaluations = unet_evaluations(pipe, work.monkey)
    s = sampler.settings
    cut_fraction = unet_cut / unet_full
    return {
        "unet_evaluation_flops": unet_full,
        "unet_evaluation_cut_at_capture_layer_flops": unet_cut,
        "cut_fraction": cut_fraction,
        "text_encoder_flops": text_flops,
        "per_image_flops": per_image,
        "monkey_unet_evaluations_started": evaluations,
        "monkey_unet_evaluation_equivalents": s.last_capture_step + cut_fraction + s.final_steps,
        "note": "FLOPs counted by torch.utils.flop_counter (matmuls, convolutions, attention); UNet FLOPs of a "
        "1-step call include nothing else but the scheduler step",
    }


def time_parts(
    pipe, sampler: MonkeySampler, work: Workload, device: torch.device, rounds: int, bf16_vae: bool
) -> dict[str, Any]:
    """MONKEY's parts, each timed on its own in rotating rounds: prompt encoding, pass 1 (to the capture
    layer), the mask maths, pass 2 to latents, the VAE decode with PIL; beside them IP-Adapter's whole call.
    With `bf16_vae` also the decode by a bfloat16 copy of the VAE (`runtime.vae_dtype=bfloat16`), to show
    what the fp32 VAE under an fp16 UNet costs and how far it moves the pixels. Pass 1 is also given in
    pass-2 steps."""
    batch, text = work.batch, sampler.encode_text(work.batch)
    records = sampler.record(batch, text).records
    masks = sampler.masks(records, batch)[1]
    latents = sampler.final(batch, masks, text, output_type="latent") / pipe.vae.config.scaling_factor

    def decode(vae: torch.nn.Module) -> Any:
        return pipe.image_processor.postprocess(vae.decode(latents.to(vae.dtype)).sample.float(), output_type="pil")

    parts: dict[str, Callable[[], Any]] = {
        "text_encoder": lambda: sampler.encode_text(batch),
        "pass1_to_capture_layer": lambda: sampler.record(batch, text),
        "mask_maths": lambda: sampler.masks(records, batch),
        "pass2_to_latents": lambda: sampler.final(batch, masks, text, output_type="latent"),
        "vae_decode_and_pil": lambda: decode(pipe.vae),
        "ip_adapter_call": work.ip_adapter,
    }
    bf16_pixel_difference = None
    if bf16_vae:
        vae_bf16 = copy.deepcopy(pipe.vae).to(torch.bfloat16)
        for module in vae_bf16.modules():  # the copy's precision hooks would cast back to fp32
            module._forward_pre_hooks.clear()
            module._forward_hooks.clear()
        parts["vae_decode_bf16_and_pil"] = lambda: decode(vae_bf16)
        with torch.no_grad():
            bf16_pixel_difference = int(abs(pixels_of(decode(vae_bf16)) - pixels_of(decode(pipe.vae))).max())
    names = list(parts)
    times: dict[str, list[float]] = {name: [] for name in names}
    with torch.no_grad():
        for name in names[4:]:
            parts[name]()  # warm-up of what the sampler calls above did not run
        for index in range(rounds):
            order = names[index % len(names) :] + names[: index % len(names)]
            for name in order:
                times[name].append(timed(parts[name], device))
            log(f"round {index + 1}: " + ", ".join(f"{n} {times[n][-1]:.2f} s" for n in names))
    median = {name: statistics.median(values) for name, values in times.items()}
    monkey = sum(median[n] for n in names[:5])
    return {
        "batch_size": len(batch),
        "rounds": rounds,
        "seconds": times,
        "median_s": median,
        "monkey_sum_of_parts_s": monkey,
        "monkey_sum_over_ip_adapter": monkey / median["ip_adapter_call"],
        # in pass 2's evaluations (a 1-step call is no unit: its timing stood apart from the loop's steps)
        "pass1_in_unet_evaluations": median["pass1_to_capture_layer"]
        / (median["pass2_to_latents"] / sampler.settings.final_steps),
        "mask_maths_share_of_monkey": median["mask_maths"] / monkey,
        "vae_share_of_monkey": median["vae_decode_and_pil"] / monkey,
        "vae_bf16_max_pixel_difference": bf16_pixel_difference,  # 0-255 levels against the fp32 VAE's images
    }


def larger_batch(pipe, sampler: MonkeySampler, shapes: Shapes, batch_size: int, size: int, device) -> dict[str, Any]:
    """The three methods without speed-up keys at a batch above the throughput run's largest (16 there):
    a warm-up with the peak memory, then 2 rotating rounds. Whether a fuller GPU alone reaches the goal."""
    try:
        result = measure_batch(Workload(pipe, sampler, shapes, batch_size, size, device), 2, device)
    except torch.OutOfMemoryError as err:
        log(f"batch {batch_size}: out of memory")
        return {"batch_size": batch_size, "error": " ".join(str(err).split())[:300]}
    finally:
        if device.type == "cuda":
            torch.cuda.empty_cache()  # the compile variants after it start from the batch-16 footprint
    log(
        f"batch {batch_size}: IP-Adapter {result['ip_adapter']['images_per_s']:.2f} img/s, MONKEY "
        f"{result['monkey']['images_per_s']:.2f} img/s; peak {result['monkey']['peak_memory_mib']} MiB"
    )
    return result
