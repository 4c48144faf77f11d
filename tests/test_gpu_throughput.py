"""benchmarks/gpu_throughput.py runs unchanged on a CPU with --quick: its figures agree with each other
and with the raw timings it records, MONKEY's early exit shows in its FLOPs, and the budget skips."""

import json
import os
import re
import statistics
import subprocess
import tarfile
from pathlib import Path

import pytest
from conftest import load_benchmark

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_throughput.py"


@pytest.fixture(scope="module")
def benchmark():
    return load_benchmark("gpu_throughput")


def test_quick_run_records_consistent_figures_and_keeps_other_sections(benchmark, tmp_path):
    (tmp_path / "gpu_throughput.json").write_text(json.dumps({"cpu_ratio": None, "other": {"kept": True}}))
    path = benchmark.main(["--quick", "--out", str(tmp_path), "--budget-s", "600"])
    record = json.loads(path.read_text())
    assert record["other"] == {"kept": True}  # a device run never drops the CPU record beside it
    run = record["throughput"]
    assert run["quick"] and run["device_name"] and run["versions"]["torch"] and run["versions"]["diffusers"]
    assert run["settings"]["dtype"] == "float32" and not run["skipped"]
    assert [batch["batch_size"] for batch in run["batches"]] == [1, 2]
    flops = run["flops"]
    for batch in run["batches"]:
        for method in ("ip_adapter", "monkey", "monkey_shared_pass1"):
            figures = batch[method]
            assert figures["median_s"] == statistics.median(figures["seconds"])
            assert figures["images_per_s"] == pytest.approx(batch["batch_size"] / figures["median_s"])
            achieved = flops["per_image_flops"][method] * figures["images_per_s"] / 1e12
            assert figures["achieved_tflops"] == pytest.approx(achieved)
        ratios = [m / i for m, i in zip(batch["monkey"]["seconds"], batch["ip_adapter"]["seconds"], strict=True)]
        assert batch["monkey_over_ip_adapter"] == pytest.approx(statistics.median(ratios))
    # the early exit: the last pass-1 evaluation stops at the capture layer, so 10 < equivalents < 11 ...
    assert 0.1 < flops["cut_fraction"] < 0.9 and flops["monkey_unet_evaluations_started"] == 3 + 8
    assert flops["monkey_unet_evaluation_equivalents"] == pytest.approx(2 + flops["cut_fraction"] + 8)
    # ... and MONKEY's whole-image FLOPs exceed IP-Adapter's by just those extra evaluations (both encode the
    # prompt once and decode once; masks and recording are cheap)
    per_image, unet = flops["per_image_flops"], flops["unet_evaluation_flops"]
    extra = (per_image["monkey"] - per_image["ip_adapter"]) / unet
    assert extra == pytest.approx(2 + flops["cut_fraction"], rel=0.03)
    shared = (per_image["monkey_shared_pass1"] - per_image["ip_adapter"]) / unet
    assert abs(shared) < 0.1  # with pass 1 from a cache MONKEY costs what IP-Adapter costs
    assert run["evaluation"]["embed_images_per_s"] > 0 and len(run["evaluation"]["backbones"]) == 3
    independence = run["batch_independence"]  # fp32 on CPU: the bound of tests/test_batched_subjects.py
    assert independence["max_abs_latent_difference"] <= 1e-4 and independence["mask_equal"]
    assert independence["another_subject_max_abs_latent_difference"] > 1e-2
    text = path.with_suffix(".md").read_text()
    assert run["device_name"] in text and "| 2 |" in text


def test_a_spent_budget_skips_the_larger_batches_and_says_so(benchmark, tmp_path):
    path = benchmark.main(["--quick", "--out", str(tmp_path), "--budget-s", "0"])
    run = json.loads(path.read_text())["throughput"]
    assert [batch["batch_size"] for batch in run["batches"]] == [1]
    assert run["skipped"][0]["batch_size"] == 2 and "budget" in run["skipped"][0]["reason"]
    assert "Skipped" in path.with_suffix(".md").read_text()


def test_sheet_peaks_match_device_names(benchmark):
    assert benchmark.spec_peak("NVIDIA H100 80GB HBM3") == 989.4
    assert benchmark.spec_peak("NVIDIA H100 PCIe") == 756.0
    assert benchmark.spec_peak("NVIDIA A100-SXM4-80GB") == 312.0 and benchmark.spec_peak("AMD EPYC") is None


