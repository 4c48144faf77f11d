"""The generate stage: plan -> this shard's unfinished items -> method -> run folder.

Rerunning the same command resumes: items whose image and manifest row exist are skipped. A run
folder whose finished items were made with another config is refused, naming the keys that differ,
rather than silently mixing two configs in one table.
"""

import contextlib
import logging
import time
from collections.abc import Callable, Collection, Iterator
from contextlib import closing
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from monkey.atomic import remove_stale_temp_files
from monkey.controlnet.model import controlnet_checkpoint
from monkey.controlnet.settings import control_settings
from monkey.datasets.bad_images import ImageGate, recorded_skips, skipped_row
from monkey.datasets.base import bad_image_policy, image_options, load_sources
from monkey.errors import ConfigError, DataError, RunFolderError
from monkey.hashing import stable_hash, to_plain
from monkey.memory_check import check_memory
from monkey.methods.base import (
    RUNTIME_ONLY_KEYS,
    GenerationRequest,
    GenerationResult,
    Method,
    StreamingMethod,
    build_method,
)
from monkey.methods.presets import (
    MethodSpec,
    format_prompt,
    method_spec,
    resolve_model_dtypes,
    runtime_vae_dtype,
)
from monkey.models.profiles import Runtime, profile_checkpoints, profile_from_config, resolve_runtime
from monkey.models.speedups import sampling, speedups_from_config
from monkey.multi.plan import check_method as check_multi_method
from monkey.plan import WorkItem, build_plan, shard_batches
from monkey.prompts import prompt_set_from_config
from monkey.provenance import FileHashes, Weights, check_inputs, check_weights, keep_file_lists, weights_record
from monkey.shards import resolve_shard
from monkey.store import STATUS_FAILED, STATUS_OK, RunStore

log = logging.getLogger(__name__)


def plan_from_config(cfg: DictConfig) -> list[WorkItem]:
    sources = load_sources(cfg.dataset)
    prompts = prompt_set_from_config(cfg.prompts)
    multi = cfg.plan.get("multi") or {}
    if int(multi.get("subjects", 1)) != 1:  # several subjects per item (monkey.multi.plan)
        from monkey.multi.plan import build_multi_plan

        return build_multi_plan(
            sources,
            prompts,
            int(multi.subjects),
            multi.template,
            seeds=cfg.plan.seeds,
            base_seed=cfg.plan.base_seed,
            limit_subjects=to_plain(cfg.plan.limit.subjects),
            limit_prompts=cfg.plan.limit.prompts,
        )
    return build_plan(
        sources,
        prompts,
        pairing=cfg.plan.pairing,
        seeds=cfg.plan.seeds,
        base_seed=cfg.plan.base_seed,
        limit_subjects=to_plain(cfg.plan.limit.subjects),
        limit_prompts=cfg.plan.limit.prompts,
    )


def generation_config(cfg: DictConfig, runtime: Runtime, spec: MethodSpec | None = None) -> dict[str, Any]:
    """Everything that decides what an image looks like, and nothing that does not: the method's
    knobs after the preset, the model it actually runs on, the size and the preset."""
    spec = spec or method_spec(cfg)
    dtype = str(runtime.dtype).removeprefix("torch.")
    method = resolve_model_dtypes({k: v for k, v in spec.method.items() if k not in RUNTIME_ONLY_KEYS}, dtype)
    # the VAE's precision, where it differs from the UNet's (absent otherwise, so older hashes hold)
    vae = {"vae_dtype": str(runtime.vae).removeprefix("torch.")} if runtime.vae != runtime.dtype else {}
    speedups = runtime.speedups.hashed()  # the keys that move pixels, where set
    return {
        "method_target": spec.method["_target_"],
        "method": method,
        "model": spec.model,
        "size": [spec.height, spec.width],
        "subject_image": asdict(image_options(cfg.dataset)),  # fit/min/max change what the method sees
        "dtype": dtype,
        **vae,
        **({"runtime": speedups} if speedups else {}),
        "preset": spec.describe(),
    }


