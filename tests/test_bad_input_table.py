"""Bad input, as a table: (input, exit code, the words its one error line must contain), by kind.

Every case runs the console entry's `main(argv)` in this process (tests/bad_input_cases.py) and must
end with exit 2, exactly one error line holding the words, no traceback, and no run output written
(configs, manifests, images, scores); a single run refused by monkey-bench leaves nothing under the
run root at all (a composition error stops before Hydra makes a folder; a refused job removes Hydra's).
The files/imports/study inputs live in their own table in the same style.

Planted bugs this table caught (each reverted):
- `composition_message` without its MissingConfigException branch: the 5 `<group>=nope` cases lost "allowed: ..."
- `main` without HYDRA_FULL_ERROR: Hydra printed its own lines and exited 1 (6 `nokey` composition cases)
- `setup_error` without the ValueError -> __cause__ step: the shard-log-is-a-folder case raised (paths)
- SCALE_RANGE's low bound dropped (`value <= high` only): method.scale=-5 ran and exited 0 (config values)
- `short_name` returning names unshortened: the 3 long-name cases ended in mkdir's ENAMETOOLONG line (names)
- `discard_refused_run` never called (cli.app): 3 refused runs left runs/demo/<run>/.hydra and the shard log
- its guard dropped: the refused run deleted a folder holding a manifest (own_hydra_files test)
"""

import pytest
from bad_input_cases import Case, check_refusal, run_entry

RUN = ("hydra.mode=RUN", "plan.limit.subjects=1", "plan.limit.prompts=1")
ALL_SUBJECTS = (
    "backpack,backpack_dog,bear_plushie,berry_bowl,can,candle,cat,cat2,clock,colorful_sneaker,dog,dog2,dog3,"
    "dog5,dog6,dog7,dog8,duck_toy,fancy_boot,grey_sloth_plushie,monster_toy,pink_sunglasses,poop_emoji,"
    "rc_car,red_cartoon,robot_toy,shiny_sneaker,teapot,vase,wolf_plushie"
)
ANY_METHOD = ("allowed", "ip_adapter_1.0", "monkey", "text_only")
# the line of a run that got past Hydra's folder (a failed mkdir names the folder, which holds plan.seeds=0)
SEEDS_REFUSED = ("plan.seeds=0 is not allowed",)


def bench(kind: str, *argv: str, words: tuple[str, ...], run: bool = True) -> Case:
    return Case(kind, (*RUN, *argv) if run else tuple(argv), words)


CONFIG_VALUES = [
    bench("config values", "method.num_inference_steps=0", words=("method.num_inference_steps=0", ">= 1")),
    bench("config values", "method.num_inference_steps=-3", words=("method.num_inference_steps=-3",)),
    bench("config values", "method.num_inference_steps=2.5", words=("method.num_inference_steps=2.5", "whole")),
    bench("config values", "generation.height=7", "generation.width=64", words=("generation.height=7", ">= 8")),
    bench(
        "config values", "generation.height=64", "generation.width=100", words=("generation.width=100", "multiple of 8")
    ),
    bench(
        "config values",
        "generation.height=abc",
        "generation.width=64",
        words=("generation.height='abc'", "whole number"),
    ),
    bench(
        "config values", "generation.height=64", words=("generation.height=64 and generation.width=None", "set both")
    ),
    bench("config values", "generation.batch_size=0", words=("generation.batch_size=0",)),
    bench("config values", "+method.batch_size=-1", words=("method.batch_size=-1",)),
    bench("config values", "plan.seeds=0", words=("plan.seeds=0", ">= 1")),
    bench("config values", "plan.seeds=true", words=("plan.seeds=True", "whole number")),
    bench("config values", "plan.base_seed=abc", words=("plan.base_seed='abc'", "whole number")),
    bench("config values", "plan.base_seed=1.5", words=("plan.base_seed=1.5", "whole number")),
    bench("config values", "plan.limit.prompts=0", words=("plan.limit.prompts=0",)),
    bench("config values", "plan.limit.subjects=0", words=("plan.limit.subjects=0", "a list of names")),
    bench("config values", "plan.limit.subjects=[]", words=("plan.limit.subjects=[]", "a list of names")),
    bench("config values", "plan.limit.subjects=[1,2]", words=("plan.limit.subjects=[1, 2]",)),
    bench("config values", "shard=3", words=("shard=3", "num_shards=1")),
    bench("config values", "shard=-1", words=("shard=-1",)),
    bench("config values", "num_shards=0", words=("num_shards=0",)),
    bench("config values", "shard=x", words=("shard='x'", "auto")),
    bench("config values", "runtime.device=tpu", words=("runtime.device='tpu'", "allowed")),
    bench("config values", "runtime.compile=fast", words=("runtime.compile='fast'", "reduce-overhead")),
    bench("config values", "runtime.channels_last=maybe", words=("runtime.channels_last='maybe'", "true or false")),
    bench("config values", "runtime.sdpa_backend=warp", words=("runtime.sdpa_backend='warp'", "flash")),
    bench("config values", "runtime.cuda_graphs=true", words=("cuda_graphs",)),
    bench("config values", "eval.device=tpu", words=("eval.device='tpu'",)),
    bench("config values", "run.stages=[nope]", words=("run.stages", "'nope'", "generate")),
    # point 11: an IP-Adapter scale outside [0, 2]
    bench("config values", "method.scale=-5", words=("method.scale=-5", "[0, 2]")),
    bench("config values", "method.scale=2.5", words=("method.scale=2.5", "[0, 2]")),
    bench("config values", "method.scale=nan", words=("method.scale=nan", "[0, 2]")),
    bench("config values", "method.scale=inf", words=("method.scale=inf",)),
    bench("config values", "method.scale=strong", words=("method.scale='strong'", "number")),
    bench("config values", "method.scale=-5", "method.scale=-5", words=("method.scale=-5",)),
    bench("config values", "method=text_only", "method.scale=-0.1", words=("method.scale=-0.1",)),
    bench("config values", "method=monkey", "method.ip_scale=-1", words=("method.ip_scale=-1", "[0, 2]")),
    bench("config values", "method=monkey", "method.initial_scale=3", words=("method.initial_scale=3",)),
]