def test_speedups_section_times_each_key_in_pairs_and_lists_what_it_skipped(benchmark, tmp_path):
    """On a CPU: the layout and SDPA keys measured against the plain run, the backends a CPU lacks and CUDA
    graphs refused with the key named, and compile left out by a budget too small for inductor's builds."""
    (tmp_path / "gpu_throughput.json").write_text(json.dumps({"other": {"kept": True}}))
    budget = benchmark.COMPILE_RESERVE_S - 1
    args = ["--quick", "--speedups", "--speedup-pairs", "2", "--out", str(tmp_path), "--budget-s", str(budget)]
    path = benchmark.main(args)
    record = json.loads(path.read_text())
    assert record["other"] == {"kept": True}  # the other sections stay
    variants = {v["variant"]: v for v in record["speedups_cpu"]["variants"]}
    assert list(variants) == [name for name, _, _ in benchmark.speedup_variants(4)]
    assert {"cudnn_benchmark", "vae_dtype=bfloat16", "batch_size=4", "compile=reduce-overhead"} <= set(variants)
    for name in ("channels_last", "sdpa_backend=math", "sdpa_backend=flash"):  # the CPU's two SDPA backends
        v = variants[name]
        ratios = [t / p for t, p in zip(v["variant_s"], v["plain_s"], strict=True)]
        assert len(ratios) == 2 and v["variant_over_plain"] == pytest.approx(statistics.median(ratios))
        assert v["variant_images_per_s"] == pytest.approx(2 / statistics.median(v["variant_s"]))
        assert v["masks_equal"] and v["max_pixel_difference"] <= 2  # float rounding of other kernels only
        assert v["within_bound"] and v["mean_pixel_difference"] <= v["max_pixel_difference"]
    batch = variants["batch_size=4"]  # per image: a call of 4 images against a call of 2
    ratios = [(t / 4) / (p / 2) for t, p in zip(batch["variant_s"], batch["plain_s"], strict=True)]
    assert batch["variant_batch_size"] == 4 and batch["variant_over_plain"] == pytest.approx(statistics.median(ratios))
    assert batch["variant_images_per_s"] == pytest.approx(4 / statistics.median(batch["variant_s"]))
    # its first two items are the plain batch's (prompt, seed, subject): the same images up to batch rounding
    assert batch["masks_equal"] and batch["max_pixel_difference"] <= 2
    vae = variants["vae_dtype=bfloat16"]  # the decode in bfloat16 moves pixels, never the masks (pass 1's)
    assert vae["masks_equal"] and 0 < vae["max_pixel_difference"] <= 255
    assert vae["max_pixel_difference"] == parts_bf16(record)
    for name in ("sdpa_backend=efficient", "sdpa_backend=cudnn"):
        assert f"runtime.sdpa_backend='{name.split('=')[1]}' has no kernel" in variants[name]["error"]
    assert "runtime.cuda_graphs=true is refused" in variants["cuda_graphs"]["error"]
    assert "budget" in variants["compile=default"]["skipped"]
    assert variants["compile=reduce-overhead"]["skipped"] == "needs a CUDA device"
    assert variants["cudnn_benchmark"]["skipped"] == "needs a CUDA device"
    assert record["speedups_cpu"]["settings"]["image_bound"] == {
        "mean_pixel_difference": 2.0,
        "mask_cells_differing": 0.01,
    }
    for v in variants.values():  # the bound, applied to every measured key
        if "variant_over_plain" in v:
            assert v["within_bound"] == (v["mean_pixel_difference"] <= 2.0 and v["mask_cells_differing"] <= 0.01)
    preset = record["speedups_cpu"]["preset"]  # whatever this loaded CPU found faster: the rule, applied
    assert preset["keys"] == benchmark.choose_preset(list(variants.values()))
    ip = preset.get("against_ip_adapter")
    if ip is not None:
        ratios = [m / i for m, i in zip(ip["seconds"]["monkey"], ip["seconds"]["ip_adapter"], strict=True)]
        assert ip["monkey_over_ip_adapter"] == pytest.approx(statistics.median(ratios))
    parts = record["speedups_cpu"]["parts"]  # the plain batch's parts, each timed alone
    assert parts["batch_size"] == 2 and set(parts["median_s"]) == {
        "text_encoder",
        "pass1_to_capture_layer",
        "mask_maths",
        "pass2_to_latents",
        "vae_decode_and_pil",
        "ip_adapter_call",
        "vae_decode_bf16_and_pil",
    }
    assert 0 <= parts["vae_bf16_max_pixel_difference"] <= 255
    outside = ("ip_adapter_call", "vae_decode_bf16_and_pil")  # beside MONKEY's parts, not in them
    sum_of_parts = sum(v for k, v in parts["median_s"].items() if k not in outside)
    assert parts["monkey_sum_of_parts_s"] == pytest.approx(sum_of_parts)
    assert parts["vae_share_of_monkey"] == pytest.approx(parts["median_s"]["vae_decode_and_pil"] / sum_of_parts)
    larger = record["speedups_cpu"]["larger_batch"]  # the plain run at a larger batch, beside the keys
    assert larger["batch_size"] == 4 and len(larger["monkey"]["seconds"]) == 2
    assert larger["monkey"]["images_per_s"] == pytest.approx(4 / statistics.median(larger["monkey"]["seconds"]))
    text = path.with_suffix(".md").read_text()
    assert "Speed-up keys on MONKEY" in text and "| channels_last |" in text
    ip_rate = larger["ip_adapter"]["images_per_s"]
    assert f"No key, batch 4 (median of 2 rotating rounds): IP-Adapter {ip_rate:.2f}" in text


