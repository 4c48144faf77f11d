"""What a loader reads from the Hugging Face hub, as data: one `HubNeed` per repository and revision.

Each loader (model profiles, metric backbones, captioners, detectors, embedders) says what it needs
next to the code that loads it, so `monkey-data prefetch` lists from the same fields the loaders read
and the two cannot drift. This module only describes needs, finds them in the local hub cache and
picks the files to fetch; it never loads a model.

A need names its files two ways:
- `files`: groups of alternatives, each group satisfied by any one of its files (the loaders' own
  preference order, e.g. `model.safetensors` before `pytorch_model.bin`);
- `components`: a diffusers pipeline's component folders (`unet`, `vae`, ...). Which of them the
  repository really has is read from its `model_index.json`, as `from_pretrained` does.
"""

import fnmatch
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import PurePosixPath

# The files a loader reads from one model folder (config, tokenizer, processor, weights); weights in
# safetensors are taken where a folder has them, else the .bin (transformers and diffusers do the same).
FOLDER_PATTERNS = ("*.json", "*.txt", "*.model", "*.safetensors", "*.bin")
# Weight files of another precision or EMA copy: loaders read the plain file unless a variant is asked for.
VARIANT_PATTERNS = ("*.fp16.*", "*.fp16-*", "*.bf16.*", "*non_ema*", "*.ema.*")
# Component classes that hold no weights (their folder needs only its config / vocabulary files).
WEIGHTLESS = ("Scheduler", "Tokenizer", "Processor", "FeatureExtractor")


@dataclass(frozen=True)
class HubNeed:
    """One repository (at one revision) a run reads, and which of its files."""

    repo_id: str
    what: str  # for people: "pipeline of model profile sd15", "eval backbone dino (timm ...)"
    revision: str | None = None  # None: the default branch
    files: tuple[tuple[str, ...], ...] = ()  # groups of alternatives, each group needed once
    components: tuple[str, ...] = ()  # a diffusers pipeline's component folders it may read
    skip_components: tuple[str, ...] = ()  # folders the loader is told not to read (e.g. SD3 without T5)
    wanted_by: tuple[str, ...] = field(default=(), compare=False)  # the jobs that need it

    @property
    def key(self) -> tuple:
        return (self.repo_id, self.revision, self.files, self.components, self.skip_components)

    def describe_files(self) -> str:
        parts = [" or ".join(group) for group in self.files]
        if self.components:
            parts.append("model_index.json + " + ",".join(c for c in self.components if c not in self.skip_components))
        return "; ".join(parts)

    def line(self) -> str:
        """One line for --list: repository@revision, files, what it is and who wants it."""
        at = f"@{self.revision}" if self.revision else ""
        more = len(self.wanted_by) - 3
        shown = ", ".join(self.wanted_by[:3]) + (f" and {more} more" if more > 0 else "")
        jobs = f" [{shown}]" if self.wanted_by else ""
        return f"{self.repo_id}{at}  {self.describe_files()}  ({self.what}){jobs}"


def transformers_model(
    repo_id: str, what: str, revision: str | None = None, subfolder: str = "", processor: bool = False
) -> HubNeed:
    """A transformers model folder (`from_pretrained(repo, subfolder=...)`): config and weights, and the
    processor's files when its processor is loaded from the same folder too."""
    prefix = f"{subfolder.strip('/')}/" if subfolder else ""
    files = [(f"{prefix}config.json",), tuple(f"{prefix}{name}" for name in WEIGHT_NAMES)]
    if processor:
        files.append((f"{prefix}preprocessor_config.json",))
        files.append((f"{prefix}tokenizer_config.json",))
    return HubNeed(repo_id=repo_id, what=what, revision=revision, files=tuple(files))


WEIGHT_NAMES = ("model.safetensors", "pytorch_model.bin")  # transformers' preference order


def merge_needs(needs: Iterable[HubNeed]) -> list[HubNeed]:
    """One need per distinct (repo, revision, files), with every job that wants it; first-seen order."""
    merged: dict[tuple, HubNeed] = {}
    for need in needs:
        if need.key in merged:
            old = merged[need.key]
            wanted = old.wanted_by + tuple(j for j in need.wanted_by if j not in old.wanted_by)
            merged[need.key] = HubNeed(**{**old.__dict__, "wanted_by": wanted})
        else:
            merged[need.key] = need
    return list(merged.values())


