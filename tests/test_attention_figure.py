"""Attention-map figures: one panel per (row, word) and (row, image token); image-token panels equal
MONKEY's own pass-1 record; text maps equal a softmax written out by hand; words follow the tokenizer;
bad choices fail before the pipeline runs, naming what is allowed."""

import json
import logging

import pytest
import torch
from conftest import compose_config
from diffusers.models.attention_processor import Attention, IPAdapterAttnProcessor2_0
from monkey_helpers import PAPER_LAYER
from PIL import Image

from monkey.adapter.capture import AttentionRecorder, capture_processors, map_key
from monkey.adapter.sampler import MonkeySampler, SubjectBatch
from monkey.adapter.settings import MonkeySettings
from monkey.errors import ConfigError
from monkey.figures.attention import AttentionMaps
from monkey.figures.attention_figure import attention_config, make_attention_figure, monkey_method
from monkey.figures.cli import main as attention_main
from monkey.figures.grid import EXTRA_KINDS, MEAN, build_panels, colour_limits
from monkey.figures.words import END, START, prompt_words, select_words
from monkey.methods.presets import method_spec
from monkey.runner import plan_from_config

MID = "mid_block.attentions.0.transformer_blocks.0.attn2"
SMALL = ("generation.height=64", "generation.width=64", "method.initial_steps=3")  # pass 1: steps 0..2
# the paper layer by a unique prefix, and the mid block (a 2x2 and a 1x1 grid at 64 px)
CHOICES = ("subject=dog", "prompt_index=1", "layers=[up_blocks.1.attentions.1,mid_block.attentions.0]")
FIGURE = (*SMALL, *CHOICES)


@pytest.fixture(scope="module")
def figure():
    return make_attention_figure(attention_config([*FIGURE, "steps=[1,2]"]))


def test_one_panel_per_row_and_token_asked_for(figure):
    panels = figure.panels
    rows = [(PAPER_LAYER, 1), (PAPER_LAYER, 2), (MID, 1), (MID, 2)]
    words = ["dog", "in", "the", "snow"]  # prompt 1: "dog in the snow"; specials only on request
    expected = {(layer, step, word) for layer, step in rows for word in words}
    expected |= {(layer, step, f"image token {t}") for layer, step in rows for t in range(4)}
    maps = [(p.layer, p.step, p.label) for p in panels if p.map is not None]
    assert len(maps) == len(set(maps)) == len(expected) and set(maps) == expected
    assert [p.kind for p in panels if p.map is None] == list(EXTRA_KINDS)  # generated + subject, row 0
    first_row = sorted((p for p in panels if p.row == 0), key=lambda p: p.column)
    assert [p.label for p in first_row] == ["generated", "subject", *words, *(f"image token {t}" for t in range(4))]
    fig = figure.draw()
    assert sum(ax.axison for ax in fig.axes) == len(panels)  # the other cells are switched off
    assert len(fig.axes) == 4 * len(first_row)


def test_image_token_panels_equal_monkeys_own_pass1_record(figure):
    """The figure's image-token maps are MONKEY's: MonkeySampler.record() on the same subject, prompt,
    seed, layers and steps records the same numbers; its pass-1 image (run to the end) is the figure's."""
    cfg = compose_config("method=monkey", "plan.limit.subjects=null", *SMALL)
    item = next(i for i in plan_from_config(cfg) if i.item_id == figure.about["item_id"])
    assert (figure.maps.seed, figure.maps.prompt) == (item.seed, item.prompt)  # the run's seed and prompt
    method = monkey_method(cfg, method_spec(cfg))
    settings = MonkeySettings(layers=[PAPER_LAYER, MID], capture_steps=[1, 2], initial_steps=3, save_pass1_image=True)
    batch = SubjectBatch([item.prompt], [item.seed], method.embedder.batch([item.source]), 64, 64)
    pass1 = MonkeySampler(method.pipe, settings).record(batch)
    for panel in (p for p in figure.panels if p.kind == "token"):
        recorded = pass1.records[0][map_key(panel.layer, panel.step)][..., panel.token]
        torch.testing.assert_close(panel.map, recorded, atol=0, rtol=0)
    assert figure.panels[-1].map.shape == (1, 1) and figure.panels[2].map.shape == (2, 2)  # the layers' grids
    assert list(figure.maps.image.getdata()) == list(pass1.images[0].getdata())


