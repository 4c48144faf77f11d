"""TF-TI2I on the tiny SD3 twin against independent references: diffusers' stock
StableDiffusion3Pipeline and JointAttnProcessor2_0, and attention written out by hand per head."""

import numpy as np
import pytest
import torch
from diffusers import SD3Transformer2DModel, StableDiffusion3Pipeline
from diffusers.models.attention_processor import JointAttnProcessor2_0
from helpers import QUICK_SIZE
from monkey.baselines.tf_ti2i.method import TFTI2IMethod, reference_noise_seed
from monkey.baselines.tf_ti2i.processor import (
    ContextualSharingProcessor,
    SharingControl,
    SharingPlan,
    contextual_sharing,
)

from monkey.datasets.dreambooth import load_dreambooth
from monkey.errors import ConfigError
from monkey.methods.base import GenerationRequest
from monkey.methods.presets import method_spec, model_profile_config
from monkey.models.profiles import profile_from_config, resolve_runtime
from monkey.models.tiny import materialize_tiny
from monkey.models.tiny_sd3 import TRANSFORMER
from monkey.plan import build_plan
from monkey.prompts import load_prompt_set
from monkey.store import RunStore

SIZE, STEPS, GUIDANCE = 64, 3, 3.5


@pytest.fixture(scope="module")
def runtime():
    return resolve_runtime(profile_from_config(model_profile_config("tiny_sd3")), "cpu", "float32")


@pytest.fixture(scope="module")
def items():
    prompts = load_prompt_set("locations", "{subject_word} {location}")
    return build_plan(load_dreambooth(), prompts, limit_subjects=2, limit_prompts=2)


@pytest.fixture(scope="module")
def stock_pipe():
    """A separately loaded stock SD3 pipeline with untouched processors."""
    pipe = StableDiffusion3Pipeline.from_pretrained(materialize_tiny("sd3").pipeline)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def tf_ti2i(runtime, **knobs) -> TFTI2IMethod:
    return TFTI2IMethod("tf_ti2i", runtime, **{"num_inference_steps": STEPS, "guidance_scale": GUIDANCE, **knobs})


def requests_for(items, size=(SIZE, SIZE), seed_shift=0) -> list[GenerationRequest]:
    return [GenerationRequest(item, item.prompt, item.seed + seed_shift, *size) for item in items]


def pixels(result) -> np.ndarray:
    return np.asarray(result.image, dtype=np.int16)


# ---- the whole method against the stock pipeline --------------------------------------------------
def test_without_sharing_the_image_is_the_stock_pipelines_bit_for_bit(runtime, items, stock_pipe):
    request = requests_for(items[:1])[0]
    plain = tf_ti2i(runtime, sharing=False).generate([request])[0]
    stock = stock_pipe(
        request.prompt,
        height=SIZE,
        width=SIZE,
        num_inference_steps=STEPS,
        guidance_scale=GUIDANCE,
        generator=torch.Generator("cpu").manual_seed(request.seed),
    ).images[0]
    assert np.array_equal(np.asarray(stock), np.asarray(plain.image))
    shared = tf_ti2i(runtime).generate([request])[0]
    assert np.abs(pixels(shared) - pixels(plain)).mean() > 0.1  # the reference changes the main image
    assert shared.info["sharing"] and shared.info["reference_prompt"] == request.prompt


def test_one_seed_is_byte_identical_and_two_seeds_differ(runtime, items):
    method = tf_ti2i(runtime)
    first = method.generate(requests_for(items[:2]))
    again = tf_ti2i(runtime).generate(requests_for(items[:2]))
    other = method.generate(requests_for(items[:2], seed_shift=1))
    assert [r.image.tobytes() for r in first] == [r.image.tobytes() for r in again]
    assert all(np.abs(pixels(a) - pixels(b)).mean() > 0.1 for a, b in zip(first, other, strict=True))
    assert first[0].info["reference_noise_seed"] == reference_noise_seed(items[0].seed) != items[0].seed