COMPOSITION = [
    bench("composition", "method=nope", words=("method=nope", "config group 'method'", *ANY_METHOD)),
    bench("composition", "model=nope", words=("model=nope", "allowed", "tiny", "sd15")),
    bench("composition", "dataset=nope", words=("dataset=nope", "allowed", "dreambooth", "folder")),
    bench("composition", "prompts=nope", words=("prompts=nope", "locations")),
    bench("composition", "eval=nope", words=("eval=nope", "tiny")),
    bench("composition", "logger=nope", words=("logger=nope", "wandb")),
    bench("composition", "experiment=nope", words=("experiment=nope", "demo")),
    bench("composition", "hydra/launcher=nope", words=("hydra/launcher=nope",)),
    bench("composition", "method=[a,b]", words=("method=",)),
    bench("composition", "method.nokey=3", words=("method.nokey", "+method.nokey=")),
    bench("composition", "model.nokey=1", words=("model.nokey",)),
    bench("composition", "plan.nokey=1", words=("plan.nokey",)),
    bench("composition", "~plan.nokey", words=("plan.nokey",)),
    bench("composition", "+plan.seeds=2", words=("plan.seeds",)),
    bench("composition", "plan.base_seed=[", words=("plan.base_seed=[", "key=value")),
    bench("composition", "plan.seeds=abc=", words=("plan.seeds=abc=",)),
    bench("composition", "nokey", words=("'nokey'", "key=value")),
    bench("composition", "method.scale=1,2", words=("method.scale=1,2",)),
    bench("composition", "run.name=${nope}", words=("nope",)),
    bench("composition", "run.name=é", words=("'run.name=é'", "key=value")),  # unquoted non-ASCII
    # the demo's own mode is a multirun: the same errors there
    bench("composition", "method=nope", words=("method=nope", *ANY_METHOD), run=False),
    bench("composition", "hydra.mode=MULTIRUN", "method=nope,ip_adapter_1.0", words=("method=nope",), run=False),
    bench("composition", "method.nokey=3", words=("method.nokey",), run=False),
]

NAMES = [
    bench("names", "run.name=..", words=("run.name='..'", "allowed")),
    bench("names", "run.name=''", words=("run.name=''",)),
    bench("names", "method.name=a/b", words=("method.name='a/b'", "allowed")),
    bench("names", "dataset.name=/abs", words=("dataset.name='/abs'",)),
    bench("names", "eval.name=..", words=("eval.name='..'",)),
    bench("names", f"method.name={'m' * 150}", words=("method.name=", "too long", "at most 100 bytes")),
    bench("names", f"dataset.name={'d' * 101}", words=("dataset.name=", "too long")),
    # point 6: long folder names are shortened, so the run gets as far as the bad value
    bench("names", f"run.name={'r' * 300}", "plan.seeds=0", words=SEEDS_REFUSED),
    bench("names", f"run.name='{'é' * 200}'", "plan.seeds=0", words=SEEDS_REFUSED),  # 400 bytes
    bench("names", f"plan.limit.subjects=[{ALL_SUBJECTS}]", "plan.seeds=0", words=SEEDS_REFUSED),
    bench("names", f"+method.note={'k' * 400}", "plan.seeds=0", words=SEEDS_REFUSED),
]