def diff_keys(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        keys = sorted(set(old) | set(new))
        return [d for k in keys for d in diff_keys(old.get(k), new.get(k), f"{prefix}{k}.")]
    return [] if old == new else [f"{prefix.rstrip('.')}: {old!r} -> {new!r}"]


def check_conflicts(
    store: RunStore, label: str, config_hash: str, config: dict, done: dict, items: list, batch: dict | None = None
) -> None:
    for item in items:
        row = done.get(item.item_id)
        if row is None:
            continue
        old_batch = row.get("batch")  # rows written before the batch was recorded carry none
        if batch is not None and isinstance(old_batch, dict) and effective_batch(old_batch) != effective_batch(batch):
            changes = "; ".join(diff_keys(row["batch"], batch))
            raise RunFolderError(
                f"run folder {store.root} already holds images of method '{label}' made in other batches "
                f"({changes}). Batch neighbours change float rounding, so one folder keeps one batch size: "
                "rerun with the old value, use another run.name, or delete that folder to regenerate."
            )
        if row["config_hash"] != config_hash:
            old = store.load_config(label, row["config_hash"]) or {}
            changes = "; ".join(diff_keys(old, config)[:8]) or "unknown (config file missing)"
            raise RunFolderError(
                f"run folder {store.root} already holds images of method '{label}' made with another "
                f"config ({row['config_hash']} vs {config_hash}: {changes}). Use another run.name, or "
                "delete that folder to regenerate."
            )
        if row["plan_prompt"] != item.prompt or row["seed"] != item.seed:
            raise RunFolderError(
                f"run folder {store.root}: item {item.item_id} was made from prompt {row['plan_prompt']!r} "
                f"seed {row['seed']}, the plan now says {item.prompt!r} seed {item.seed}. Use another run.name."
            )


def shard_work(cfg: DictConfig, plan: list[WorkItem]) -> tuple[int, int, list[list[WorkItem]]]:
    """(shard, num_shards, this shard's batches): whole batches of the plan, so a sharded run groups
    every item with the same neighbours as a one-process run (and gives the same pixels)."""
    shard, num_shards = resolve_shard(cfg)
    return shard, num_shards, shard_batches(plan, batch_size_of(cfg), shard, num_shards)


def size_keys(cfg: DictConfig, spec: MethodSpec) -> str:
    """The keys that set the image size, with their values, for an error message."""
    if (spec.height, spec.width) == (cfg.generation.height, cfg.generation.width):
        return f"generation.height={spec.height} generation.width={spec.width}"
    return f"the size {spec.height}x{spec.width} of preset={cfg.preset} (method '{spec.name}')"


def batch_size_of(cfg: DictConfig) -> int:
    """Items per method call: method.batch_size when the method sets one, else generation.batch_size."""
    return int(cfg.method.get("batch_size") or cfg.generation.batch_size)


def batch_settings(cfg: DictConfig) -> dict[str, Any]:
    """The batch keys as given, recorded in every row: a folder refuses to mix batch sizes (neighbours in
    a batch change float rounding, so pixels), though they stay out of its name and config hash."""
    return {"generation.batch_size": int(cfg.generation.batch_size), "method.batch_size": cfg.method.get("batch_size")}


def effective_batch(batch: dict[str, Any]) -> Any:
    return batch.get("method.batch_size") or batch.get("generation.batch_size")


@dataclass
class GenerateSummary:
    planned: int  # items in this shard
    skipped: int  # already finished before this call
    generated: int
    unusable: int = 0  # items not generated because their subject image is unusable (on_bad_image=skip)
    failed: int = 0  # items the method tried and failed (rows with status failed; a rerun retries them)


def generate_stage(cfg: DictConfig, run_dir: Path) -> GenerateSummary:
    plan = plan_from_config(cfg)
    plan_index = {item.item_id: index for index, item in enumerate(plan)}
    shard, num_shards, my_batches = shard_work(cfg, plan)
    mine = [item for batch in my_batches for item in batch]
    spec = method_spec(cfg)
    check_multi_method(plan, spec.method["_target_"], spec.name)  # several subjects need a method that takes them
    runtime = resolve_runtime(
        profile_from_config(spec.model),
        cfg.runtime.device,
        cfg.runtime.dtype,
        runtime_vae_dtype(spec, cfg.runtime.get("vae_dtype", "auto")),
        speedups_from_config(cfg.runtime),
    )
    check_memory(spec.height, spec.width, batch_size_of(cfg), runtime, size_keys(cfg, spec))  # before any model loads
    label = spec.name
    config = generation_config(cfg, runtime, spec)
    config_hash = stable_hash(config)
    remove_stale_temp_files(run_dir)  # a killed writer's leftovers; never a live writer's
    store = RunStore(run_dir)
    done = store.finished(label)
    batch = batch_settings(cfg)
    check_conflicts(store, label, config_hash, config, done, mine, batch)
    # the exact inputs and weights: a replaced photo or checkpoint is refused, not mixed in (monkey.provenance)
    source_hashes = FileHashes()
    check_inputs(run_dir, [done[item.item_id] for item in mine if item.item_id in done], source_hashes)
    weights = method_weights(spec, runtime)
    if weights is not None:
        check_weights(run_dir, label, list(done.values()), weights)
    # A batch cut short (killed between its rows) is generated whole again, since its neighbours
    # change float rounding, and only its missing items are written.
    todo_batches = [batch for batch in my_batches if any(item.item_id not in done for item in batch)]
    todo = [item for batch in todo_batches for item in batch if item.item_id not in done]
    log.info(
        "%s: %d items in shard %d/%d, %d finished, %d to generate -> %s",
        label,
        len(mine),
        shard,
        num_shards,
        len(mine) - len(todo),
        len(todo),
        run_dir,
    )
    if not todo:
        return GenerateSummary(len(mine), len(mine), 0)
    method = build_method(spec.method, runtime, prompt_form=spec.prompt_form)
    if weights is not None and not weights.resolved():
        weights = method_weights(spec, runtime)  # loading may have just put a hub snapshot in the cache
    if weights is not None:
        keep_file_lists(run_dir, weights)
    writer_id = f"shard-{shard:03d}-of-{num_shards:03d}"
    gate, skips, unusable = ImageGate(bad_image_policy(cfg.dataset)), recorded_skips(store, label), 0
    context = {
        "config_hash": config_hash,
        "writer": writer_id,
        "device": str(runtime.device),
        "threads": torch.get_num_threads(),  # speed only: recorded, never hashed
        "dtype": config["dtype"],
        "origin": "generated",
        "preset": spec.preset,
        "batch": batch,
        "weights": weights.record if weights is not None else None,
    }
    # A streaming method (an external process) gets every unfinished item of the shard in one call.
    streaming = isinstance(method, StreamingMethod)
    if streaming and runtime.speedups.hashed():
        raise ConfigError(
            f"runtime speed-ups {runtime.speedups.hashed()} apply to methods sampling in this process; method "
            f"'{label}' runs in its own process, which they would not reach: leave them at their defaults"
        )
    if isinstance(method, StreamingMethod):
        method.work_dir = Path(run_dir) / "external" / label / writer_id
    failed = 0
    with (
        # the config is registered with the first row: a run refused before it leaves no config file
        store.writer(label, writer_id, lambda: store.register_config(label, config_hash, config)) as writer,
        tqdm(
            total=len(mine), initial=len(mine) - len(todo), desc=f"{label} [{shard + 1}/{num_shards}]", unit="img"
        ) as progress,
    ):
        pending: list[WorkItem] = []
        for batch in todo_batches:
            usable, bad = gate.split(batch)
            for item, error in bad:
                if skips.get(item.item_id) != str(error):
                    writer.append(skipped_row(item, error, label, context, plan_index[item.item_id]))
            unusable += len(bad)
            progress.update(len(bad))
            if streaming:
                pending += [item for item in usable if item.item_id not in done]
            elif any(item.item_id not in done for item in usable):
                failed += generate_batch(
                    method,
                    usable,
                    spec,
                    store,
                    writer,
                    label,
                    context,
                    plan_index,
                    finished=done,
                    on_item=progress.update,
                    source_hashes=source_hashes,
                )
        if pending:
            failed += generate_batch(
                method,
                pending,
                spec,
                store,
                writer,
                label,
                context,
                plan_index,
                on_item=progress.update,
                source_hashes=source_hashes,
            )
    if failed:
        log.warning(
            "%s: %d items failed (manifest rows: status failed, with the reason); a rerun retries them", label, failed
        )
    if unusable:
        log.warning(
            "%s: %d items skipped, their subject image is unusable (manifest rows: status skipped)", label, unusable
        )
    if unusable and unusable == len(mine):
        raise DataError(
            f"no usable subject image among the {unusable} items of this run; skipped ones are in {run_dir}"
        )
    return GenerateSummary(len(mine), len(mine) - len(todo), len(todo) - unusable - failed, unusable, failed)


def method_weights(spec: MethodSpec, runtime: Runtime) -> Weights | None:
    """The identity of every checkpoint the method loads from its model profile, and of its ControlNet if it
    has one (monkey.provenance); None for a method that runs in its own process (`external`): its weights
    are not the profile's."""
    try:
        method_class = get_class(spec.method["_target_"])
    except (ImportError, ValueError):
        method_class = None  # build_method names the bad target
    if isinstance(method_class, type) and issubclass(method_class, StreamingMethod):
        return None
    checkpoints = profile_checkpoints(runtime.model)
    control = control_settings(spec.method.get("control"))  # method.control: its ControlNet is a checkpoint too
    if control is not None:
        checkpoints = [*checkpoints, controlnet_checkpoint(control, runtime)]
    return weights_record(checkpoints)


def generate_batch(
    method: Method,
    batch: list[WorkItem],
    spec: MethodSpec,
    store: RunStore,
    writer: Any,
    label: str,
    context: dict[str, Any],
    plan_index: dict[str, int],
    finished: Collection[str] = (),
    on_item: Callable[[int], object] = lambda n: None,
    source_hashes: FileHashes | None = None,
) -> int:
    """Generate `batch` and store every result whose item is not already `finished`, each as soon as
    the method hands it back; a failed result gets a row with its reason and no image. Returns the
    number of failed items."""
    requests = [
        GenerationRequest(item, method.prompt_for(item), spec.seed_for(item), spec.height, spec.width) for item in batch
    ]
    failed = 0
    source_hashes = source_hashes or FileHashes()
    # closing(): an error while storing ends a streaming method's generator (and its child process) at once
    with closing(timed_results(method, requests, label)) as results:
        for index, result in results:
            request = requests[index]
            item = request.item
            if item.item_id in finished:
                continue
            on_item(1)
            base_row = {
                **item.describe(),
                **context,
                "method": label,
                "prompt": request.prompt,
                "generation_seed": request.seed,
                "height": request.height,
                "width": request.width,
                "info": result.info,
                "timings": result.timings,
                "plan_index": plan_index[item.item_id],
                "source_sha256": source_hashes(item.source.image_path),  # the bytes it was made from
                **paper_clip_t_prompt(spec, method, item),
            }
            if result.error is not None:
                failed += 1
                row = {**base_row, "image": None, "artifacts": {}, "status": STATUS_FAILED, "error": result.error}
                writer.append({**row, "created": time.time()})
                continue
            relpath = item.image_relpath(label)
            for name, artifact in result.artifacts.items():  # a refused name stops here, before the image is written
                store.artifact_relpath(relpath, name, artifact)
            store.write_image(
                relpath,
                result.image,
                text={
                    "prompt": request.prompt,
                    "seed": str(request.seed),
                    "method": label,
                    "item_id": item.item_id,
                    "config_hash": context["config_hash"],
                },
            )
            artifacts = {}
            for name, artifact in result.artifacts.items():
                artifacts[name] = store.write_artifact(relpath, name, artifact)
            writer.append(
                {**base_row, "image": relpath, "artifacts": artifacts, "status": STATUS_OK, "created": time.time()}
            )
    return failed


def timed_results(
    method: Method, requests: list[GenerationRequest], label: str
) -> Iterator[tuple[int, GenerationResult]]:
    """(index, result) pairs: a streaming method's as they come (with its own timings), any other
    method's after its one `generate` call, each with the batch's time."""
    if isinstance(method, StreamingMethod):
        yield from method.stream(requests)
        return
    start = time.perf_counter()
    runtime = getattr(method, "runtime", None)  # every Method has one; bare test doubles may not
    with sampling(runtime.speedups, runtime.device) if runtime else contextlib.nullcontext():  # sdpa_backend
        results = method.generate(requests)
    elapsed = time.perf_counter() - start
    if len(results) != len(requests):
        raise RuntimeError(f"method {label} returned {len(results)} results for {len(requests)} requests")
    timings = {"batch_s": round(elapsed, 4), "item_s": round(elapsed / len(requests), 4)}
    for index, result in enumerate(results):
        result.timings = result.timings or timings
        yield index, result


def paper_clip_t_prompt(spec: MethodSpec, method: Method, item: WorkItem) -> dict[str, str]:
    """Under preset=paper, the text the paper's own CLIP-T was scored against (its flaw 4), kept beside
    `prompt` so an evaluator can reproduce that number on request; `prompt` stays the default."""
    if spec.clip_t_prompt_form is None:
        return {}
    return {"paper_clip_t_prompt": format_prompt(spec.clip_t_prompt_form, item, method.caption_for)}


def resolved_config(cfg: DictConfig) -> dict[str, Any]:
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
