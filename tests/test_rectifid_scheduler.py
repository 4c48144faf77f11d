"""PeRFlow scheduler against the window maths written out here, and against the hub layouts."""

import math

import diffusers
import pytest
import torch
from monkey.baselines.rectifid.scheduler import PeRFlowScheduler

from monkey.methods.presets import model_profile_config
from monkey.models.profiles import load_pipeline, profile_from_config, resolve_runtime

T = 1000


def sd_alphas_cumprod() -> list[float]:
    """SD1.x's scaled-linear schedule, in float64, by a plain loop."""
    lo, hi = math.sqrt(0.00085), math.sqrt(0.012)
    product, out = 1.0, []
    for k in range(T):
        beta = (lo + (hi - lo) * k / (T - 1)) ** 2
        product *= 1 - beta
        out.append(product)
    return out


def ddim_map(x: torch.Tensor, eps: torch.Tensor, ab_s: float, ab_e: float) -> torch.Tensor:
    """Predict x0 from eps at noise level ab_s, re-noise it to ab_e with the same eps."""
    x0 = (x - math.sqrt(1 - ab_s) * eps) / math.sqrt(ab_s)
    return math.sqrt(ab_e) * x0 + math.sqrt(1 - ab_e) * eps


def test_four_steps_are_ddim_jumps_between_window_boundaries():
    scheduler = PeRFlowScheduler(prediction_type="diff_eps", num_time_windows=4)
    scheduler.set_timesteps(4)
    assert scheduler.timesteps.tolist() == [1000, 750, 500, 250]
    ab = sd_alphas_cumprod()
    bounds = [(999, 749), (749, 499), (499, 249), (249, 0)]  # training index t * T - 1, the last clamped at 0
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(1, 4, 8, 8, generator=generator, dtype=torch.float64)
    for t, (s, e) in zip(scheduler.timesteps, bounds, strict=True):
        eps = torch.randn(1, 4, 8, 8, generator=generator, dtype=torch.float64)
        expected = ddim_map(x, eps, ab[s], ab[e])
        got = scheduler.step(eps, t, x).prev_sample
        torch.testing.assert_close(got, expected, rtol=2e-5, atol=2e-5)  # float32 schedule vs float64 here
        x = expected


def test_more_steps_per_window_follow_the_straight_line():
    """With a constant eps (a perfectly straight flow) two Euler steps per window reach the same window
    end as one step, and the midpoint lies halfway on the line."""
    one, two = PeRFlowScheduler(num_time_windows=4), PeRFlowScheduler(num_time_windows=4)
    one.set_timesteps(4)
    two.set_timesteps(8)
    assert two.timesteps.tolist() == [1000, 875, 750, 625, 500, 375, 250, 125]
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(2, 4, 8, 8, generator=generator, dtype=torch.float64)
    eps = torch.randn(2, 4, 8, 8, generator=generator, dtype=torch.float64)
    end = one.step(eps, 1000, x).prev_sample
    mid = two.step(eps, 1000, x).prev_sample
    torch.testing.assert_close(mid, (x + end) / 2)
    # at the midpoint the same eps re-derived from the line: eps_mid gives the same window end
    torch.testing.assert_close(two.step(eps, 875, mid).prev_sample, end)


def test_window_factor_is_the_jacobian_with_the_clean_image_fixed():
    scheduler = PeRFlowScheduler(num_time_windows=4)
    ab = sd_alphas_cumprod()
    x0 = torch.randn(1, 4, 4, 4, dtype=torch.float64)
    for window, (s, e) in enumerate([(999, 749), (749, 499), (499, 249), (249, 0)]):
        x = torch.randn(1, 4, 4, 4, dtype=torch.float64, requires_grad=True)
        eps = (x - math.sqrt(ab[s]) * x0) / math.sqrt(1 - ab[s])  # the ideal prediction
        end = ddim_map(x, eps, ab[s], ab[e])
        (grad,) = torch.autograd.grad(end.sum(), x)
        assert scheduler.window_factor(window) == pytest.approx(grad.mean().item(), rel=1e-4)  # float32 schedule


@pytest.mark.parametrize("stock", ["PNDMScheduler", "DDIMScheduler"])
def test_hub_scheduler_configs_load_and_round_trip(tmp_path, stock):
    config = getattr(diffusers, stock)(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear").config
    scheduler = PeRFlowScheduler.from_config(config, prediction_type="diff_eps", num_time_windows=4)
    assert (scheduler.config.beta_end, scheduler.config.prediction_type) == (0.012, "diff_eps")
    scheduler.save_pretrained(tmp_path)
    again = PeRFlowScheduler.from_pretrained(tmp_path)
    public = lambda config: {k: v for k, v in config.items() if not k.startswith("_")}  # noqa: E731
    assert public(again.config) == public(scheduler.config)
    torch.testing.assert_close(again.alphas_cumprod, torch.tensor(sd_alphas_cumprod(), dtype=torch.float32))


def test_bad_prediction_type_is_refused():
    with pytest.raises(ValueError, match="prediction_type='epsilon'"):
        PeRFlowScheduler(prediction_type="epsilon")


def test_tiny_perflow_profile_loads_through_from_pretrained():
    profile = profile_from_config(model_profile_config("tiny_perflow"))
    runtime = resolve_runtime(profile, "cpu", "float32")
    pipe = load_pipeline(runtime.model, runtime.device, runtime.dtype)
    assert isinstance(pipe, diffusers.StableDiffusionPipeline)
    assert isinstance(pipe.scheduler, PeRFlowScheduler)
    assert pipe.scheduler.config.num_time_windows == 4 and pipe.unet.config.layers_per_block == 2


def test_profile_scheduler_names_a_diffusers_class_or_a_dotted_path():
    from monkey.errors import ConfigError
    from monkey.models.profiles import scheduler_class_named

    assert scheduler_class_named("DDIMScheduler") is diffusers.DDIMScheduler
    assert scheduler_class_named("monkey.baselines.rectifid.scheduler.PeRFlowScheduler") is PeRFlowScheduler
    with pytest.raises(ConfigError, match=r"model\.scheduler='monkey\.nowhere\.Scheduler' cannot be imported"):
        scheduler_class_named("monkey.nowhere.Scheduler")
    with pytest.raises(ConfigError, match=r"model\.scheduler='NoSuchScheduler' is not a diffusers scheduler class"):
        scheduler_class_named("NoSuchScheduler")
