"""`monkey-attention`: per-token attention maps of MONKEY's pass 1 over its image, as PNG + PDF (+ JSON).

    monkey-attention                                             # tiny demo models, subject dog, prompt 0
    monkey-attention subject=cat prompt_index=3 'steps=[1,2]' rows=layers --out figs/cat
    monkey-attention 'layers=[up_blocks.1.attentions.1]' 'words=[dog,snow]' 'tokens=[1]' norm=shared
    monkey-attention model=lcm_dreamshaper generation.height=512 generation.width=512   # the paper's model, GPU
    monkey-attention rank masks.dir=masks/ subjects=8          # rank (layer, token, step) by IoU (conf/rank.yaml)

Arguments are Hydra overrides of conf/attention.yaml (the benchmark's config plus the figure's keys:
subject, image_id, prompt_index, seed_index, prompt, layers, steps, rows, words, tokens, norm, cmap,
alpha, interpolation, out).
"""

import argparse
import logging
import sys
from pathlib import Path

from monkey.cli import quiet_libraries
from monkey.errors import MonkeyError
from monkey.figures.attention_figure import attention_config, make_attention_figure, output_stem

log = logging.getLogger("monkey")


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="monkey-attention", description=__doc__.split("\n\n")[0])
    parser.add_argument("overrides", nargs="*", help="key=value overrides of conf/attention.yaml")
    parser.add_argument("--out", type=Path, help="output stem: writes <out>.png, <out>.pdf, <out>.json")
    return parser.parse_intermixed_args(argv)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="[%(name)s] %(message)s")
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["rank"]:
        from monkey.rank.cli import main as rank_main

        return rank_main(argv[1:])
    args = parse(argv)
    quiet_libraries()
    try:
        cfg = attention_config(args.overrides)
        figure = make_attention_figure(cfg)
        paths = figure.save(args.out or output_stem(cfg))
    except MonkeyError as err:
        log.error("%s", err)
        return 2
    rows = 1 + max(p.row for p in figure.panels)
    print(f"attention maps of {figure.about['item_id']} ({rows} rows) -> {', '.join(map(str, paths))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
