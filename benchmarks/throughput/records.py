"""The record: sections of results/benchmarks/gpu_throughput.json, and the markdown written from all of them."""

import json
from pathlib import Path
from typing import Any

from monkey.atomic import atomic_write_bytes
from throughput.workload import TARGETS


def markdown(record: dict[str, Any]) -> str:
    lines = ["# Batched MONKEY throughput (benchmarks/gpu_throughput.py)", ""]
    run = record.get("throughput")
    if run is None:
        lines += ["No device run recorded yet: `python benchmarks/gpu_throughput.py` on a CUDA machine.", ""]
    else:
        s, peak, f = run["settings"], run["peak"], run["flops"]
        lines += [
            f"## {'Quick (CPU, tiny shapes)' if run['quick'] else 'Device'} run: {run['device_name']}",
            "",
            f"{run['created']}, commit {run['git_commit']}; torch {run['versions']['torch']} (CUDA "
            f"{run['versions']['cuda']}), diffusers {run['versions']['diffusers']}. LCM Dreamshaper v7 architecture, "
            f"random weights, {s['size']} px, UNet {s['dtype']}, VAE {s['vae_dtype']}; every item its own subject. "
            f"Median of {s['rounds']} rounds in rotating order; wall time of the whole script "
            f"{run['wall_s']:.0f} s (budget {s['budget_s']:.0f} s).",
            "",
            f"Peak assumed: {peak['sheet_tflops']} TFLOP/s (data sheet, dense fp16/bf16); measured 8192^3 matmul "
            f"{_fmt(peak['measured_matmul_tflops'], '.0f')} TFLOP/s. One UNet evaluation: "
            f"{f['unet_evaluation_flops'] / 1e12:.3f} TFLOP per image; cut at the capture layer: "
            f"{f['cut_fraction']:.3f} of it, so MONKEY costs {f['monkey_unet_evaluation_equivalents']:.3f} UNet "
            f"evaluations per image (11 without the early exit).",
            "",
            "| batch | IP-Adapter img/s | MONKEY img/s | MONKEY, shared pass 1 img/s | MONKEY / IP-Adapter | "
            "peak MiB (IP / MONKEY / shared) | MONKEY TFLOP/s | of sheet peak |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for b in run["batches"]:
            ip, mk, sh = b["ip_adapter"], b["monkey"], b["monkey_shared_pass1"]
            lines.append(
                f"| {b['batch_size']} | {ip['images_per_s']:.2f} | {mk['images_per_s']:.2f} | "
                f"{sh['images_per_s']:.2f} | {b['monkey_over_ip_adapter']:.3f} | "
                f"{_fmt(ip['peak_memory_mib'], '.0f')} / "
                f"{_fmt(mk['peak_memory_mib'], '.0f')} / {_fmt(sh['peak_memory_mib'], '.0f')} | "
                f"{mk['achieved_tflops']:.1f} | {_fmt(mk['fraction_of_sheet_peak'], '.1%')} |"
            )
        for skip in run["skipped"]:
            lines.append(f"\nSkipped: {skip}")
        if run.get("speedups"):
            lines += ["", "Speed-ups (images per second, IP-Adapter / MONKEY; one warm-up and 2 timed calls each):", ""]
            lines += ["| variant | batch | IP-Adapter | MONKEY |", "|---|---|---|---|"]
            for v in run["speedups"]:
                if "monkey_images_per_s" in v:
                    lines.append(
                        f"| {v['variant']} | {v['batch_size']} | {v['ip_adapter_images_per_s']:.2f} | "
                        f"{v['monkey_images_per_s']:.2f} |"
                    )
                else:
                    lines.append(f"| {v['variant']} | - | {v.get('error') or v.get('skipped')} | |")
        if run["evaluation"]:
            e = run["evaluation"]
            lines += [
                "",
                f"Evaluation stage ({', '.join(e['backbones'])}; {e['dtype']}): "
                f"{e['embed_images_per_s']:.1f} images/s through embed_images (CPU preprocessing included), "
                f"{e['models_only_images_per_s']:.1f} images/s through the models alone.",
            ]
        lines += ["", f"Subject embeddings (ViT-H/14 shape): {run['image_encoder_subjects_per_s']:.1f} per second."]
        if run.get("batch_independence"):
            ind = run["batch_independence"]
            lines += [
                "",
                f"Batch independence ({s['dtype']}): item 0 of a 4-subject MONKEY batch against the same item alone "
                f"moves its final latents by at most {ind['max_abs_latent_difference']:.2e} (latents up to "
                f"{ind['latent_abs_max']:.2f}; another subject moves them by "
                f"{ind['another_subject_max_abs_latent_difference']:.2e}); mask equal: {ind['mask_equal']}.",
            ]
        if run["targets"]:
            t = run["targets"]
            lines += [
                "",
                f"Targets (best batch {t['best_batch_size']}): MONKEY {t['monkey_images_per_s']['value']:.2f} img/s "
                f"(>= {t['monkey_images_per_s']['target']}: {_mark(t['monkey_images_per_s']['pass'])}), MONKEY / "
                f"IP-Adapter {t['monkey_over_ip_adapter']['value']:.3f} (<= {t['monkey_over_ip_adapter']['target']}: "
                f"{_mark(t['monkey_over_ip_adapter']['pass'])}); the 3,160-image DreamBooth grid in "
                f"{t['dreambooth_grid_3160_images_minutes']:.1f} min.",
            ]
        lines.append("")
    cpu = record.get("cpu_ratio")
    if cpu is not None:
        m, med = cpu["machine"], cpu["median_s"]
        lines += [
            "## CPU: MONKEY / IP-Adapter with the early exit",
            "",
            f"{cpu['created']}, commit {cpu['git_commit']}; {m['processor']}, {m['logical_cpus']} logical CPUs, "
            f"{load_span(m)} (a machine shared with other jobs: absolute "
            f"times are inflated; the three ran in rotating order). Real architecture, random weights, "
            f"{cpu['settings']['size']} px, fp32, batch 1, {cpu['settings']['rounds']} rounds, medians.",
            "",
            "| figure | value |",
            "|---|---|",
            f"| MONKEY / IP-Adapter (early exit) | {cpu['monkey_over_ip_adapter']:.3f} (target <= 1.30: "
            f"{_mark(cpu['target']['pass'])}) |",
            f"| MONKEY without the early exit / IP-Adapter | {cpu['monkey_no_early_exit_over_ip_adapter']:.3f} |",
            f"| seconds per image: IP-Adapter, MONKEY, MONKEY without early exit | {med['ip_adapter']:.2f}, "
            f"{med['monkey']:.2f}, {med['monkey_no_early_exit']:.2f} |",
            f"| each round's MONKEY / IP-Adapter (with; without the early exit), the noise to read the medians by "
            f"| {round_ratios(cpu['seconds'], 'monkey')}; {round_ratios(cpu['seconds'], 'monkey_no_early_exit')} |",
            "",
        ]
    breakdown = record.get("cpu_breakdown")
    if breakdown is not None:
        m = breakdown["machine"]
        lines += [
            "## CPU: where MONKEY's time goes",
            "",
            f"{breakdown['created']}, commit {breakdown['git_commit']}; {load_span(m)} (shared machine). "
            f"{'Tiny shapes' if breakdown['settings'].get('quick') else 'Real architecture'}, "
            f"{breakdown['settings']['size']} px, fp32, batch 1, medians of {breakdown['settings']['rounds']} "
            "rotating rounds, each part timed alone.",
            "",
            *parts_lines(breakdown),
            "",
        ]
    if record.get("provenance"):  # how the device run above was made, written beside it by whoever ran it
        lines += [f"Provenance: {record['provenance']}", ""]
    lines += speedups_markdown(record.get("speedups")) + speedups_markdown(record.get("speedups_cpu"))
    return "\n".join(lines)


def speedups_markdown(run: dict[str, Any] | None) -> list[str]:
    if run is None:
        return []
    s, m = run["settings"], run["machine"]
    lines = [
        f"## Speed-up keys on MONKEY ({'CPU, tiny shapes' if run['quick'] else run['device_name']})",
        "",
        f"{run['created']}, commit {run['git_commit']}; torch {run['versions']['torch']}. {s['size']} px, UNet "
        f"{s['dtype']}, batch {s['batch_size']}, {s['pairs']} interleaved (plain, variant) pairs per key; "
        f"{load_span(m)}; wall time {run['wall_s']:.0f} s "
        f"(budget {s['budget_s']:.0f} s). Time ratio < 1 is faster (per image: a larger batch's call makes more); "
        "pixel differences in 0-255 levels against the plain run's images (a larger batch: its first images).",
        "",
        "| key | time / plain (median of pairs) | img/s plain -> key | first (/ second) call s | "
        "max / mean pixel diff | masks equal | within bound |",
        "|---|---|---|---|---|---|---|",
    ]
    for v in run["variants"]:
        lines.append(variant_row(v))
    lines += preset_lines(run.get("preset"), s.get("image_bound"))
    if run.get("parts") is not None:
        parts = run["parts"]
        lines += [
            "",
            f"Where the plain batch-{parts['batch_size']} call's time goes (each part alone, medians of "
            f"{parts['rounds']} rotating rounds):",
            "",
            *parts_lines(parts),
        ]
    larger = run.get("larger_batch")
    if larger is not None and "error" in larger:
        lines += ["", f"No key, batch {larger['batch_size']}: {larger['error']}"]
    elif larger is not None:
        ip, mk, sh = larger["ip_adapter"], larger["monkey"], larger["monkey_shared_pass1"]
        goal = TARGETS["monkey_images_per_s"]
        lines += [
            "",
            f"No key, batch {larger['batch_size']} (median of {larger['rounds']} rotating rounds): IP-Adapter "
            f"{ip['images_per_s']:.2f} img/s, MONKEY {mk['images_per_s']:.2f} img/s (>= {goal}: "
            f"{_mark(mk['images_per_s'] >= goal)}), MONKEY with a shared pass 1 {sh['images_per_s']:.2f} img/s; "
            f"MONKEY / IP-Adapter {larger['monkey_over_ip_adapter']:.3f}; peak MiB (IP / MONKEY / shared) "
            f"{_fmt(ip['peak_memory_mib'], '.0f')} / {_fmt(mk['peak_memory_mib'], '.0f')} / "
            f"{_fmt(sh['peak_memory_mib'], '.0f')}.",
        ]
    return [*lines, ""]


def variant_row(v: dict[str, Any]) -> str:
    """One key's row; records written before the image bound existed have no mean or bound."""
    if "variant_over_plain" not in v:
        return f"| {v['variant']} | {v.get('error') or 'skipped: ' + v['skipped']} | | | | | |"
    mean = _fmt(v.get("mean_pixel_difference"), ".2f")
    return (
        f"| {v['variant']} | {v['variant_over_plain']:.3f} | {v['plain_images_per_s']:.2f} -> "
        f"{v['variant_images_per_s']:.2f} | {v['first_call_s']:.1f}"
        f"{' / ' + format(v['second_call_s'], '.1f') if 'second_call_s' in v else ''} | "
        f"{v['max_pixel_difference']} / {mean} | {v['masks_equal']} | {v.get('within_bound', 'n/a')} |"
    )


def preset_lines(preset: dict[str, Any] | None, bound: dict[str, float] | None) -> list[str]:
    """The preset's keys, its override line and its figures (absent from records before the preset)."""
    if preset is None:
        return []
    lines = [
        "",
        f"Image bound: mean pixel difference <= {bound['mean_pixel_difference']} of 255 levels and at most "
        f"{bound['mask_cells_differing']:.0%} of mask cells changed, against the plain run's images.",
        "",
        f"GPU preset (per axis the fastest key within the bound, faster than plain by more than 2 %): "
        f"`{preset['overrides'] or '(none)'}`",
    ]
    if "skipped" in preset:
        lines.append(f"Not measured together: {preset['skipped']}.")
    combined = preset.get("combined")
    if combined is not None and "variant_over_plain" in combined:
        lines.append(
            f"Together against the plain run: {combined['variant_over_plain']:.3f} of its time per image, "
            f"{combined['plain_images_per_s']:.2f} -> {combined['variant_images_per_s']:.2f} img/s; pixels "
            f"move by up to {combined['max_pixel_difference']} (mean {combined['mean_pixel_difference']:.2f}), "
            f"within the bound: {combined['within_bound']}."
        )
    ip = preset.get("against_ip_adapter")
    if ip is not None and "error" in ip:
        lines.append(f"Against IP-Adapter under the same keys: {ip['error']}")
    elif ip is not None:
        goal, ratio_goal = TARGETS["monkey_images_per_s"], TARGETS["monkey_over_ip_adapter"]
        rate, ratio = ip["monkey_images_per_s"], ip["monkey_over_ip_adapter"]
        lines.append(
            f"Under the preset, batch {ip['batch_size']}, {len(ip['seconds']['monkey'])} alternating rounds: "
            f"MONKEY {rate:.2f} img/s (>= {goal}: {_mark(rate >= goal)}), "
            f"IP-Adapter {ip['ip_adapter_images_per_s']:.2f} img/s, MONKEY / IP-Adapter "
            f"{ratio:.3f} (<= {ratio_goal}: {_mark(ratio <= ratio_goal)})."
        )
    return lines


def parts_lines(parts: dict[str, Any]) -> list[str]:
    """`time_parts`' figures: a summary sentence and the table of medians."""
    bf16 = parts.get("vae_bf16_max_pixel_difference")
    summary = (
        f"MONKEY as the sum of its parts / IP-Adapter {parts['monkey_sum_over_ip_adapter']:.3f}; pass 1 costs "
        f"{parts['pass1_in_unet_evaluations']:.2f} of pass 2's steps; the mask maths "
        f"{parts['mask_maths_share_of_monkey']:.2%} of MONKEY's time"
    )
    if "vae_share_of_monkey" in parts:
        summary += f", the VAE decode {parts['vae_share_of_monkey']:.1%}"
    if bf16 is not None:
        summary += f"; a bfloat16 VAE moves the pixels by up to {bf16} of 255"
    rows = [f"| {name.replace('_', ' ')} | {seconds:.4f} |" for name, seconds in parts["median_s"].items()]
    return [summary + ".", "", "| part | seconds |", "|---|---|", *rows]


def load_span(machine: dict[str, Any]) -> str:
    """The load average at a run's start and end (a shared machine inflates its times)."""
    start, end = (tuple(round(x, 2) for x in machine[key]) for key in ("load_average_start", "load_average_end"))
    return f"load average {start} at start, {end} at end"


def round_ratios(seconds: dict[str, list[float]], method: str) -> str:
    return ", ".join(f"{m / i:.3f}" for m, i in zip(seconds[method], seconds["ip_adapter"], strict=True))


def _fmt(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def _mark(ok: bool) -> str:
    return "pass" if ok else "MISS"


def write_record(out: Path, section: str, data: dict[str, Any]) -> Path:
    """Update one section of the json record, keep the others, rewrite the markdown from all of them."""
    path = out / "gpu_throughput.json"
    record = json.loads(path.read_text()) if path.is_file() else {"benchmark": "gpu_throughput"}
    record[section] = data
    atomic_write_bytes(path, (json.dumps(record, indent=2, default=str) + "\n").encode())
    atomic_write_bytes(out / "gpu_throughput.md", markdown(record).encode())
    return path
