"""Every shell command shown in docs/, and how each is kept true (issue 27, point 8).

A command in a fenced ```bash / ```sh / ```shell block is one of:
- composed by the tests: a `monkey-bench` command on the tiny profiles; tests/test_doc_commands.py parses
  its overrides as Hydra does and composes its config (the first job of its sweep) with TINY_OVERRIDES
  added, so a wrong key, group, option or an override Hydra cannot read (`key=~/x`) fails;
- listed in NOT_RUN with why it is not run in CI (real weights, a GPU, a network, an install, a folder
  an earlier command makes, a long benchmark);
- in a block preceded by a marker `<!-- needs: gpu -->` (or weights, network, environment) on the line
  before the fence: every command of that block needs it.
A command that is none of these fails the test, naming the page and the line, so a new command in the
docs comes with a decision.
"""

# ruff: noqa: E501  (the registries quote the docs' commands verbatim, however long)
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"

# The one place that says what "with tiny overrides" means: added after a documented monkey-bench
# command's own overrides (so they win), they keep any documented command small enough for a CPU.
TINY_OVERRIDES = ["plan.limit.subjects=1", "plan.limit.prompts=1", "generation.batch_size=1"]
# What running a tiny monkey-bench command in the tests adds on top: the generate stage alone (the demo's
# evaluate and report have tests of their own) at 64 px, into the test's own run root.
RUN_OVERRIDES = [*TINY_OVERRIDES, "run.stages=[generate]", "generation.height=64", "generation.width=64"]

MARKER = re.compile(r"<!--\s*needs:\s*(gpu|weights|network|environment)\s*-->")
FENCE = re.compile(r"^```(bash|sh|shell)\s*\n(.*?)^```", re.S | re.M)


@dataclass(frozen=True)
class DocCommand:
    page: str  # relative to docs/
    line: int  # 1-based line of the command's first line
    text: str  # the command, continuation lines joined, comment and surrounding space removed
    marker: str | None  # the block's `needs:` marker, if any


def strip_comment(line: str) -> str:
    """The command without its trailing `# ...` comment (a '#' inside quotes stays)."""
    quote = None
    for index, char in enumerate(line):
        if char in "'\"" and quote in (None, char):
            quote = None if quote else char
        elif char == "#" and quote is None and (index == 0 or line[index - 1].isspace()):
            return line[:index].rstrip()
    return line.rstrip()


def doc_commands(docs: Path = DOCS) -> list[DocCommand]:
    commands = []
    for page in sorted(docs.rglob("*.md")):
        text = page.read_text()
        for block in FENCE.finditer(text):
            before = text[: block.start()].rstrip().rsplit("\n", 1)[-1]
            marker = MARKER.search(before)
            first = text[: block.start(2)].count("\n") + 1
            pending, start = "", 0
            for offset, raw in enumerate(block.group(2).splitlines()):
                line = strip_comment(raw)
                if not pending:
                    start = first + offset
                if line.endswith("\\"):
                    pending += line[:-1].strip() + " "
                    continue
                command = " ".join((pending + line.strip()).split())
                pending = ""
                if command:
                    commands.append(
                        DocCommand(str(page.relative_to(docs)), start, command, marker.group(1) if marker else None)
                    )
    return commands


WHY = {
    "weights": "needs real model weights (usually a GPU too)",
    "gpu": "needs a GPU",
    "network": "needs a network",
    "data": "needs a dataset copy or folder of your own",
    "after": "reads the folders an earlier command wrote",
    "install": "installs or sets up an environment",
    "environment": "sets variables of your own environment",
    "docs extra": "needs the docs extra (mkdocs, jupyter)",
    "cluster": "needs a SLURM cluster",
    "benchmark": "a benchmark script: minutes of CPU, run by hand (results/benchmarks/)",
    "refused": "shows a refusal on purpose (tests/test_bad_input_table.py runs the same input)",
    "judge": "needs a multimodal judge endpoint (a vLLM server or a hosted API)",
}

