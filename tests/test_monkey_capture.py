"""MONKEY's recording: outputs equal the stock IP-Adapter, maps equal a softmax written by hand from the
layer's weights and inputs (conditional half under CFG), planted attention gives the planted mask."""

import pytest
import torch
from diffusers.models.attention_processor import Attention, IPAdapterAttnProcessor2_0
from monkey_helpers import LAYERS, PAPER_LAYER, load_tiny, loop_range, make_batch, settings, stock_latents

from monkey.adapter.capture import AttentionRecorder, capture_processors, map_key
from monkey.adapter.masks import extract_mask, resize, to_grid
from monkey.adapter.sampler import MonkeySampler
from monkey.adapter.settings import MonkeySettings

MODELS = ["tiny", "tiny_sd15"]
PROMPTS, SEEDS = ["dog in the snow", "dog on the beach"], [3, 4]


@pytest.mark.parametrize("model", MODELS)
def test_recording_leaves_the_image_equal_to_stock_ip_adapter(model):
    """Recording at three layers on every step, IP scale 1, no mask: the stock image, to 1e-6 in latents."""
    pipe = load_tiny(model)
    steps = loop_range(pipe, 4)
    config = settings(model, layers=LAYERS, capture_steps=steps, initial_steps=4, save_pass1_image=True)
    batch = make_batch(pipe, PROMPTS, SEEDS)
    before = [(name, type(p), list(getattr(p, "scale", []))) for name, p in pipe.unet.attn_processors.items()]
    pass1 = MonkeySampler(pipe, config).record(batch, output_type="latent")
    reference = stock_latents(pipe, model, batch, steps=4, scale=1.0)
    torch.testing.assert_close(pass1.images, reference, atol=1e-6, rtol=0)
    assert len(pass1.records[0]) == len(LAYERS) * len(steps)  # every (layer, step) was recorded
    after = [(name, type(p), list(getattr(p, "scale", []))) for name, p in pipe.unet.attn_processors.items()]
    assert after == before  # stock processors and scales are back


def hand_image_token_probs(attn: Attention, hidden: torch.Tensor, ip_tokens: torch.Tensor) -> torch.Tensor:
    """exp(s - max) / sum over the image tokens of s = (x W_q^T)(y W_kip^T)^T * scale, per head, then
    averaged over heads. hidden [b, HW, C], ip_tokens [b, T, D] -> [b, HW, T]."""
    processor = attn.processor
    w_q = attn.to_q.weight.double()  # [C, C]; attn2's to_q has no bias in SD UNets
    w_k = processor.to_k_ip[0].weight.double()  # [C, D]
    heads = attn.heads
    q = hidden.double() @ w_q.T
    k = ip_tokens.double() @ w_k.T
    b, n, c = q.shape
    d = c // heads
    out = torch.zeros(b, n, k.shape[1], dtype=torch.float64)
    for h in range(heads):
        s = q[:, :, h * d : (h + 1) * d] @ k[:, :, h * d : (h + 1) * d].transpose(1, 2) * d**-0.5
        e = torch.exp(s - s.max(dim=-1, keepdim=True).values)
        out += e / e.sum(dim=-1, keepdim=True)
    return (out / heads).float()


@pytest.mark.parametrize("model", MODELS)
def test_recorded_map_equals_a_hand_softmax_of_the_conditional_half(model):
    pipe = load_tiny(model)
    attn = pipe.unet.get_submodule(PAPER_LAYER)
    inputs: list[tuple[torch.Tensor, torch.Tensor]] = []

    def keep_inputs(module, args, kwargs):
        text_and_image = kwargs["encoder_hidden_states"]
        inputs.append((args[0].clone(), text_and_image[1][0].clone()))  # [rows, HW, C], [rows, 1, T, D]

    handle = attn.register_forward_pre_hook(keep_inputs, with_kwargs=True)
    try:
        batch = make_batch(pipe, PROMPTS, SEEDS, height=64, width=96)  # non-square: a 2x3 grid at this layer
        pass1 = MonkeySampler(pipe, settings(model, layers=[PAPER_LAYER], capture_steps=[1, 2])).record(batch)
    finally:
        handle.remove()
    assert len(inputs) == 3  # steps 0, 1, 2: pass 1 stopped after its last capture step
    assert set(pass1.records[0]) == {map_key(PAPER_LAYER, 1), map_key(PAPER_LAYER, 2)}  # nothing else recorded
    n = len(PROMPTS)
    for step in (1, 2):
        hidden, ip_tokens = inputs[step]
        guided = hidden.shape[0] == 2 * n
        assert guided == (model == "tiny_sd15")
        cond = slice(n, 2 * n) if guided else slice(0, n)
        expected = hand_image_token_probs(attn, hidden[cond], ip_tokens[cond].flatten(1, 2))  # [n, 6, 4]
        for index in range(n):
            recorded = pass1.records[index][map_key(PAPER_LAYER, step)]  # [2, 3, 4]
            assert recorded.shape == (2, 3, 4)
            torch.testing.assert_close(recorded.reshape(6, 4), expected[index], atol=1e-6, rtol=0)
        if guided:  # the unconditional half (zero image embedding) attends differently: not recorded
            unconditional = hand_image_token_probs(attn, hidden[:n], ip_tokens[:n].flatten(1, 2))
            assert (unconditional - expected).abs().max() > 1e-3