PATHS = [
    bench("paths", "run.root=/sys/monkey-bench-test", words=("cannot write", "/sys/monkey-bench-test", "run.root")),
    bench("paths", "run.root=/proc/self/status/x", words=("cannot write", "not a folder")),
    bench("paths", "dataset.root=/no/such/folder", words=("dataset.root='/no/such/folder'", "does not exist")),
]

OTHER_ENTRIES = [
    Case("composition", ("rank", "model=nope"), ("model=nope", "allowed", "tiny"), entry="monkey-attention"),
    Case("composition", ("method=nope",), ("method=nope", "allowed"), entry="monkey-attention"),
    Case("composition", ("nokey",), ("'nokey'", "key=value"), entry="monkey-attention"),
    Case("composition", ("rank", "masks.nokey=1"), ("masks.nokey",), entry="monkey-attention"),
    Case("composition", ("jobs", "--out", "/tmp/never.csv", "method=nope"), ("method=nope",), entry="monkey-import"),
    Case("composition", ("jobs", "--out", "/tmp/never.csv", "plan.x=1"), ("plan.x",), entry="monkey-import"),
]

TABLE = [*CONFIG_VALUES, *COMPOSITION, *NAMES, *PATHS, *OTHER_ENTRIES]


def case_id(case: Case) -> str:
    text = " ".join(a for a in case.argv if a not in RUN)
    return f"{case.entry}:{text[:70]}" + ("..." if len(text) > 70 else "")


@pytest.mark.parametrize("case", TABLE, ids=[case_id(c) for c in TABLE])
def test_bad_input_is_one_line_and_exit_2(case, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a Hydra default (runs/ below the working folder) stays in tmp_path
    root = tmp_path / "runs"
    argv = case.argv
    if case.entry == "monkey-bench":
        argv = (f"run.root={root}", *argv)  # first: a case's own run.root wins (the last of a key does)
    check_refusal(run_entry(case.entry, argv), case, root)
    if "hydra.mode=RUN" in case.argv and case.entry == "monkey-bench":
        # refused before Hydra made a folder, or its folder removed (a multirun's sweeper keeps its own)
        assert not root.exists() or not list(root.rglob("*")), sorted(root.rglob("*"))


def test_monkey_report_composition_errors_are_one_line(tmp_path):
    folder = tmp_path / "exp"
    folder.mkdir()
    for argv, words in (
        ((str(folder), "model=nope"), ("model=nope", "allowed")),
        ((str(folder), "eval.nokey=1"), ("eval.nokey",)),
        ((str(folder), "--eval", "tiny", "logger=nope"), ("logger=nope", "wandb")),
    ):
        check_refusal(run_entry("monkey-report", argv), Case("composition", argv, words, entry="monkey-report"))
    assert sorted(p.name for p in folder.iterdir()) == []


def test_a_run_folder_whose_shard_log_cannot_be_opened_is_one_line(tmp_path):
    """Hydra's logging.config wraps the OSError in `ValueError: Unable to configure handler 'file'`
    (a run folder on a read-only mount fails the same way; a folder in the log's place does it as root)."""
    job = tmp_path / "job"
    (job / "shard-0-of-1.log").mkdir(parents=True)
    words = ("cannot write", str(job / "shard-0-of-1.log"), "a folder is in the way")
    case = Case("paths", ("hydra.mode=RUN", f"hydra.run.dir={job}", "plan.seeds=1"), words)
    check_refusal(run_entry("monkey-bench", case.argv), case, job)
    assert sorted(p.name for p in job.iterdir()) == ["shard-0-of-1.log"]  # not even .hydra/ was written


def test_a_refused_run_removes_only_its_own_hydra_files(tmp_path):
    """A folder that holds anything else (results, another shard's files) keeps all of it."""
    job = tmp_path / "job"
    (job / "manifest").mkdir(parents=True)
    (job / "manifest" / "m--shard-000-of-001.jsonl").write_text("")
    case = Case("paths", ("hydra.mode=RUN", f"hydra.run.dir={job}", "plan.seeds=0"), SEEDS_REFUSED)
    check_refusal(run_entry("monkey-bench", case.argv), case)
    assert (job / "manifest" / "m--shard-000-of-001.jsonl").is_file()
    assert (job / ".hydra" / "shard-0-of-1" / "config.yaml").is_file() and (job / "shard-0-of-1.log").is_file()