# --- the local cache ---------------------------------------------------------------------------


def cached_file(repo_id: str, filename: str, revision: str | None, cache_dir: str | None = None) -> str | None:
    """The file's path in the local hub cache, or None (huggingface_hub's own lookup, no network)."""
    from huggingface_hub import try_to_load_from_cache

    path = try_to_load_from_cache(repo_id, filename, cache_dir=cache_dir, revision=revision)
    return path if isinstance(path, str) and os.path.isfile(path) else None


def missing_parts(need: HubNeed, cache_dir: str | None = None) -> list[str]:
    """What of `need` is not in the local cache: [] when a loader would find all of it offline."""
    missing = [
        " or ".join(group)
        for group in need.files
        if not any(cached_file(need.repo_id, name, need.revision, cache_dir) for name in group)
    ]
    if need.components:
        missing += missing_components(need, cache_dir)
    return missing


def missing_components(need: HubNeed, cache_dir: str | None) -> list[str]:
    index_path = cached_file(need.repo_id, "model_index.json", need.revision, cache_dir)
    if index_path is None:
        return ["model_index.json"]
    snapshot = os.path.dirname(index_path)
    missing = []
    for name, entry in pipeline_components(index_path).items():
        if name not in need.components or name in need.skip_components:
            continue
        folder = os.path.join(snapshot, name)
        present = sorted(os.listdir(folder)) if os.path.isdir(folder) else []
        if not present:
            missing.append(f"{name}/")
        elif not is_weightless(entry) and not any(p.endswith((".safetensors", ".bin")) for p in present):
            missing.append(f"{name}/ weights")
    return missing


def pipeline_components(index_path: str) -> dict[str, list]:
    """model_index.json's components that name a class ([library, class]; null entries are absent)."""
    with open(index_path, encoding="utf-8") as handle:
        index = json.load(handle)
    return {k: v for k, v in index.items() if not k.startswith("_") and isinstance(v, list) and len(v) == 2 and v[1]}


def is_weightless(entry: list) -> bool:
    return any(word in str(entry[1]) for word in WEIGHTLESS)


# --- which files to fetch ----------------------------------------------------------------------


def files_to_fetch(need: HubNeed, repo_files: list[str]) -> tuple[list[str], list[str]]:
    """(files to download, groups the repository cannot satisfy), from the repository's file list."""
    chosen: list[str] = []
    unsatisfiable: list[str] = []
    listed = set(repo_files)
    for group in need.files:
        found = next((name for name in group if name in listed), None)
        if found is None:
            unsatisfiable.append(" or ".join(group))
        else:
            chosen.append(found)
    if need.components:
        if "model_index.json" not in listed:
            unsatisfiable.append("model_index.json")
        else:
            chosen.append("model_index.json")
            folders = [c for c in need.components if c not in need.skip_components]
            chosen += folder_files(repo_files, folders)
    return list(dict.fromkeys(chosen)), unsatisfiable


def folder_files(repo_files: list[str], folders: list[str]) -> list[str]:
    """The loader's files in each component folder: config, vocabulary and one weight format (no variants)."""
    picked = []
    for folder in folders:
        inside = [
            f
            for f in repo_files
            if str(PurePosixPath(f).parent) == folder
            and any(fnmatch.fnmatch(PurePosixPath(f).name, p) for p in FOLDER_PATTERNS)
            and not any(fnmatch.fnmatch(PurePosixPath(f).name, p) for p in VARIANT_PATTERNS)
        ]
        if any(f.endswith(".safetensors") for f in inside):
            inside = [f for f in inside if not f.endswith(".bin")]
        picked += inside
    return picked


def hub_offline() -> bool:
    """HF_HUB_OFFLINE as huggingface_hub reads it: the hub is not asked, only the cache is read."""
    return os.environ.get("HF_HUB_OFFLINE", "0").strip().lower() not in ("0", "", "false", "no", "off")
