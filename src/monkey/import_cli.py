"""`monkey-import`: bring images generated elsewhere into a run folder as one more method.

    monkey-import jobs --out jobs.csv [plan overrides]            # the plan, as a mapping template
    monkey-import images --name freegraftor --images out/ --mapping jobs.csv [plan overrides]
    monkey-import images --name released --dataset user/images --split train [plan overrides]

Plan overrides are the Hydra overrides given to `monkey-bench` (e.g. `plan.limit.subjects=8`), so
the imported items line up with the native runs' items.
"""

import argparse
import json
import os
import re
import sys
from pathlib import Path

from omegaconf import DictConfig

from monkey.atomic import atomic_write_bytes
from monkey.errors import ConfigError, DataError, MonkeyError, OutputError
from monkey.hashing import stable_hash
from monkey.hydra_errors import compose_config
from monkey.imports import (
    ImportPlan,
    import_config,
    jobs_table,
    match,
    read_dataset,
    read_mapping,
    report_text,
    write_import,
    write_jobs,
)
from monkey.names import folder_name, path_name
from monkey.store import RunStore

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def plan_config(overrides: list[str]) -> DictConfig:
    return compose_config("config", overrides)


def plan_of(cfg: DictConfig) -> list:
    from monkey.runner import plan_from_config  # imported here: it loads torch, so bad arguments fail fast

    return plan_from_config(cfg)


def parser() -> argparse.ArgumentParser:
    main = argparse.ArgumentParser(
        prog="monkey-import", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    commands = main.add_subparsers(dest="command", required=True)
    jobs = commands.add_parser("jobs", help="write the plan's work items as a mapping template (CSV or JSONL)")
    jobs.add_argument("--out", type=Path, required=True, help="jobs.csv or jobs.jsonl")
    jobs.add_argument("overrides", nargs="*", help="Hydra overrides of the plan, as given to monkey-bench")
    images = commands.add_parser("images", help="import images with a mapping to work items")
    images.add_argument("--name", required=True, help="the method label the images get in tables")
    source = images.add_mutually_exclusive_group(required=True)
    source.add_argument("--images", type=Path, help="folder of images; the mapping's `file` is relative to it")
    source.add_argument(
        "--dataset", help="Hugging Face dataset id or a save_to_disk folder; its columns are the mapping"
    )
    images.add_argument("--mapping", type=Path, help="CSV or JSONL mapping (with --images)")
    images.add_argument("--split", default="train", help="dataset split (default: train)")
    images.add_argument("--image-column", default="image", help="dataset column holding the images (default: image)")
    images.add_argument("--run-dir", type=Path, help="default: <run.root>/<run.name>/<name>")
    images.add_argument("--skip-problems", action="store_true", help="import the rows that match, list the others")
    images.add_argument("--require-all", action="store_true", help="fail unless every plan item has an image")
    images.add_argument("overrides", nargs="*", help="Hydra overrides of the plan, as given to monkey-bench")
    return main


def output_folder(path: Path, flag: str) -> Path:
    """`path` as a folder that exists (made if needed), or one line saying why it cannot be."""
    if path.exists() and not path.is_dir():
        raise OutputError(f"{flag} {path} is a file; a folder is needed here")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(f"{flag} {path}: cannot create this folder ({err.strerror})") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise OutputError(f"{flag} {path}: this folder is not writable")
    return path


def creatable_folder(path: Path, flag: str) -> None:
    """Refuse early (before reading the plan) a folder that cannot be made: its nearest existing
    ancestor must be a writable folder. Nothing is created here."""
    ancestor = path
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise OutputError(f"{flag} {path}: {ancestor} is a file, so this folder cannot be made")
    if ancestor != path and not os.access(ancestor, os.W_OK | os.X_OK):
        raise OutputError(f"{flag} {path}: cannot create this folder ({ancestor} is not writable)")


def run_jobs(args: argparse.Namespace) -> int:
    if args.out.is_dir():
        raise ConfigError(f"--out {args.out} is a folder; give a file name ending in .csv or .jsonl")
    creatable_folder(args.out.parent, "--out's folder")
    plan = plan_of(plan_config(args.overrides))
    output_folder(args.out.parent, "--out's folder")
    write_jobs(args.out, jobs_table(plan, "external"))
    print(f"wrote {len(plan)} work items to {args.out}")
    return 0


def run_images(args: argparse.Namespace) -> int:
    if not NAME.match(args.name):
        raise ConfigError(f"--name {args.name!r} must be letters, digits, '.', '_' or '-' (it names folders)")
    if args.images is not None and args.mapping is None:
        raise ConfigError("--images needs --mapping (CSV or JSONL naming each file's work item)")
    if args.dataset is not None and args.mapping is not None:
        raise ConfigError("--dataset takes the mapping from its own columns; leave out --mapping")
    if args.images is not None and not args.images.is_dir():
        raise ConfigError(f"--images {args.images} is not a folder")
    if args.run_dir is not None:
        creatable_folder(args.run_dir, "--run-dir")
    rows = read_mapping(args.mapping) if args.mapping else read_dataset(args.dataset, args.split, args.image_column)
    if not rows:
        source = f"mapping file {args.mapping}" if args.mapping else f"dataset {args.dataset} (split {args.split})"
        raise DataError(f"{source} holds no rows: nothing to import")
    cfg = plan_config(args.overrides)
    plan = plan_of(cfg)
    result: ImportPlan = match(rows, plan, args.images)
    path_name(args.name, "--name")
    run_dir = args.run_dir or Path(cfg.run.root) / folder_name(cfg.run.name, "run.name") / args.name
    failed = (result.problems and not args.skip_problems) or (result.missing and args.require_all)
    if failed:
        print(report_text(args.name, run_dir, len(rows), result, 0, 0, len(plan)), file=sys.stderr)
        reason = "problems above" if result.problems and not args.skip_problems else "plan items without an image"
        print(f"nothing imported: {reason} (--skip-problems imports the matching rows)", file=sys.stderr)
        return 2
    store = RunStore(output_folder(run_dir, "--run-dir" if args.run_dir else "run folder"))
    config = import_config(args.images, args.dataset)
    config_hash = stable_hash(config)
    store.register_config(args.name, config_hash, config)
    plan_index = {item.item_id: index for index, item in enumerate(plan)}
    written, skipped = write_import(store, args.name, plan_index, result.matched, args.images, config_hash)
    report = report_text(args.name, run_dir, len(rows), result, written, skipped, len(plan))
    print(report)
    summary = {
        "name": args.name,
        "mapping_rows": len(rows),
        "written": written,
        "already_imported": skipped,
        "problems": [{"row": p.where, "problem": p.message} for p in result.problems],
        "missing_items": [item.item_id for item in result.missing],
    }
    atomic_write_bytes(run_dir / f"import-{args.name}.json", (json.dumps(summary, indent=2) + "\n").encode())
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return run_jobs(args) if args.command == "jobs" else run_images(args)
    except MonkeyError as err:
        print(f"monkey-import: {err}", file=sys.stderr)
        return 2


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