def hand_text_probs(attn: Attention, hidden: torch.Tensor, text: torch.Tensor, masked=None) -> torch.Tensor:
    """Per head h: exp(s - max) / sum of s = (x W_q^T)(y W_k^T)^T / sqrt(d) (masked keys at -inf), then the
    mean over heads. hidden [b, N, C], text [b, L, D] -> [b, N, L] (float64 throughout)."""
    q = hidden.double() @ attn.to_q.weight.double().T
    k = text.double() @ attn.to_k.weight.double().T
    heads, d = attn.heads, q.shape[-1] // attn.heads
    out = torch.zeros(q.shape[0], q.shape[1], k.shape[1], dtype=torch.float64)
    for h in range(heads):
        s = q[..., h * d : (h + 1) * d] @ k[..., h * d : (h + 1) * d].transpose(1, 2) * d**-0.5
        if masked is not None:
            s[..., masked] = float("-inf")
        e = torch.exp(s - s.max(dim=-1, keepdim=True).values)
        out += e / e.sum(dim=-1, keepdim=True)
    return (out / heads).float()


def test_text_maps_equal_a_hand_softmax_and_sum_to_one():
    """A prompt with a word the tiny tokenizer splits into 4 tokens; the layer's own inputs, kept by a hook."""
    attn_inputs = []
    cfg = attention_config([*FIGURE, f"layers=[{PAPER_LAYER}]", "steps=[2]", "prompt=dog zyxq in the snow"])
    method = monkey_method(cfg, method_spec(cfg))
    attn = method.pipe.unet.get_submodule(PAPER_LAYER)

    def keep(module, args, kwargs):
        attn_inputs.append((args[0].clone(), kwargs["encoder_hidden_states"][0].clone()))  # [1, HW, C], [1, 77, D]

    handle = attn.register_forward_pre_hook(keep, with_kwargs=True)
    try:
        figure = make_attention_figure(cfg, method)
    finally:
        handle.remove()
    assert len(attn_inputs) == 3  # pass 1 ran to its end (method.initial_steps=3)
    hidden, text = attn_inputs[2]
    expected = hand_text_probs(attn, hidden, text)[0].reshape(2, 2, -1)  # [2, 2, 77]
    recorded = figure.maps.text_maps[map_key(PAPER_LAYER, 2)]
    torch.testing.assert_close(recorded, expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(recorded.sum(dim=-1), torch.ones(2, 2), atol=1e-6, rtol=0)
    split = next(p for p in figure.panels if p.label == "zyxq")
    assert len(split.word.positions) == 4
    torch.testing.assert_close(split.map, expected[..., list(split.word.positions)].sum(dim=-1), atol=1e-6, rtol=0)
    every_word = sum(figure.maps.word_map(PAPER_LAYER, 2, w) for w in figure.maps.words)
    assert bool((every_word <= 1 + 1e-6).all()) and bool((every_word > 0).all())  # the rest: padding positions


class CrossAttention(torch.nn.Module):
    """One attn2 with a stock IP-Adapter processor: a stand-in UNet for the CFG rows and the mask."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.attn2 = Attention(query_dim=8, cross_attention_dim=6, heads=2, dim_head=4)
        self.attn2.set_processor(IPAdapterAttnProcessor2_0(hidden_size=8, cross_attention_dim=6, num_tokens=4))


def test_text_recording_takes_the_conditional_rows_and_the_attention_mask():
    layer = CrossAttention()
    hidden, text = torch.randn(2, 5, 8), torch.randn(2, 7, 6)  # [uncond; cond], 7 text tokens
    encoder = (text, [torch.randn(2, 1, 4, 6)])
    mask = torch.zeros(2, 1, 7)  # [b, 1, L], as diffusers' prepare_attention_mask takes it
    mask[..., 5:] = -10_000.0  # the last two text tokens masked (diffusers' additive mask)
    for text_on in (True, False):
        recorder = AttentionRecorder(["attn2"], [0], text=text_on)
        with capture_processors(layer, recorder), torch.no_grad():
            recorder.begin_step(0, slice(1, 2))
            layer.attn2(hidden, encoder_hidden_states=encoder, attention_mask=mask)
        assert set(recorder.maps) == {"attn2@0"}
    assert recorder.text_maps == {}  # off by default: MONKEY's recording is unchanged
    recorder = AttentionRecorder(["attn2"], [0], text=True)
    with capture_processors(layer, recorder), torch.no_grad():
        recorder.begin_step(0, slice(1, 2))
        layer.attn2(hidden, encoder_hidden_states=encoder, attention_mask=mask)
    expected = hand_text_probs(layer.attn2, hidden[1:], text[1:], masked=[5, 6])
    torch.testing.assert_close(recorder.text_maps["attn2@0"], expected, atol=1e-6, rtol=0)
    unconditional = hand_text_probs(layer.attn2, hidden[:1], text[:1], masked=[5, 6])
    assert (unconditional - expected).abs().max() > 1e-3


def test_words_follow_the_tokenizer(tiny_pipe):
    tokenizer = tiny_pipe.tokenizer
    prompt = "a dog, a zyxq bear"
    words = prompt_words(tokenizer, prompt)
    assert [w.label for w in words] == [START, "a", "dog", ",", "a@2", "zyxq", "bear", END]
    ids = tokenizer(prompt, padding="max_length", max_length=tokenizer.model_max_length).input_ids
    for word in words[1:-1]:
        assert [ids[p] for p in word.positions] == tokenizer(word.text, add_special_tokens=False).input_ids
    positions = [p for word in words for p in word.positions]
    assert positions == list(range(len(positions)))  # in order, each token once, @sot at 0
    assert (ids[0], ids[positions[-1]]) == (tokenizer.bos_token_id, tokenizer.eos_token_id)
    assert len(words[5].positions) == 4  # zyxq: one character per token in the tiny vocabulary
    assert [w.label for w in select_words(words, ["a@2", END])] == ["a@2", END]
    with pytest.raises(ConfigError, match=r"'snow'.*allowed: \['@sot', 'a', 'dog'"):
        select_words(words, ["dog", "snow"])


def test_rows_of_layers_average_their_steps(figure):
    panels = build_panels(figure.maps, figure.maps.words[1:2], [1], rows="layers")
    assert [(p.layer, p.step) for p in panels if p.map is not None] == [(PAPER_LAYER, MEAN)] * 2 + [(MID, MEAN)] * 2
    maps: AttentionMaps = figure.maps
    mean = (maps.token_map(PAPER_LAYER, 1, 1) + maps.token_map(PAPER_LAYER, 2, 1)) / 2
    torch.testing.assert_close(panels[3].map, mean)


def test_colour_scales_per_panel_or_shared_by_kind(figure):
    panels = figure.panels
    words = [i for i, p in enumerate(panels) if p.kind == "word"]
    tokens = [i for i, p in enumerate(panels) if p.kind == "token"]
    own = colour_limits(panels, "panel")
    for i in words + tokens:
        low, high = float(panels[i].map.min()), float(panels[i].map.max())
        assert own[i][0] == low and (own[i][1] == high or (high == low and own[i][1] > low))  # 1x1 grids: constant
    shared = colour_limits(panels, "shared")
    assert {shared[i] for i in words} == {(0.0, max(float(panels[i].map.max()) for i in words))}
    assert {shared[i] for i in tokens} == {(0.0, max(float(panels[i].map.max()) for i in tokens))}


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("layers=[up_blocks.1.attentions.9]", r"names no attn2 layer.*allowed .*down_blocks\.0\.attentions\.0"),
        ("layers=[up_blocks.1]", r"names 3 attn2 layer.*allowed"),
        ("steps=[1,3]", r"allowed are 0\.\.2.*method\.initial_steps=3"),
        ("words=[dog,cat]", r"\['cat'\].*allowed: \['@sot', 'dog', 'in', 'the', 'snow', '@eot'\]"),
        ("tokens=[1,4]", r"\[4\]; allowed: 0\.\.3"),
        ("rows=steps", r"rows='steps'.*\['pairs', 'layers'\]"),
        ("norm=global", r"norm='global'.*\['panel', 'shared'\]"),
        ("subject=unicorn", r"subject='unicorn'.*allowed: \['backpack'"),
        ("prompt_index=20", r"prompt_index=20 is outside 0\.\.19"),
        ("method=ip_adapter_1.0", r"method must be monkey"),
    ],
)
def test_bad_choices_name_the_allowed_values(override, message):
    base = CHOICES if override.startswith("method=") else FIGURE  # other methods have no initial_steps
    with pytest.raises(ConfigError, match=message):
        make_attention_figure(attention_config([*base, override]))


def test_command_writes_png_pdf_and_json(tmp_path, caplog):
    overrides = [*FIGURE, "steps=[2]", "rows=layers", "words=[dog,@sot]", "tokens=[1]", "norm=shared", "image_id=00"]
    assert attention_main([*overrides, f"run.root={tmp_path}"]) == 0  # no --out: beside the run's folders
    stem = tmp_path / "demo" / "figures" / "attention_dog_p01_s0"
    png, pdf = stem.parent / f"{stem.name}.png", stem.parent / f"{stem.name}.pdf"
    assert Image.open(png).size[0] > 300 and pdf.read_bytes().startswith(b"%PDF")
    about = json.loads((stem.parent / f"{stem.name}.json").read_text())
    assert about["item_id"] == "dreambooth/dog/00/p01/s0" and about["prompt"] == "dog in the snow"
    assert about["words"] == {"dog": [1], "@sot": [0]} and about["tokens"] == [1]
    assert [row["layer"] for row in about["rows"]] == [PAPER_LAYER, MID]
    caplog.set_level(logging.ERROR)
    assert attention_main([*FIGURE, "layers=[nope]", "--out", str(tmp_path / "bad")]) == 2
    assert "allowed" in caplog.text and not list(tmp_path.glob("bad*"))