def parts_bf16(record):
    """The bf16 VAE's largest pixel change as `time_parts` measured it (another copy of the same VAE)."""
    return record["speedups_cpu"]["parts"]["vae_bf16_max_pixel_difference"]


def test_gpu_all_default_checks_fit_the_device_command():
    """benchmarks/gpu_all.sh is one device command, which must finish in 540 s: the time limits of its
    default checks, each with timeout's 10 s grace to kill, plus the wheels' install, stay under that."""
    script = (SCRIPT.parent / "gpu_all.sh").read_text()
    defaults = re.search(r"checks=\$\{\*:-([a-z_0-9 ]+)\}", script).group(1).split()
    limits = dict(re.findall(r"^\s+([a-z_0-9]+)\) run (\d+) ", script, flags=re.MULTILINE))
    assert defaults == ["throughput", "speedups", "rectifid", "tf_ti2i", "table"]  # issue 30's device check
    assert sum(int(limits[check]) for check in defaults) + 10 * len(defaults) + 20 <= 540


FAKE_PYTHON = """#!/usr/bin/env bash
# stands in for python: logs each command line; a benchmark writes a record named after its script
echo "$*" >> "$CALLS"
if [[ $1 == benchmarks/* ]]; then
    for ((i = 1; i <= $#; i++)); do
        [[ ${!i} == --out ]] && j=$((i + 1)) && touch "${!j}/$(basename "$1" .py).json"
    done
fi
"""