def test_batch_of_four_gives_each_item_its_image_alone(runtime):
    """Issue 30 point 2: item k generated alone equals item k inside a batch of 4 (two subjects, four
    prompts and seeds). Every row of the batch is its own computation (main k reads only reference k; the
    noise of each branch comes from the item's own generator; the transformer, the scheduler and the VAE
    mix no rows), so only the rounding of batched kernels differs: measured 2.6e-6 on final latents of
    magnitude 5 (5e-7 relative) and at most 1 grey level in 1 pixel value of 12288. Bound: 1e-5 of the
    largest latent magnitude, 1 grey level, a mean pixel difference under 0.01.
    Planted, each caught: main k reading reference B-1-k; every main noise from the first item's seed;
    the reference noise generators reversed."""
    import monkey.baselines.tf_ti2i.method as method_module

    prompts = load_prompt_set("locations", "{subject_word} {location}")
    items = build_plan(load_dreambooth(), prompts, limit_subjects=2, limit_prompts=2)
    requests = requests_for(items)
    assert len({r.item.source.source_id for r in requests}) == 2 and len({r.seed for r in requests}) == 4
    method = tf_ti2i(runtime)
    latents = []
    decode = method_module.decode

    def spy(pipe, final):
        latents.append(final.clone())
        return decode(pipe, final)

    method_module.decode = spy
    try:
        alone = [method.generate([request])[0] for request in requests]
        batch = method.generate(requests)
    finally:
        method_module.decode = decode
    together = latents.pop()
    difference = (torch.cat(latents) - together).abs().max().item()
    assert difference <= 1e-5 * together.abs().max().item(), difference
    for single, inside in zip(alone, batch, strict=True):
        gap = np.abs(pixels(single) - pixels(inside))
        assert gap.max() <= 1 and gap.mean() < 0.01
        assert single.info == inside.info
    assert all(np.abs(pixels(batch[0]) - pixels(other)).mean() > 1 for other in batch[1:])  # four images


# ---- one transformer call: which rows change --------------------------------------------------------
@torch.no_grad()
def test_only_the_conditional_main_row_changes_in_a_transformer_call(runtime):
    """Batch [uncond main, uncond ref, cond main, cond ref]: the stock transformer and the sharing one
    agree on every row but the conditional main one."""
    transformer = tf_ti2i(runtime).pipe.transformer
    generator = torch.Generator().manual_seed(0)
    latents = torch.randn(4, 16, 8, 8, generator=generator)
    text = torch.randn(4, 20, TRANSFORMER["joint_attention_dim"], generator=generator)
    pooled = torch.randn(4, TRANSFORMER["pooled_projection_dim"], generator=generator)
    t = torch.full((4,), 500.0)
    stock = transformer(latents, text, pooled, t, return_dict=False)[0]
    control = SharingControl(plan=SharingPlan(pairs=((2, (3,)),)))
    with contextual_sharing(transformer, control):
        shared = transformer(latents, text, pooled, t, return_dict=False)[0]
    assert control.calls == len(transformer.transformer_blocks)
    assert torch.equal(shared[[0, 1, 3]], stock[[0, 1, 3]])
    assert (shared[2] - stock[2]).abs().mean() > 1e-3 * stock[2].abs().mean()
    assert all(type(b.attn.processor) is JointAttnProcessor2_0 for b in transformer.transformer_blocks)  # restored


