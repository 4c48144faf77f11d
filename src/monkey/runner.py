"""The generate stage: plan -> this shard's unfinished items -> method -> run folder.

Rerunning the same command resumes: items whose image and manifest row exist are skipped. A run
folder whose finished items were made with another config is refused, naming the keys that differ,
rather than silently mixing two configs in one table.
"""

import logging
import time
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from monkey.datasets.base import load_sources
from monkey.errors import RunFolderError
from monkey.hashing import stable_hash, to_plain
from monkey.methods.base import RUNTIME_ONLY_KEYS, GenerationRequest, Method, build_method
from monkey.models.profiles import Runtime, profile_from_config, resolve_runtime
from monkey.plan import WorkItem, build_plan, shard_batches
from monkey.prompts import load_prompt_set
from monkey.shards import resolve_shard
from monkey.store import STATUS_OK, RunStore

log = logging.getLogger(__name__)


def plan_from_config(cfg: DictConfig) -> list[WorkItem]:
    sources = load_sources(cfg.dataset)
    prompts = load_prompt_set(**to_plain(cfg.prompts))
    return build_plan(
        sources,
        prompts,
        pairing=cfg.plan.pairing,
        seeds=cfg.plan.seeds,
        base_seed=cfg.plan.base_seed,
        limit_subjects=to_plain(cfg.plan.limit.subjects),
        limit_prompts=cfg.plan.limit.prompts,
    )


def generation_config(cfg: DictConfig, runtime: Runtime) -> dict[str, Any]:
    """Everything that decides what an image looks like, and nothing that does not."""
    method = {k: v for k, v in to_plain(cfg.method).items() if k not in RUNTIME_ONLY_KEYS}
    return {
        "method_target": cfg.method._target_,
        "method": method,
        "model": to_plain(cfg.model),
        "size": [cfg.generation.height, cfg.generation.width],
        "dtype": str(runtime.dtype).removeprefix("torch."),
    }


def diff_keys(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        keys = sorted(set(old) | set(new))
        return [d for k in keys for d in diff_keys(old.get(k), new.get(k), f"{prefix}{k}.")]
    return [] if old == new else [f"{prefix.rstrip('.')}: {old!r} -> {new!r}"]


def check_conflicts(store: RunStore, label: str, config_hash: str, config: dict, done: dict, items: list) -> None:
    for item in items:
        row = done.get(item.item_id)
        if row is None:
            continue
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
    batch_size = int(cfg.method.get("batch_size") or cfg.generation.batch_size)
    return shard, num_shards, shard_batches(plan, batch_size, shard, num_shards)


@dataclass
class GenerateSummary:
    planned: int  # items in this shard
    skipped: int  # already finished before this call
    generated: int


def generate_stage(cfg: DictConfig, run_dir: Path) -> GenerateSummary:
    plan = plan_from_config(cfg)
    plan_index = {item.item_id: index for index, item in enumerate(plan)}
    shard, num_shards, my_batches = shard_work(cfg, plan)
    mine = [item for batch in my_batches for item in batch]
    runtime = resolve_runtime(profile_from_config(cfg.model), cfg.runtime.device, cfg.runtime.dtype)
    label = cfg.method.name
    config = generation_config(cfg, runtime)
    config_hash = stable_hash(config)
    store = RunStore(run_dir)
    store.register_config(label, config_hash, config)
    done = store.finished(label)
    check_conflicts(store, label, config_hash, config, done, mine)
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
    method = build_method(cfg.method, runtime)
    writer_id = f"shard-{shard:03d}-of-{num_shards:03d}"
    context = {
        "config_hash": config_hash,
        "writer": writer_id,
        "device": str(runtime.device),
        "dtype": config["dtype"],
        "origin": "generated",
    }
    with (
        store.writer(label, writer_id) as writer,
        tqdm(
            total=len(mine), initial=len(mine) - len(todo), desc=f"{label} [{shard + 1}/{num_shards}]", unit="img"
        ) as progress,
    ):
        for batch in todo_batches:
            generate_batch(method, batch, cfg, store, writer, label, context, plan_index, finished=done)
            progress.update(sum(item.item_id not in done for item in batch))
    return GenerateSummary(len(mine), len(mine) - len(todo), len(todo))


def generate_batch(
    method: Method,
    batch: list[WorkItem],
    cfg: DictConfig,
    store: RunStore,
    writer: Any,
    label: str,
    context: dict[str, Any],
    plan_index: dict[str, int],
    finished: Collection[str] = (),
) -> None:
    """Generate `batch` and store every result whose item is not already `finished`."""
    requests = [
        GenerationRequest(item, method.prompt_for(item), item.seed, cfg.generation.height, cfg.generation.width)
        for item in batch
    ]
    start = time.perf_counter()
    results = method.generate(requests)
    elapsed = time.perf_counter() - start
    if len(results) != len(requests):
        raise RuntimeError(f"method {label} returned {len(results)} results for {len(requests)} requests")
    for request, result in zip(requests, results, strict=True):
        item = request.item
        if item.item_id in finished:
            continue
        relpath = item.image_relpath(label)
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
            {
                **item.describe(),
                **context,
                "method": label,
                "prompt": request.prompt,
                "height": request.height,
                "width": request.width,
                "image": relpath,
                "artifacts": artifacts,
                "status": STATUS_OK,
                "info": result.info,
                "timings": {"batch_s": round(elapsed, 4), "item_s": round(elapsed / len(requests), 4)},
                "plan_index": plan_index[item.item_id],
                "created": time.time(),
            }
        )


def resolved_config(cfg: DictConfig) -> dict[str, Any]:
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