def test_gpu_all_quick_runs_every_default_check_with_quick_and_packs_the_records(tmp_path, benchmark):
    """The dry run's wiring, with a stand-in interpreter: every default check in order, each with --quick
    where its script takes it and --out in the records folder, the records packed; and the flags given to
    this project's own scripts are ones they accept."""
    fake = tmp_path / "python"
    fake.write_text(FAKE_PYTHON)
    fake.chmod(0o755)
    calls, out = tmp_path / "calls", tmp_path / "out"
    env = {**os.environ, "PYTHON": str(fake), "CALLS": str(calls)}
    result = subprocess.run(
        ["bash", str(SCRIPT.parent / "gpu_all.sh"), "--quick", str(out)],
        cwd=SCRIPT.parents[1], env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    lines = calls.read_text().splitlines()
    assert lines[0].startswith("-c import torch")  # the versions line; no nvidia-smi, no wheels
    runs = [line.split() for line in lines[1:]]
    assert [r[0] for r in runs] == [
        "benchmarks/gpu_throughput.py",
        "benchmarks/gpu_throughput.py",
        "benchmarks/gpu_rectifid.py",
        "benchmarks/gpu_tf_ti2i.py",
        "benchmarks/time_to_table1.py",
    ]
    records = str(out / "records")
    for r in runs:
        assert r[r.index("--out") + 1] == records
    assert all("--quick" in r for r in runs[:4]) and "--speedups" in runs[1]
    # the speed-up keys get a budget below the compile reserve: no inductor build on a CPU
    assert float(runs[1][runs[1].index("--budget-s") + 1]) < benchmark.COMPILE_RESERVE_S
    args = benchmark.parse_args(runs[1][1:])
    assert args.speedups and args.larger_batch == 32 and not args.plain_larger
    assert runs[4][runs[4].index("--records") + 1] == records  # the table from the records just made
    with tarfile.open(out / "records.tar") as tar:
        names = set(tar.getnames())
    assert {"records/gpu_throughput.json", "records/time_to_table1.json", "records/gpu_speedups.log"} <= names
    assert not (out / "records").exists()


def test_cpu_breakdown_parts_add_up_to_the_monkey_figure(benchmark, tmp_path):
    path = benchmark.main(["--cpu-breakdown", "--quick", "--pairs", "1", "--out", str(tmp_path)])
    section = json.loads(path.read_text())["cpu_breakdown"]
    median = section["median_s"]
    monkey_parts = ("text_encoder", "pass1_to_capture_layer", "mask_maths", "pass2_to_latents", "vae_decode_and_pil")
    assert set(median) == {*monkey_parts, "ip_adapter_call"}  # a CPU run leaves the bf16 VAE out
    assert section["monkey_sum_of_parts_s"] == pytest.approx(sum(median[name] for name in monkey_parts))
    assert section["monkey_sum_over_ip_adapter"] == pytest.approx(
        section["monkey_sum_of_parts_s"] / median["ip_adapter_call"]
    )
    text = path.with_suffix(".md").read_text()
    assert "## CPU: where MONKEY's time goes" in text
    assert f"| pass2 to latents | {median['pass2_to_latents']:.4f} |" in text


def test_a_spent_speedups_budget_skips_every_key_but_still_records_the_cuda_graphs_refusal(benchmark, tmp_path):
    path = benchmark.main(["--quick", "--speedups", "--speedup-pairs", "1", "--out", str(tmp_path), "--budget-s", "0"])
    variants = {v["variant"]: v for v in json.loads(path.read_text())["speedups_cpu"]["variants"]}
    assert "runtime.cuda_graphs=true is refused" in variants["cuda_graphs"]["error"]  # costs no time
    for name in ("sdpa_backend=flash", "compile=default", "channels_last"):
        assert variants[name]["skipped"].startswith("budget:")


def variant(keys, ratio, mean=0.5, cells=0.0, **extra):
    result = {"variant": "x", "keys": keys, "variant_over_plain": ratio, "mean_pixel_difference": mean}
    result |= {"mask_cells_differing": cells, **extra}
    result["within_bound"] = within_bound(result)
    return result


def within_bound(result):
    from throughput.preset import within_bound as rule

    return rule(result)


def test_the_preset_keeps_per_axis_the_fastest_key_within_the_image_bound(benchmark):
    results = [
        variant({"cudnn_benchmark": True}, 0.90),
        variant({"sdpa_backend": "flash"}, 0.95),
        variant({"sdpa_backend": "efficient"}, 0.93),  # the faster backend of the two
        variant({"compile": "default"}, 0.80, mean=2.5),  # fast, but its images moved past the bound
        variant({"compile": "reduce-overhead"}, 0.85, cells=0.02),  # its masks moved past the bound
        variant({"channels_last": True}, 0.99),  # within noise of the plain run
        variant({"vae_dtype": "bfloat16"}, 0.97, mean=2.0),  # on the bound is within it
        variant({"batch_size": 32}, 0.70),
        {"variant": "flash", "keys": {"sdpa_backend": "cudnn"}, "error": "no kernel"},
        {"variant": "c", "keys": {"compile": "max-autotune-no-cudagraphs"}, "skipped": "budget"},
        variant({"cudnn_benchmark": True, "batch_size": 32}, 0.5),  # a combination is no axis of its own
    ]
    keys = benchmark.choose_preset(results)
    assert keys == {
        "sdpa_backend": "efficient",
        "cudnn_benchmark": True,
        "vae_dtype": "bfloat16",
        "batch_size": 32,
    }
    assert benchmark.preset_overrides(keys) == (
        "runtime.sdpa_backend=efficient runtime.cudnn_benchmark=true runtime.vae_dtype=bfloat16 "
        "generation.batch_size=32"
    )
    assert benchmark.choose_preset([variant({"cudnn_benchmark": True}, 1.01)]) == {}


def test_a_device_run_reads_its_device_and_precisions_once_for_both_sections(benchmark, monkeypatch):
    """throughput and --speedups share DeviceRun: --quick is the CPU in float32; a float16 run keeps its VAE
    in float32, a bfloat16 run does not; a missing CUDA device stops with the caller's message; the record
    head and settings name what ran."""
    import argparse

    import torch
    from benchtools import cpu_model  # imported by the benchmark, like throughput.*
    from throughput.device_run import DeviceRun

    def run(**given):
        args = argparse.Namespace(**{"quick": False, "device": "cpu", "dtype": "float16", **given})
        return DeviceRun.from_args(args, "no CUDA here")

    quick = run(quick=True, device="cuda", dtype="bfloat16")
    assert (quick.device.type, quick.dtype, quick.vae_dtype) == ("cpu", torch.float32, torch.float32)
    assert (run().dtype, run().vae_dtype) == (torch.float16, torch.float32)
    assert (run(dtype="bfloat16").dtype, run(dtype="bfloat16").vae_dtype) == (torch.bfloat16, torch.bfloat16)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit, match=r"^no CUDA here$"):
        run(device="cuda")
    head = run(dtype="bfloat16").head((1.0, 2.0, 3.0))
    assert list(head)[-3:] == ["quick", "device", "device_name"] and head["device"] == "cpu"
    assert head["quick"] is False and head["device_name"] == cpu_model()
    assert head["machine"]["load_average_start"] == (1.0, 2.0, 3.0)
    assert run().settings(512) == {"size": 512, "dtype": "float16", "vae_dtype": "float32"}
