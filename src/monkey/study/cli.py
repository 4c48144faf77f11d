"""`monkey-study`: the paper's user study (Table 3) as tooling.

    monkey-study build runs/demo --methods monkey,ip_adapter_1.0,masactrl --questions 20 --participants 30 --out study/
    monkey-study tally study/ responses/ --out study/tally
    monkey-study agreement study/ responses/ --out study/agreement

`build` reads run folders (or experiment folders holding them), draws N questions per dataset from the
items every chosen method finished, and writes study/site/ (one static page per participant: open it
from disk, answer, export a JSON file), study/assignments.csv and study/study.json. `tally` reads the
exported files back and writes Table 3 with the paper's numbers, win rates, Bradley-Terry scores and
Krippendorff's alpha. Bad input stops with one line naming the file and exit code 2.
"""

import argparse
import logging
import sys
from importlib import resources
from pathlib import Path

from omegaconf import OmegaConf

from monkey.errors import MonkeyError

log = logging.getLogger("monkey")


def default_paper_names() -> dict[str, str]:
    """Our method label -> the paper's name, from conf/eval/default.yaml (eval.report.paper_names)."""
    config = OmegaConf.load(str(resources.files("monkey.conf") / "eval" / "default.yaml"))
    return dict(OmegaConf.to_container(config.report.paper_names))  # type: ignore[arg-type]


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="monkey-study", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    build = commands.add_parser("build", help="write the study's static site from run folders")
    build.add_argument("paths", nargs="+", type=Path, help="run folders or experiment folders")
    build.add_argument("--out", type=Path, required=True, help="study folder to write")
    build.add_argument("--methods", help="comma-separated variant labels to compare, as in the report (default: all)")
    build.add_argument("--questions", type=int, default=20, help="questions per dataset (paper: 20)")
    build.add_argument("--participants", type=int, default=30, help="participant pages (paper: 30)")
    build.add_argument("--attention-checks", type=int, default=2, help="checks per participant (0: none)")
    build.add_argument("--seed", type=int, default=0)
    build.add_argument("--title", default="Which image is best?")

    tally = commands.add_parser("tally", help="Table 3 and statistics from exported responses")
    tally.add_argument("study", type=Path, help="the folder monkey-study build wrote")
    tally.add_argument("responses", nargs="+", type=Path, help="response files or folders of them")
    tally.add_argument("--out", type=Path, help="tally folder (default: <study>/tally)")
    tally.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples for win rates")
    tally.add_argument("--bt-resamples", type=int, default=200, help="bootstrap resamples for Bradley-Terry")
    tally.add_argument("--bt-alpha", type=float, default=0.01, help="choix regularisation")
    tally.add_argument("--confidence", type=float, default=0.95)
    tally.add_argument("--seed", type=int, default=0)
    tally.add_argument("--allowed-check-failures", type=int, default=0)
    tally.add_argument("--paper-table", type=Path, help="CSV dataset,method,count (default: the shipped table3)")
    tally.add_argument(
        "--paper-name",
        action="append",
        default=[],
        metavar="LABEL=NAME",
        help="map a method label to the paper's column (default: eval.report.paper_names)",
    )
    agreement = commands.add_parser("agreement", help="how far each automatic metric agrees with people")
    agreement.add_argument("study", type=Path, help="the folder monkey-study build wrote")
    agreement.add_argument("responses", type=Path, help="a response file or a folder of them")
    agreement.add_argument("runs", nargs="*", type=Path, help="run or experiment folders (default: the study's own)")
    agreement.add_argument("--out", type=Path, help="folder to write (default: <study>/agreement)")
    agreement.add_argument("--eval-name", default="default", help="the score set to read (eval.name)")
    agreement.add_argument("--dreambench", type=Path, help="DreamBench++'s data_human_rating/raw_data folder")
    agreement.add_argument("--dreambench-scores", type=Path, help="CSV: method,key,<metric>... of its images")
    agreement.add_argument("--resamples", type=int, default=2000)
    agreement.add_argument("--seed", type=int, default=0)
    agreement.add_argument("--confidence", type=float, default=0.95)
    return parser.parse_args(argv)


def run_agreement(args: argparse.Namespace) -> int:
    from monkey.study.agreement_run import AgreementInputs, compute_agreement, write_agreement

    inputs = AgreementInputs(
        args.study, [args.responses], args.eval_name, args.runs or None, args.dreambench, args.dreambench_scores,
        args.resamples, args.seed, args.confidence,
    )  # fmt: skip
    agreement = compute_agreement(inputs)
    out = args.out or args.study / "agreement"
    write_agreement(agreement, out)
    print(f"agreement of {len(agreement.metrics)} metrics with {agreement.participants} participants -> {out}")
    return 0


def run_build(args: argparse.Namespace) -> int:
    from monkey.eval.collect import find_run_dirs
    from monkey.study.questions import method_runs
    from monkey.study.site import StudySpec, build_study

    labels = [m.strip() for m in args.methods.split(",") if m.strip()] if args.methods else None
    runs = method_runs(find_run_dirs(args.paths), labels)
    spec = StudySpec(args.questions, args.participants, args.attention_checks, args.seed, args.title)
    definition = build_study(runs, spec, args.out)
    print(
        f"study {definition['study_id']}: {len(definition['questions'])} questions, {len(definition['checks'])} "
        f"attention checks, {args.participants} participants, methods {[r.label for r in runs]} -> {args.out}/site"
    )
    return 0


def run_tally(args: argparse.Namespace) -> int:
    from monkey.errors import ConfigError
    from monkey.study.table3 import paper_table3_path
    from monkey.study.tally import TallySettings, tally_study, write_tally

    names = default_paper_names()
    for pair in args.paper_name:
        if "=" not in pair:
            raise ConfigError(f"--paper-name {pair!r}: expected LABEL=NAME, e.g. monkey=MONKEY")
        label, name = pair.split("=", 1)
        names[label] = name
    settings = TallySettings(
        args.resamples, args.bt_resamples, args.confidence, args.seed, args.bt_alpha, args.allowed_check_failures
    )
    paper = args.paper_table or paper_table3_path()
    if not paper.is_file():
        raise ConfigError(f"--paper-table {paper}: no such file (CSV dataset,method,count)")
    tally = tally_study(args.study, args.responses, settings, names, paper)
    out = args.out or args.study / "tally"
    write_tally(tally, out, settings)
    kept = tally.choices[tally.choices["kept"]]["participant"].nunique()
    print(f"tally of {kept} participants ({len(tally.exclusions)} excluded: exclusions.csv) -> {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="[%(name)s] %(message)s")
    args = parse(argv)
    try:
        return {"build": run_build, "tally": run_tally, "agreement": run_agreement}[args.command](args)
    except MonkeyError as err:
        log.error("%s", err)
        return 2


if __name__ == "__main__":
    sys.exit(main())
