"""Width and height kept apart: every native method and the external runner make a non-square image
(height 64, width 96: PIL size (96, 64)) through the runner, one item each, the fewest steps; an
external driver that answers with swapped sides fails its item instead of being stored.

Planted bugs (issue 25, point 14), one at a time, each caught by test_non_square_image_is_width_by_height:
- IP-Adapter: `width, height = sizes.pop()` (baselines/ip_adapter.py)
- MONKEY: the pipeline call's height and width swapped (src/monkey/adapter/sampler.py call_kwargs); caught
  only with the pass-1 and pass-2-prefix caches off, which served the unedited result otherwise
- MasaCtrl: `self.invert(source, width, height)` (baselines/masactrl.py)
- RectifID: the initial noise drawn as [.., width // 8, height // 8] (baselines/rectifid/method.py)
- TF-TI2I: `width, height = requests[0].height, requests[0].width` (baselines/tf_ti2i/method.py)
- external: the job line's "height" set to the request's width (baselines/external/jobs.py)
and by test_an_external_image_of_the_wrong_size_fails_its_item: the size check in read_result removed.
"""

import json
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import compose_config
from PIL import Image

from monkey.runner import generate_stage
from monkey.store import RunStore

SIZE = ("generation.height=64", "generation.width=96", "plan.limit.subjects=1", "plan.limit.prompts=1")
NO_CACHE = ("method.share.pass1=false", "method.share.pass2_prefix=false")  # a cached pass would hide a planted swap
FEWEST_STEPS = {
    "ip_adapter_1.0": ("method.num_inference_steps=1",),
    "monkey": ("method.final_steps=3", "method.ip_steps=[1]", "method.mask_steps=[1]", *NO_CACHE),
    "masactrl": ("method.num_inference_steps=1", "method.start_step=0"),
    "rectifid": ("method.iterations=0",),  # the plain 4-step sampler: the size path without the guidance
    "tf_ti2i": ("method.num_inference_steps=1",),
    "external": (),
}
# A driver honouring the external contract with PIL (the harness's own Python will do): a solid image
# of the job's size, or of its swapped size when told to.
DRIVER = textwrap.dedent(
    """
    import json, os, sys
    from PIL import Image
    jobs, out = sys.argv[sys.argv.index("--jobs") + 1], sys.argv[sys.argv.index("--out") + 1]
    swap = "--swap" in sys.argv
    print(json.dumps({"event": "ready"}), flush=True)
    for line in open(jobs):
        job = json.loads(line)
        size = (job["height"], job["width"]) if swap else (job["width"], job["height"])
        Image.new("RGB", size, (30, 60, 90)).save(os.path.join(out, job["id"] + ".png"))
        tmp = os.path.join(out, job["id"] + ".json.tmp")
        with open(tmp, "w") as handle:
            json.dump({"status": "ok", "job": job}, handle)
        os.replace(tmp, os.path.join(out, job["id"] + ".json"))
        print(json.dumps({"event": "item", "id": job["id"]}), flush=True)
    print(json.dumps({"event": "done"}), flush=True)
    """
)


def external(tmp_path: Path, *flags: str) -> tuple[str, ...]:
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    command = ",".join([sys.executable, str(driver), *flags])
    return (f"method.environment.command=[{command}]",)


@pytest.mark.parametrize("name", list(FEWEST_STEPS))
def test_non_square_image_is_width_by_height(name, tmp_path):
    extra = external(tmp_path) if name == "external" else ()
    cfg = compose_config(f"method={name}", *SIZE, *FEWEST_STEPS[name], *extra)
    summary = generate_stage(cfg, tmp_path / "run")
    assert (summary.generated, summary.failed) == (1, 0)
    [row] = RunStore(tmp_path / "run").rows()
    assert (row["height"], row["width"]) == (64, 96)
    with Image.open(tmp_path / "run" / row["image"]) as image:
        assert image.size == (96, 64)


def test_an_external_image_of_the_wrong_size_fails_its_item(tmp_path):
    cfg = compose_config("method=external", *SIZE, *external(tmp_path, "--swap"))
    summary = generate_stage(cfg, tmp_path / "run")
    assert (summary.generated, summary.failed) == (0, 1)
    [row] = RunStore(tmp_path / "run").rows()
    assert row["status"] == "failed" and row["image"] is None
    assert "image is 64x96 px (width x height); the job asked 96x64" in row["error"]
    assert json.loads(json.dumps(row))["height"] == 64
