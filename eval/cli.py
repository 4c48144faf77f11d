"""`monkey-report`: a report over any run folders after the fact.

    monkey-report runs/demo                          # an experiment folder -> runs/demo/report/
    monkey-report runs/a runs/b/ip_adapter_1.0 --out reports/ab
    monkey-report runs/demo --eval tiny eval.report.level=subject logger=wandb logger.mode=offline
    monkey-report runs/ablate_token --sweep method.token   # name the swept key (default: those that vary)
    monkey-report runs/demo --html                   # only gallery.html (no scoring, no tables)
    monkey-report --compare runs/a/monkey runs/b/monkey --out compare_ab   # B - A on the items both scored

Arguments are run folders (holding manifest/) or experiment folders (holding run folders). The score
set defaults to the one the folders already hold; unscored images are scored first (cached), so a
report over evaluated folders does no forward pass. Trailing `key=value` are Hydra overrides of the
primary config (only `eval.*` and `logger.*` matter here).
"""

import argparse
import logging
import sys
from pathlib import Path

from monkey.eval.collect import find_run_dirs
from monkey.eval.gallery import write_gallery
from monkey.eval.report import REPORT_DIR, build_report
from monkey.eval.score_store import ORACLE, ScoreSet, score_set_names
from omegaconf import DictConfig, OmegaConf

from monkey.errors import MonkeyError
from monkey.hydra_errors import compose_config

log = logging.getLogger("monkey")


def eval_groups() -> list[str]:
    from importlib import resources

    return sorted(p.name.removesuffix(".yaml") for p in resources.files("monkey.conf").joinpath("eval").iterdir())


def detect_eval_name(run_dirs: list[Path]) -> str:
    names = {name for run_dir in run_dirs for name in score_set_names(run_dir)}
    return names.pop() if len(names) == 1 else "default"


def report_config(name: str, logger: str, overrides: list[str], run_dirs: list[Path]) -> DictConfig:
    """The primary config with `eval=<name>`; a score set named outside conf/eval/ keeps its stored backbones."""
    known = name in eval_groups()
    cfg = compose_config("config", [f"eval={name if known else 'default'}", f"logger={logger}", *overrides])
    if not known:
        stored = next((s for d in run_dirs if (s := ScoreSet(d, name).settings())), None)
        if stored is None:
            raise MonkeyError(
                f"--eval {name}: neither a config in conf/eval/ ({eval_groups()}) nor a score set in the folders"
            )
        cfg.eval.name = name
        cfg.eval.backbones = stored["backbones"]
        cfg.eval.references = stored["references"]
    return cfg


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="monkey-report", description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="+", help="run folders or experiment folders, and key=value overrides")
    parser.add_argument("--out", type=Path, help="report folder (default: <the one path>/report, else ./report)")
    parser.add_argument("--eval", dest="eval_name", help="score set / conf/eval name (default: the folders')")
    parser.add_argument("--logger", default="none", help="none or wandb")
    parser.add_argument("--no-evaluate", action="store_true", help="do not score unscored images; report what is there")
    parser.add_argument("--html", action="store_true", help="write only gallery.html (and its thumbnails)")
    parser.add_argument(
        "--compare",
        action="store_true",
        help="compare exactly two run (or experiment) folders A B: config keys that differ, B - A per metric",
    )
    parser.add_argument(
        "--sweep", action="append", metavar="KEY", help="a swept config key, e.g. method.token (repeatable)"
    )
    return parser.parse_intermixed_args(argv)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="[%(name)s] %(message)s")
    args = parse(argv)
    overrides = [p for p in args.paths if "=" in p and not Path(p).exists()]
    paths = [p for p in args.paths if p not in overrides]
    try:
        run_dirs = find_run_dirs(paths)
        name = args.eval_name or detect_eval_name(run_dirs)
        out = args.out or (Path(paths[0]) / REPORT_DIR if len(paths) == 1 else Path(REPORT_DIR))
        if args.compare:
            return compare(paths, args.out, name, args.logger, overrides)
        if args.html:  # the gallery alone: scores shown where the folders hold score set `name`
            print(f"gallery of {len(run_dirs)} run folders: {write_gallery(run_dirs, out, name)}")
            return 0
        cfg = report_config(name, args.logger, overrides, run_dirs)
        report = build_report(
            run_dirs,
            out,
            cfg.eval,
            cfg.logger,
            evaluate=not args.no_evaluate,
            config=OmegaConf.to_container(cfg.eval),
            sweep=args.sweep,
        )
    except MonkeyError as err:
        log.error("%s", err)
        return 2
    generated = int((report.scores["method"] != ORACLE).sum())
    print(f"report of {generated} images from {len(report.run_dirs)} run folders: {report.out_dir}")
    return 0


def compare(paths: list[str], out: Path | None, name: str, logger: str, overrides: list[str]) -> int:
    """`--compare A B`: write compare.md/.csv and config_diff.csv, print the page, warn on uneven items."""
    from monkey.eval.backbones import backbone_specs
    from monkey.eval.compare import compare_runs, write_comparison

    from monkey.hashing import to_plain

    if len(paths) != 2:
        raise MonkeyError(f"--compare takes exactly two folders (A B), got {len(paths)}: {paths}")
    cfg = report_config(name, logger, overrides, find_run_dirs(paths))
    boot = cfg.eval.report.bootstrap
    metrics = [  # every score the backbones give, present or not (compare_runs keeps those both sides hold)
        m
        for spec in backbone_specs(to_plain(cfg.eval.backbones))
        for m in (spec.image_metric, f"{spec.image_metric}_all", spec.text_metric, f"{spec.text_metric}_paper")
        if m and not m.startswith("None")
    ]
    comparison = compare_runs(paths[0], paths[1], name, metrics, boot.samples, boot.seed, boot.confidence)
    for warning in comparison.warnings:
        log.warning("%s", warning)
    page = write_comparison(comparison, out or Path("compare"), paths[0], paths[1])
    print(page.read_text())
    print(f"comparison written to {page.parent}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
