"""`monkey-attention rank`: rank every (layer, image token, step) attention map of MONKEY's pass 1 by
IoU with known subject masks; writes ranking.csv, scores.csv, ranking.md, ranking.png/.pdf, ranking.json.

    monkey-attention rank masks.dir=masks/ subjects=8                         # tiny demo models
    monkey-attention rank model=sdxl_turbo method=monkey_sdxl masks.dir=masks/ generation.height=512 \\
        generation.width=512 out=results/rank/sdxl_turbo                       # SDXL, on a GPU

Arguments are Hydra overrides of conf/rank.yaml.
"""

import argparse
import logging
import shlex

from monkey.cli import quiet_libraries
from monkey.errors import MonkeyError

log = logging.getLogger("monkey")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="monkey-attention rank", description=__doc__.split("\n\n")[0])
    parser.add_argument("overrides", nargs="*", help="key=value overrides of conf/rank.yaml")
    args = parser.parse_args(argv)
    quiet_libraries()
    from monkey.rank.ranking import rank_config, run_ranking

    command = "monkey-attention rank " + " ".join(shlex.quote(a) for a in args.overrides)
    try:
        table, paths = run_ranking(rank_config(args.overrides), command)
    except MonkeyError as err:
        log.error("%s", err)
        return 2
    best = table.iloc[0]
    print(
        f"best: {best['layer']} token {best['token']} step {best['step']} (mean IoU {best['mean_iou']:.4f}) "
        f"-> {', '.join(map(str, paths))}"
    )
    return 0