# Commands that run as written on the tiny profiles (monkey-bench ones are composed by the tests).
TINY = {
    ("controlnet.md", "monkey-bench experiment=controlnet"),
    ("controlnet.md", "monkey-bench method=monkey +control=canny"),
    ("controlnet.md", "monkey-bench method=monkey +control=canny method.control.scale=0.5 method.control.start=0.25"),
    ("attention.md", "monkey-attention"),
    ("attention.md", "monkey-attention subject=cat prompt_index=3 rows=layers --out figs/cat"),
    (
        "attention.md",
        "monkey-attention prompt_index=1 'layers=[up_blocks.1.attentions.1]' 'words=[dog,snow]' 'tokens=[1]' norm=shared",
    ),
    (
        "configuration.md",
        "monkey-bench hydra.mode=RUN method=ip_adapter_0.5 plan.limit.subjects=2 plan.limit.prompts=2",
    ),
    ("development.md", "python tools/config_reference.py --write"),
    ("development.md", "python tools/readme_coverage.py"),
    ("methods/import.md", "monkey-import jobs --out jobs.csv plan.limit.subjects=8 plan.limit.prompts=4"),
    ("methods/index.md", "monkey-bench -m method=ip_adapter_0.5,ip_adapter_1.0,masactrl"),
    ("methods/index.md", "monkey-bench -m method=ip_adapter_0.5,ip_adapter_1.0,masactrl preset=paper"),
    ("methods/ip_adapter.md", "monkey-bench -m method=ip_adapter_0.5,ip_adapter_1.0,text_only"),
    ("methods/ip_adapter.md", "monkey-bench experiment=sweep_ip_scale"),
    ("methods/tf_ti2i.md", "monkey-bench hydra.mode=RUN method=tf_ti2i plan.limit.subjects=2 plan.limit.prompts=2"),
    ("monkey.md", "monkey-bench hydra.mode=RUN method=monkey plan.limit.subjects=2 plan.limit.prompts=2"),
    ("evaluation.md", "monkey-bench hydra.mode=RUN method=monkey eval.masked=true 'run.stages=[generate,evaluate,report]'"),
    ("monkey.md", "monkey-bench -m method=monkey method.token=0,1,2,3"),
    ("monkey.md", "monkey-bench experiment=ablate_mask_source"),
    ("monkey.md", "monkey-bench -m method=monkey method.combine=mean,union method.threshold=0.3,0.5,0.7"),
    (
        "monkey.md",
        "monkey-bench -m method=monkey 'method.layers=[up_blocks.1.attentions.1.transformer_blocks.0.attn2],[up_blocks.1.attentions.0.transformer_blocks.0.attn2,up_blocks.1.attentions.1.transformer_blocks.0.attn2]'",
    ),
    ("multi_subject.md", "monkey-bench experiment=multi_subject"),
    ("sdxl.md", "monkey-bench experiment=ablate_token"),
    ("sdxl.md", "monkey-bench method=monkey_sdxl"),
    (
        "shared-machines.md",
        "monkey-bench hydra.mode=RUN method=ip_adapter_1.0 runtime.threads=1 plan.limit.subjects=1 plan.limit.prompts=1",
    ),
    ("sweeps.md", "monkey-bench -m method=ip_adapter_0.5,ip_adapter_1.0,text_only"),
    ("sweeps.md", "monkey-bench -m method=ip_adapter_1.0 method.scale=0.0,0.25,0.5,0.75,1.0"),
    ("sweeps.md", "monkey-bench -m method=monkey method.token=0,1,2,3 run.name=ablate_token"),
}
# Commands CI does not run, and why (a key of WHY).
NOT_RUN = {
    ("controlnet.md", "monkey-bench method=monkey +control=folder method.control.folder=controls/depth"): "data",
    ("configuration.md", "monkey-bench method=nope"): "refused",
    ("configuration.md", "monkey-bench hydra.mode=RUN method.nokey=3"): "refused",
    (
        "evaluation.md",
        "monkey-report --compare runs/demo/ip_adapter_0.5 runs/demo/ip_adapter_1.0 --out runs/demo/compare",
    ): "after",
    (
        "evaluation.md",
        "monkey-bench run.stages=[evaluate,report] eval.judge.enabled=true eval.judge.base_url=http://127.0.0.1:8000/v1 eval.judge.model=Qwen/Qwen2.5-VL-7B-Instruct",
    ): "judge",
    (
        "gpu.md",
        "monkey-bench experiment=paper_dreambooth dataset.root=/data/dreambooth dataset.images=all plan.pairing=cycle",
    ): "weights",
    ("study.md", "monkey-study agreement study/ responses/ --out study/agreement"): "after",
    ("study.md", "monkey-report runs/exp eval.report.agreement.study=study/ 'eval.report.agreement.responses=[responses/]'"): "after",
    ("sdxl.md", "monkey-attention rank masks.dir=masks/ subjects=8"): "data",
    ("attention.md", "monkey-attention model=lcm_dreamshaper"): "weights",
    ("attention.md", "jupyter execute notebooks/table1_figure2.ipynb notebooks/attention_maps.ipynb"): "docs extra",
    ("datasets.md", "monkey-data download dreambooth --dest ~/data/dreambooth"): "network",
    ("datasets.md", "monkey-bench dataset.root=$HOME/data/dreambooth dataset.images=all"): "data",
    ("datasets.md", "monkey-data verify dreambooth ~/data/dreambooth"): "data",
    ("datasets.md", "monkey-bench dataset=magic"): "network",
    ("datasets.md", "monkey-data download magic --dest ~/data/mtg"): "network",
    ("datasets.md", "monkey-bench dataset=magic dataset.path=$HOME/data/mtg"): "data",
    ("datasets.md", "monkey-bench dataset=magic dataset.path=export.parquet"): "data",
    ("datasets.md", "monkey-bench dataset=magic dataset.path=cards.csv"): "data",
    ("development.md", 'pip install -e ".[docs]"'): "install",
    ("development.md", "mkdocs serve"): "docs extra",
    ("development.md", "mkdocs build --strict --site-dir /tmp/site"): "docs extra",
    ("evaluation.md", "monkey-bench run.stages=[evaluate] ...same overrides as the run..."): "after",
    ("evaluation.md", "monkey-report runs/demo"): "after",
    ("evaluation.md", "monkey-report runs/demo eval.masked=true"): "after",
    ("evaluation.md", "monkey-report runs/a runs/b/ip_adapter_1.0 --out reports/ab"): "after",
    ("evaluation.md", "monkey-report runs/demo eval.report.level=subject eval.report.bootstrap.samples=5000"): "after",
    ("gpu.md", "pip install torch==2.14.1 torchvision==0.29.1 && pip install ."): "install",
    ("gpu.md", "monkey-bench experiment=paper_dreambooth dataset.root=/data/dreambooth dataset.images=all"): "weights",
    ("gpu.md", "monkey-bench experiment=paper_magic dataset.path=/data/mtg"): "weights",
    (
        "gpu.md",
        "monkey-bench experiment=paper_dreambooth dataset.root=/data/dreambooth dataset.images=all hydra.sweeper.params.method=ip_adapter_0.5,ip_adapter_1.0,monkey generation.batch_size=16",
    ): "weights",
    (
        "methods/freegraftor.md",
        "git clone https://github.com/Nihukat/FreeGraftor ~/FreeGraftor && cd ~/FreeGraftor",
    ): "install",
    ("methods/freegraftor.md", "git checkout af8c190"): "install",
    ("methods/freegraftor.md", "conda create -y -p ./env python=3.10.9 && conda activate ./env"): "install",
    ("methods/freegraftor.md", "pip install -r requirements.txt"): "install",
    ("methods/freegraftor.md", "hf download black-forest-labs/FLUX.1-dev --local-dir /models/FLUX.1-dev"): "network",
    (
        "methods/freegraftor.md",
        "hf download IDEA-Research/grounding-dino-tiny --local-dir /models/grounding-dino-tiny",
    ): "network",
    (
        "methods/freegraftor.md",
        "wget -P /models https://dl.fbaipublicfiles.com/segment_anything/sam_vit_h_4b8939.pth",
    ): "network",
    (
        "methods/freegraftor.md",
        "export FREEGRAFTOR_CHECKOUT=~/FreeGraftor FREEGRAFTOR_PYTHON=~/FreeGraftor/env/bin/python FLUX_DEV=/models/FLUX.1-dev GROUNDING_DINO=/models/grounding-dino-tiny SAM=/models/sam_vit_h_4b8939.pth",
    ): "environment",
    ("methods/freegraftor.md", "monkey-bench experiment=paper_dreambooth"): "weights",
    (
        "methods/import.md",
        "monkey-import images --name freegraftor --images out/ --mapping jobs.csv plan.limit.subjects=8 plan.limit.prompts=4",
    ): "after",
    ("methods/import.md", "monkey-import images --name released --dataset user/released-images --split train"): "after",
    ("methods/tf_ti2i.md", "monkey-bench -m method=monkey,tf_ti2i model=lcm_dreamshaper"): "weights",
    ("methods/tf_ti2i.md", "monkey-bench -m method=tf_ti2i preset=paper model=lcm_dreamshaper"): "weights",
    ("monkey.md", "monkey-bench experiment=paper_dreambooth"): "weights",
    (
        "quickstart.md",
        "python3 -m venv .venv && . .venv/bin/activate && pip install torch==2.14.1 torchvision==0.29.1 && pip install . && monkey-bench",
    ): "install",
    (
        "quickstart.md",
        'python3 -m venv .venv && . .venv/bin/activate && pip install torch==2.14.1 torchvision==0.29.1 && pip install -e ".[dev]" && python -m pytest -q',
    ): "install",
    ("scaling.md", "monkey-bench experiment=paper_dreambooth"): "weights",
    (
        "scaling.md",
        "accelerate launch --multi_gpu --num_processes 8 -m monkey.cli experiment=paper_dreambooth shard=auto",
    ): "gpu",
    (
        "scaling.md",
        "monkey-bench -m experiment=paper_dreambooth hydra/launcher=slurm shard=0,1,2,3 num_shards=4 hydra.launcher.partition=gpu hydra.launcher.timeout_min=120",
    ): "cluster",
    ("sdxl.md", "monkey-bench model=sdxl_turbo method=monkey_sdxl"): "weights",
    (
        "sdxl.md",
        "monkey-bench model=sdxl method=monkey_sdxl method.model=sdxl_plus method.guidance_scale=5.0",
    ): "weights",
    (
        "sdxl.md",
        "monkey-bench model=sdxl method=monkey_sdxl method.model=sdxl method.guidance_scale=5.0 method.initial_steps=12 'method.capture_steps=[3,4,5,6,7,8]' method.final_steps=24 'method.ip_steps=[6,7,8,9,10,11,12,13,14,15,16,17]' 'method.mask_steps=[6,7,8,9,10,11,12,13,14,15,16,17]'",
    ): "weights",
    (
        "sdxl.md",
        "monkey-bench experiment=ablate_token model=sdxl method=monkey_sdxl method.model=sdxl_plus method.guidance_scale=5.0",
    ): "weights",
    (
        "sdxl.md",
        "monkey-attention rank model=lcm_dreamshaper masks.dir=masks/ generation.height=512 generation.width=512 out=results/rank/lcm_dreamshaper",
    ): "weights",
    (
        "sdxl.md",
        "monkey-attention rank model=sdxl_turbo method=monkey_sdxl generation.height=512 generation.width=512 'masks.segmenter={_target_:monkey.rank.segmenters.ClipSegSegmenter,model:CIDAS/clipseg-rd64-refined}' out=results/rank/sdxl_turbo",
    ): "weights",
    ("sdxl.md", "python benchmarks/sdxl_speed.py"): "benchmark",
    ("sdxl.md", "python benchmarks/sdxl_speed.py --size 128 --pairs 7 --threads 1"): "benchmark",
    ("sdxl.md", "python benchmarks/gpu_sdxl.py --out results/benchmarks"): "gpu",
    ("sdxl.md", "python benchmarks/gpu_sdxl.py --quick --out /tmp/gpu_sdxl"): "benchmark",
    (
        "study.md",
        "monkey-study build runs/demo --methods monkey,ip_adapter_1.0,masactrl --questions 20 --participants 30 --out study/",
    ): "after",
    ("study.md", "monkey-study tally study/ responses/ --out study/tally"): "after",
    (
        "sweeps.md",
        "monkey-bench experiment=ablate_mask_steps model=lcm_dreamshaper eval=default plan.limit.subjects=null plan.limit.prompts=null",
    ): "weights",
    ("sweeps.md", "monkey-report runs/ablate_token"): "after",
    ("sweeps.md", "monkey-report runs/ablate_token --sweep method.token"): "after",
    ("sweeps.md", "monkey-report runs/grid --sweep method.token --sweep method.threshold"): "after",
}


def classification(command: DocCommand) -> str | None:
    """Why `command` is kept true: "tiny", a NOT_RUN reason, "marker: <needs>", or None (unclassified)."""
    if command.marker:
        return f"marker: {command.marker}"
    key = (command.page, command.text)
    if key in TINY:
        return "tiny"
    return NOT_RUN.get(key)
