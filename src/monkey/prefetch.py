"""`monkey-data prefetch [overrides...]`: every hub file a `monkey-bench` command would read, fetched
ahead (on a login node with network) so the run itself works offline (HF_HUB_OFFLINE=1 on compute nodes).

The config is composed exactly as `monkey-bench` composes it (the same conf/, the same overrides);
a multirun's sweep (the experiment's `hydra.sweeper.params` and any `key=a,b` on the command line) is
expanded into its jobs, and each job's needs come from the loaders' own `needs()` / `hub_needs()`:
its model profile (the method's own profile where it names one, after the preset), the method's
components (captioner, detector, embedder) and, when the job scores, the metric backbones.
"""

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from hydra import compose, initialize_config_module
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf

from monkey.errors import ConfigError, ModelLoadError
from monkey.hub_needs import HubNeed, files_to_fetch, hub_offline, merge_needs, missing_parts

SCORING_STAGES = ("evaluate", "report")  # a job with either loads the metric backbones


@dataclass(frozen=True)
class Job:
    label: str  # the sweep values that vary between jobs, e.g. "method=monkey,preset=paper"; "" for one run
    cfg: DictConfig


def compose_config(overrides: list[str], return_hydra_config: bool = False) -> DictConfig:
    import monkey.cli  # noqa: F401  (registers the resolvers the Hydra part of the config uses)

    try:
        with initialize_config_module(config_module="monkey.conf", version_base="1.3"):
            return compose(config_name="config", overrides=overrides, return_hydra_config=return_hydra_config)
    except HydraException as err:
        raise ConfigError(f"overrides {overrides}: {' '.join(str(err).split())}") from err


def sweep_jobs(overrides: list[str]) -> list[Job]:
    """The jobs `monkey-bench <overrides>` would run: the experiment's sweeper params, then the command
    line's overrides (which replace the same key, as in Hydra's basic sweeper), expanded into their product."""
    parser = OverridesParser.create()
    try:
        parsed = parser.parse_overrides(overrides)
    except HydraException as err:
        raise ConfigError(f"overrides {overrides}: {' '.join(str(err).split())}") from err
    fixed = [o.input_line for o in parsed if not o.is_sweep_override()]
    cfg = compose_config(fixed, return_hydra_config=True)
    params = OmegaConf.to_container(cfg.hydra.sweeper.params, resolve=False) if cfg.hydra.sweeper.params else {}
    # a sweep computed by a resolver (the token ablation's ${monkey.image_token_sweep:} reads the adapter's
    # weights, not there yet) varies a knob of one method on one model: the config's own value stands in
    swept = {str(key): f"{key}={value}" for key, value in (params or {}).items() if "${" not in str(value)}
    # as Hydra's basic sweeper: a command-line override of a swept key replaces the experiment's sweep
    swept |= {o.get_key_element(): o.input_line for o in parsed}
    axes = [
        [(key, f"{o.get_key_element()}={value}") for value in o.sweep_string_iterator()]
        if (o := parser.parse_override(line)).is_sweep_override()
        else [(key, line)]
        for key, line in swept.items()
    ]
    jobs = []
    for combination in itertools.product(*axes):
        chosen = [line for _, line in combination]
        label = ",".join(line for (_, line), axis in zip(combination, axes, strict=True) if len(axis) > 1)
        jobs.append(Job(label, cfg if not chosen else compose_config([*fixed, *chosen])))
    return jobs


def component_needs(config: Any, where: str) -> Iterator[HubNeed]:
    """Needs of every `_target_` component inside a method config, from its class's `hub_needs`. A
    component naming `pretrained` weights whose class cannot say what it reads is refused: it would be
    missing on the offline node without a word."""
    if not isinstance(config, dict):
        return
    target = config.get("_target_")
    if target:
        from hydra.utils import get_class

        hub_needs: Callable[..., list[HubNeed]] | None = getattr(get_class(target), "hub_needs", None)
        if hub_needs is not None:
            yield from hub_needs(**{k: v for k, v in config.items() if k != "_target_" and not isinstance(v, dict)})
        elif "pretrained" in config:
            raise ConfigError(
                f"{where}._target_={target!r} loads pretrained={config['pretrained']!r} but has no "
                "hub_needs(): prefetch cannot tell what it reads (add one beside its loader)"
            )
    for key, value in config.items():
        yield from component_needs(value, f"{where}.{key}")


# MONKEY's blocks read only under one method.mask_source (monkey.adapter.mask_sources): key -> that source
SOURCE_BLOCKS = {"segmenter": "segmenter", "refine": "refined"}


def used_components(method: dict[str, Any]) -> dict[str, Any]:
    """The method config without the blocks its mask source never loads, so a run fetches only what it reads."""
    if "mask_source" not in method:
        return method
    source = method["mask_source"]
    return {key: value for key, value in method.items() if SOURCE_BLOCKS.get(key, source) == source}