class OneLayer(torch.nn.Module):
    """A stand-in UNet holding one cross-attention layer with a stock IP-Adapter processor."""

    def __init__(self, dim: int = 8, heads: int = 2):
        super().__init__()
        self.attn2 = Attention(query_dim=dim, cross_attention_dim=dim, heads=heads, dim_head=dim // heads)
        self.attn2.set_processor(IPAdapterAttnProcessor2_0(hidden_size=dim, cross_attention_dim=dim, num_tokens=4))


def planted_inputs(region: torch.Tensor, token: int, seed: int) -> tuple[torch.Tensor, tuple]:
    """Queries point along e0 inside `region` and e1 outside; the selected image token's key is
    along e0, the other tokens' along e1. So inside the region the token wins the softmax."""
    generator = torch.Generator().manual_seed(seed)
    flat = region.flatten()
    hidden = torch.zeros(1, flat.numel(), 8)
    hidden[0, flat, 0] = 1.0
    hidden[0, ~flat, 1] = 1.0
    hidden += 0.01 * torch.randn(hidden.shape, generator=generator)
    ip_tokens = torch.zeros(1, 1, 4, 8)
    ip_tokens[0, 0, :, 1] = 6.0
    ip_tokens[0, 0, token] = 0.0
    ip_tokens[0, 0, token, 0] = 6.0
    text = torch.randn(1, 5, 8, generator=generator)
    return hidden, (text, [ip_tokens])


@pytest.mark.parametrize("combine", ["mean", "union"])
def test_planted_attention_gives_the_planted_region(combine):
    torch.manual_seed(0)
    layer = OneLayer()
    with torch.no_grad():
        layer.attn2.to_q.weight.copy_(torch.eye(8))
        layer.attn2.processor.to_k_ip[0].weight.copy_(torch.eye(8))
    region = torch.zeros(6, 10, dtype=torch.bool)  # a non-square latent grid
    region[1:4, 2:7] = True
    region[4, 2] = True  # an L, not a rectangle
    token = 2
    recorder = AttentionRecorder(["attn2"], [1, 2])
    stock = IPAdapterAttnProcessor2_0(hidden_size=8, cross_attention_dim=8, num_tokens=4)
    stock.load_state_dict(layer.attn2.processor.state_dict())
    with capture_processors(layer, recorder), torch.no_grad():
        for step in (1, 2):
            hidden, encoder = planted_inputs(region, token, seed=step)
            recorder.begin_step(step, slice(0, 1))
            output = layer.attn2(hidden, encoder_hidden_states=encoder)
            torch.testing.assert_close(output, stock(layer.attn2, hidden, encoder), atol=0, rtol=0)
    record = {key: to_grid(maps[0], (6, 10)) for key, maps in recorder.maps.items()}
    config = MonkeySettings(layers=["attn2"], token=token, capture_steps=[1, 2], combine=combine)
    mask = extract_mask(record, config).mask.bool()
    assert (mask & region).sum() / (mask | region).sum() == 1.0
    at_image = resize(mask.float(), (48, 80)).bool()  # 8 px per latent cell
    assert torch.equal(at_image, region.repeat_interleave(8, 0).repeat_interleave(8, 1))
    other = extract_mask(record, MonkeySettings(layers=["attn2"], token=0, capture_steps=[1, 2])).mask.bool()
    assert torch.equal(other, ~region)  # another token attends to the complement