def joint_inputs(attn, batch: int, image_tokens: int, text_tokens: int, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    width = attn.to_q.in_features
    return torch.randn(batch, image_tokens, width, generator=generator), torch.randn(
        batch, text_tokens, width, generator=generator
    )


def hand_attention(attn, image, text, row: int, extra_rows=(), mask_fn=None):
    """Joint attention of one row written out per head: queries [image; text] of `row`, keys and values
    [image; text] of `row` then the text of each of `extra_rows`; `mask_fn(probabilities per head)`
    returns an additive mask. Returns (image output, text output) before the output projections."""
    heads = attn.heads

    def per_head(tensor, norm=None):  # [L, C] -> [H, L, d]
        out = tensor.view(tensor.shape[0], heads, -1).transpose(0, 1)
        return norm(out) if norm is not None else out

    queries = [per_head(attn.to_q(image[row]), attn.norm_q), per_head(attn.add_q_proj(text[row]), attn.norm_added_q)]
    q = torch.cat(queries, 1)
    keys = [per_head(attn.to_k(image[row]), attn.norm_k), per_head(attn.add_k_proj(text[row]), attn.norm_added_k)]
    values = [per_head(attn.to_v(image[row])), per_head(attn.add_v_proj(text[row]))]
    for extra in extra_rows:
        keys.append(per_head(attn.add_k_proj(text[extra]), attn.norm_added_k))
        values.append(per_head(attn.add_v_proj(text[extra])))
    k, v = torch.cat(keys, 1), torch.cat(values, 1)
    logits = torch.stack([q[h] @ k[h].T / q.shape[-1] ** 0.5 for h in range(heads)])  # [H, Lq, Lk]
    if mask_fn is not None:
        logits = logits + mask_fn(torch.softmax(logits, -1))
    out = torch.stack([torch.softmax(logits[h], -1) @ v[h] for h in range(heads)])  # [H, Lq, d]
    out = out.transpose(0, 1).reshape(out.shape[1], -1)
    return out[: image.shape[1]], out[image.shape[1] :]


def projected(attn, image_out, text_out):
    image_out = attn.to_out[0](image_out)
    return image_out, (None if attn.context_pre_only else attn.to_add_out(text_out))


def no_qk_norm_transformer() -> SD3Transformer2DModel:
    torch.manual_seed(0)
    return SD3Transformer2DModel(**{**TRANSFORMER, "qk_norm": None, "num_layers": 2})


@pytest.mark.parametrize("qk_norm", [True, False])
@torch.no_grad()
def test_processor_matches_stock_and_hand_written_sharing_in_every_block(runtime, qk_norm):
    """Rows [uncond main, uncond ref, cond main, cond ref]: every row but the conditional main one is
    the stock processor's output; that one is attention over [main image; main text ++ ref text].
    Covers `context_pre_only` (the last block) and blocks with and without query-key norm."""
    transformer = tf_ti2i(runtime).pipe.transformer if qk_norm else no_qk_norm_transformer()
    processor = ContextualSharingProcessor(SharingControl(plan=SharingPlan(pairs=((2, (3,)),))))
    for index, block in enumerate(transformer.transformer_blocks):
        attn = block.attn
        assert (attn.norm_q is not None) == qk_norm
        image, text = joint_inputs(attn, 4, 16, 7, seed=index)
        stock_image, stock_text = JointAttnProcessor2_0()(attn, image, text)
        image_out, text_out = processor(attn, image, text)
        assert torch.allclose(image_out[[0, 1, 3]], stock_image[[0, 1, 3]], atol=1e-6, rtol=1e-5)
        if not attn.context_pre_only:
            assert torch.allclose(text_out[[0, 1, 3]], stock_text[[0, 1, 3]], atol=1e-6, rtol=1e-5)
        hand_image, hand_text = projected(attn, *hand_attention(attn, image, text, row=2, extra_rows=(3,)))
        assert torch.allclose(image_out[2], hand_image, atol=1e-5, rtol=1e-4)
        if hand_text is not None:
            assert torch.allclose(text_out[2], hand_text, atol=1e-5, rtol=1e-4)
        assert (image_out[2] - stock_image[2]).abs().max() > 1e-3


# ---- winner-takes-all and reference contextual masking, hand-written ---------------------------------
def hand_wta_mask(image_tokens: int, text_tokens: int, references: int):
    """Each image query keeps only the reference text block with the largest head-mean attention mass."""

    def mask_fn(probabilities):  # [H, Lq, Lk]
        mean = probabilities.mean(0)
        start = image_tokens + text_tokens
        blocks = [slice(start + r * text_tokens, start + (r + 1) * text_tokens) for r in range(references)]
        masses = [mean[:image_tokens, block].sum(-1) for block in blocks]
        winner = torch.stack(masses, -1).argmax(-1)
        mask = torch.zeros_like(mean)
        for i in range(image_tokens):
            for r in range(references):
                if r != winner[i]:
                    mask[i, start + r * text_tokens : start + (r + 1) * text_tokens] = float("-inf")
        return mask

    return mask_fn


def hand_rcm_mask(image_tokens: int, threshold: float):
    def mask_fn(probabilities):
        mean = probabilities.mean(0)
        saliency = mean[:image_tokens, image_tokens:].mean(-1)
        keep = (saliency - saliency.min()) / (saliency.max() - saliency.min()) >= threshold
        mask = torch.zeros_like(mean)
        for j in range(image_tokens):
            if not keep[j]:
                mask[image_tokens:, j] = float("-inf")
        return mask

    return mask_fn


@pytest.mark.parametrize("image_tokens,text_tokens", [(16, 7), (24, 12)])
@torch.no_grad()
def test_winner_takes_all_and_reference_masking_match_hand_written_masks(runtime, image_tokens, text_tokens):
    """Two image sizes and two text lengths; a main row with two references (WTA chooses between
    them) and masked references (RCM). Rows: [main, ref a, ref b]."""
    attn = tf_ti2i(runtime).pipe.transformer.transformer_blocks[0].attn
    image, text = joint_inputs(attn, 3, image_tokens, text_tokens, seed=image_tokens)
    plan = SharingPlan(pairs=((0, (1, 2)),), masked_references=(1, 2), winner_takes_all=True, rcm_threshold=0.4)
    image_out, text_out = ContextualSharingProcessor(SharingControl(plan=plan))(attn, image, text)
    wta = hand_attention(attn, image, text, 0, (1, 2), hand_wta_mask(image_tokens, text_tokens, 2))
    hand_image, _ = projected(attn, *wta)
    assert torch.allclose(image_out[0], hand_image, atol=1e-5, rtol=1e-4)
    no_wta = projected(attn, *hand_attention(attn, image, text, 0, (1, 2)))[0]
    assert (hand_image - no_wta).abs().max() > 1e-4  # the masks bite on these inputs
    for row in (1, 2):
        rcm = hand_attention(attn, image, text, row, (), hand_rcm_mask(image_tokens, 0.4))
        rcm_image, rcm_text = projected(attn, *rcm)
        assert torch.allclose(image_out[row], rcm_image, atol=1e-5, rtol=1e-4)
        assert torch.allclose(text_out[row], rcm_text, atol=1e-5, rtol=1e-4)
        plain_text = projected(attn, *hand_attention(attn, image, text, row))[1]
        assert (rcm_text - plain_text).abs().max() > 1e-4


@pytest.mark.parametrize("size,max_sequence_length", [((64, 64), 16), ((96, 64), 40)])
def test_method_runs_wta_and_rcm_at_two_sizes_and_text_lengths(runtime, items, size, max_sequence_length):
    knobs = {"num_inference_steps": 2, "max_sequence_length": max_sequence_length}
    masked = tf_ti2i(runtime, winner_takes_all=True, reference_masking=True, **knobs)
    on = masked.generate(requests_for(items[:1], size))
    off = tf_ti2i(runtime, **knobs).generate(requests_for(items[:1], size))
    assert on[0].image.size == (size[1], size[0])
    assert np.abs(pixels(on[0]) - pixels(off[0])).mean() > 0.01  # RCM changes the reference's text tokens


# ---- configuration ------------------------------------------------------------------------------------
def test_dropped_t5_loads_without_text_encoder_3(items):
    profile = profile_from_config({**model_profile_config("tiny_sd3"), "drop_text_encoder_3": True})
    method = tf_ti2i(resolve_runtime(profile, "cpu", "float32"), num_inference_steps=1)
    assert method.pipe.text_encoder_3 is None and method.pipe.tokenizer_3 is None
    assert method.generate(requests_for(items[:1]))[0].info["text_encoder_3"] == "dropped"


def test_bad_knobs_and_models_name_the_key(runtime, tiny_runtime):
    with pytest.raises(ConfigError, match="rcm_threshold"):
        tf_ti2i(runtime, rcm_threshold=1.5)
    with pytest.raises(ConfigError, match="reference_prompt"):
        tf_ti2i(runtime, reference_prompt="{subject}")
    with pytest.raises(ConfigError, match="not a Stable Diffusion 3 pipeline"):
        tf_ti2i(tiny_runtime)
    bad = profile_from_config({**model_profile_config("tiny"), "drop_text_encoder_3": True})
    with pytest.raises(ConfigError, match="drop_text_encoder_3"):
        tf_ti2i(resolve_runtime(bad, "cpu", "float32"))


def test_presets_fair_and_paper(make_config):
    fair = method_spec(make_config("method=tf_ti2i"))
    assert (fair.model["name"], fair.prompt_form, fair.height, fair.seeded) == ("tiny_sd3", "plan", 128, True)
    assert fair.method["sharing"] and not fair.method["winner_takes_all"] and not fair.method["reference_masking"]
    paper = method_spec(make_config("method=tf_ti2i", "preset=paper"))
    assert (paper.prompt_form, paper.height, paper.width, paper.seeded) == ("subject_location", 256, 256, True)
    assert (paper.method["num_inference_steps"], paper.method["guidance_scale"]) == (28, 3.5)
    assert paper.method["reference_prompt"] == "{prompt}" and paper.clip_t_prompt_form == "location"
    real = method_spec(make_config("method=tf_ti2i", "model=lcm_dreamshaper"))
    assert real.model["pretrained"] == "stabilityai/stable-diffusion-3.5-large"
    assert real.model["pipeline_class"] == "StableDiffusion3Pipeline" and real.method["num_inference_steps"] == 28
    assert dict(real.model["dtype"])["cuda"] == "bfloat16"


@torch.no_grad()
def test_loop_feeds_main_and_noised_reference_rows_where_the_plan_says(runtime, items, stock_pipe):
    """Every transformer call, recomputed independently: the conditional main rows carry the items'
    prompt embeddings (the stock encoder) and at step 0 the seed's noise; the reference rows carry the
    subject image's VAE mean, forward-noised to the step's t with the item's reference-noise generator."""
    from PIL import Image, ImageOps

    method = tf_ti2i(runtime)
    requests = requests_for(items[1:3])  # two items, two subjects
    calls = []
    control_rows = []

    def record(module, args, kwargs):
        calls.append({k: kwargs[k].clone() for k in ("hidden_states", "encoder_hidden_states", "timestep")})

    original = ContextualSharingProcessor.__call__

    def spy(self, attn, *args, **kwargs):
        control_rows.append(self.control.plan)
        return original(self, attn, *args, **kwargs)

    handle = method.pipe.transformer.register_forward_pre_hook(record, with_kwargs=True)
    ContextualSharingProcessor.__call__ = spy
    try:
        method.generate(requests)
    finally:
        handle.remove()
        ContextualSharingProcessor.__call__ = original
    assert len(calls) == STEPS and len(control_rows) == STEPS * len(method.pipe.transformer.transformer_blocks)
    plan = control_rows[0]
    prompts = [r.prompt for r in requests]
    cond, _, _, _ = stock_pipe.encode_prompt(prompts, None, None, do_classifier_free_guidance=False)
    noise = torch.cat([torch.randn(1, 16, 8, 8, generator=torch.Generator().manual_seed(r.seed)) for r in requests])
    clean = []
    for r in requests:
        image = ImageOps.fit(r.item.source.load_image(), (SIZE, SIZE), Image.Resampling.LANCZOS)
        pixels_in = stock_pipe.image_processor.preprocess(image, height=SIZE, width=SIZE)
        mean = stock_pipe.vae.encode(pixels_in).latent_dist.mean
        clean.append((mean - stock_pipe.vae.config.shift_factor) * stock_pipe.vae.config.scaling_factor)
    generators = [torch.Generator().manual_seed(reference_noise_seed(r.seed)) for r in requests]
    stock_pipe.scheduler.set_timesteps(STEPS)
    for step, call in enumerate(calls):
        t = call["timestep"][0]
        assert torch.equal(t, stock_pipe.scheduler.timesteps[step])
        sigma = stock_pipe.scheduler.sigmas[step]
        for k, (main, (ref,)) in enumerate(plan.pairs):
            assert torch.allclose(call["encoder_hidden_states"][main], cond[k], atol=1e-6)
            if step == 0:
                assert torch.equal(call["hidden_states"][main], noise[k])
            expected = sigma * torch.randn(clean[k].shape, generator=generators[k]) + (1 - sigma) * clean[k]
            assert torch.allclose(call["hidden_states"][ref], expected[0], atol=1e-5)


def test_multirun_beside_monkey_fills_the_papers_tf_ti2i_row(tmp_path):
    """The demo's shape with the two methods: each on its own base model, one report, TF-TI2I's row
    beside the paper's numbers (results/paper/table1.csv)."""
    import pandas as pd
    from test_cli import run_cli

    result = run_cli(tmp_path, "method=monkey,tf_ti2i", "plan.limit.subjects=1", "plan.limit.prompts=2", *QUICK_SIZE)
    assert result.returncode == 0, result.stderr[-3000:]
    experiment = tmp_path / "runs" / "demo"
    rows = [row for folder in experiment.glob("tf_ti2i*") for row in RunStore(folder).rows()]
    assert len(rows) == 2 and all(row["info"]["sharing"] and row["height"] == 64 for row in rows)
    assert {row["prompt"] for row in rows} == {"backpack in the jungle", "backpack in the snow"}
    comparison = pd.read_csv(experiment / "report" / "paper_comparison.csv")
    ours = comparison[comparison["paper_method"] == "TF-TI2I"]
    assert set(ours["variant"]) == {"tf_ti2i"} and set(ours["dataset"]) == {"dreambooth"}
    assert (ours["n"] == 2).all() and ours["ours"].notna().all()
    paper_numbers = dict(zip(ours["metric"], ours["paper"], strict=True))
    assert pd.isna(paper_numbers.pop("dino"))  # DINOv2 is shown beside; the paper's DINO is DINO v1's
    assert paper_numbers == {"clip_t": 0.247, "dino_v1": 0.413, "clip_i": 0.723}
    table = pd.read_csv(experiment / "report" / "table1.csv")
    assert {"monkey", "tf_ti2i"} <= set(table["variant"])


def test_gpu_check_script_runs_quick_on_cpu_and_records_its_figures(tmp_path):
    """benchmarks/gpu_tf_ti2i.py --quick: the tiny twin on CPU; the record's medians are those of its pairs."""
    import json
    import statistics

    from conftest import load_benchmark

    script = load_benchmark("gpu_tf_ti2i")
    assert script.main(["--quick", "--out", str(tmp_path), "--pairs", "2", "--batches", "1,2"]) == 0
    record = json.loads((tmp_path / "gpu_tf_ti2i_quick.json").read_text())
    case = record["cases"][0]
    assert (case["model"], case["transformer_blocks"], case["size"], case["steps"]) == ("tiny_sd3", 3, 64, 2)
    figures = case["figures"]
    assert len(figures["pairs_s"]) == 2
    assert figures["time_ratio_median"] == pytest.approx(statistics.median(a / b for a, b in figures["pairs_s"]))
    peak = figures["peak_memory"]
    assert figures["memory_ratio"] == pytest.approx(peak["tf_ti2i"]["peak_mib"] / peak["plain"]["peak_mib"])
    text = (tmp_path / "gpu_tf_ti2i_quick.md").read_text()
    assert "| tiny_sd3 | 3 | 64 | 2 |" in text
    sweep = record["batches"]  # the images/s sweep of issue 30 point 2
    assert (sweep["size"], sweep["steps"], [row["batch"] for row in sweep["rows"]]) == (64, 2, [1, 2])
    for row in sweep["rows"]:
        assert row["images_per_s"] == pytest.approx(row["batch"] / row["seconds"])
        assert row["speedup_vs_batch_1"] == pytest.approx(row["images_per_s"] / sweep["rows"][0]["images_per_s"])
    assert not sweep["skipped"] and "| 2 | " in text.split("Several items per call")[1]


def test_tiny_sd3_twin_has_the_hub_layout_and_whole_word_tokenizers(stock_pipe):
    import json

    from safetensors.torch import load_file

    folder = materialize_tiny("sd3").pipeline
    index = json.loads((folder / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusion3Pipeline"
    assert index["transformer"] == ["diffusers", "SD3Transformer2DModel"]
    assert index["text_encoder_3"] == ["transformers", "T5EncoderModel"]
    for name in ("tokenizer", "tokenizer_2"):
        assert {p.name for p in (folder / name).iterdir()} >= {"vocab.json", "merges.txt", "tokenizer_config.json"}
    assert (folder / "tokenizer_3" / "tokenizer.json").is_file()
    config = json.loads((folder / "transformer" / "config.json").read_text())
    assert config["qk_norm"] == "rms_norm" and config["dual_attention_layers"] == []
    blocks = stock_pipe.transformer.transformer_blocks
    assert [b.context_pre_only for b in blocks] == [False, False, True]
    stored = load_file(folder / "transformer" / "diffusion_pytorch_model.safetensors")
    assert all(torch.equal(stored[k], v) for k, v in stock_pipe.transformer.state_dict().items())
    words = ["backpack", "in", "the", "jungle"]
    t5_ids = stock_pipe.tokenizer_3(" ".join(words)).input_ids
    assert len(t5_ids) == len(words) + 1 and t5_ids[-1] == stock_pipe.tokenizer_3.eos_token_id
    assert stock_pipe.tokenizer_3.decode(t5_ids, skip_special_tokens=True) == " ".join(words)
    assert len(stock_pipe.tokenizer_2(" ".join(words)).input_ids) == len(words) + 2