def job_needs(job: Job) -> list[HubNeed]:
    """One job's needs: its model profile, its method's components, and the metric backbones when it scores."""
    from monkey.eval.backbones import backbone_specs
    from monkey.methods.presets import method_spec
    from monkey.models.profiles import profile_from_config

    cfg = job.cfg
    spec = method_spec(cfg)
    needs = profile_from_config(spec.model).needs()
    needs += list(component_needs(used_components(spec.method), "method"))
    if any(stage in SCORING_STAGES for stage in cfg.run.stages):
        for backbone in backbone_specs(OmegaConf.to_container(cfg.eval.backbones, resolve=True)):
            needs += backbone.needs()
        if cfg.eval.get("masked", False):  # eval.masked: its segmenter's models too (monkey.eval.masked)
            needs += list(component_needs(OmegaConf.to_container(cfg.eval.segmenter, resolve=True), "eval.segmenter"))
    wanted_by = (job.label or "the run",)
    return [HubNeed(**{**need.__dict__, "wanted_by": wanted_by}) for need in needs]


def all_needs(overrides: list[str]) -> list[HubNeed]:
    return merge_needs(need for job in sweep_jobs(overrides) for need in job_needs(job))


class HubClient:
    """The two hub calls prefetch makes (tests substitute a folder of tiny twins)."""

    def list_files(self, repo_id: str, revision: str | None) -> list[str]:
        from huggingface_hub import HfApi

        return list(HfApi().list_repo_files(repo_id, revision=revision))

    def download(self, repo_id: str, revision: str | None, files: list[str]) -> None:
        from huggingface_hub import snapshot_download

        snapshot_download(repo_id, revision=revision, allow_patterns=files)


def missing_lines(needs: list[HubNeed], cache_dir: str | None) -> list[tuple[HubNeed, str]]:
    """(need, one line naming what of it the local cache lacks) for each incomplete need."""
    out = []
    for need in needs:
        parts = missing_parts(need, cache_dir)
        if parts:
            at = f"@{need.revision}" if need.revision else ""
            out.append((need, f"missing: {need.repo_id}{at} {', '.join(parts)} ({need.what})"))
    return out


def prefetch(
    overrides: list[str],
    mode: str = "download",
    client: HubClient | None = None,
    cache_dir: str | None = None,
    echo: Callable[[str], object] = print,
) -> int:
    """list: print the needs. dry-run: print what is not in the local cache (1 when anything is).
    download: fetch what is missing (offline: ModelLoadError naming every missing item at once)."""
    needs = all_needs(overrides)
    if mode == "list":
        for need in needs:
            echo(need.line())
        echo(f"{len(needs)} hub items")
        return 0
    missing = missing_lines(needs, cache_dir)
    if mode == "dry-run":
        for _, line in missing:
            echo(line)
        echo(f"{len(needs) - len(missing)} of {len(needs)} hub items in the local cache, {len(missing)} missing")
        return 1 if missing else 0
    if not missing:
        echo(f"all {len(needs)} hub items are in the local cache")
        return 0
    if hub_offline():
        lines = "\n".join(line for _, line in missing)
        raise ModelLoadError(
            f"{len(missing)} of {len(needs)} hub items are missing and HF_HUB_OFFLINE is set, so the hub is not "
            f"asked; run this command where the hub is reachable:\n{lines}"
        )
    client = client or HubClient()
    failures, fetched = [], []
    for need, _ in missing:
        failure = fetch_one(need, client)
        if failure:
            failures.append(failure)
        else:
            fetched.append(need)
            echo(f"fetched {need.repo_id} ({need.what})")
    failures += [line for _, line in missing_lines(fetched, cache_dir)]  # fetched, yet still not loadable
    if failures:
        raise ModelLoadError(f"{len(failures)} hub items could not be fetched:\n" + "\n".join(failures))
    echo(f"all {len(needs)} hub items are in the local cache")
    return 0


def fetch_one(need: HubNeed, client: HubClient) -> str | None:
    """Download one need's files; a line saying why not (gated, not found, no such file), or None."""
    from huggingface_hub.errors import HfHubHTTPError

    at = f"@{need.revision}" if need.revision else ""
    try:
        files, absent = files_to_fetch(need, client.list_files(need.repo_id, need.revision))
        if absent:
            return f"cannot fetch: {need.repo_id}{at} has no {', '.join(absent)} ({need.what})"
        client.download(need.repo_id, need.revision, files)
    except (HfHubHTTPError, OSError, ValueError) as err:
        return f"cannot fetch: {need.repo_id}{at} ({need.what}): {' '.join(str(err).split())[:300]}"
    return None
