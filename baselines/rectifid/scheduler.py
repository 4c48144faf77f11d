"""PeRFlow's scheduler (Yan et al., 2024, piecewise rectified flow), written from its published maths.

The time axis [1, 0] is cut into `num_time_windows` equal windows [t_s, t_e]. Inside a window the
flow is straight, so one Euler step per window lands on the window's end. With `diff_eps`
prediction the UNet's output eps gives the window end directly (the DDIM map between the window's
boundary noise levels):

    x_e = lambda_s * x + eta_s * eps,   lambda_s = sqrt(ab_e / ab_s),
    eta_s = sqrt(1 - ab_e) - lambda_s * sqrt(1 - ab_s),

where ab = alphas_cumprod at the boundaries' training indices (t * T - 1, clamped at 0). At a time
t_c inside the window these generalise to a straight line from (t_s, x_s) to (t_e, x_e), whose
velocity is (x_e - x_c) / (t_e - t_c); the Euler step x + (t_next - t_c) * velocity lands on x_e
when the window has one step. `velocity` prediction takes the UNet output as that velocity.

It is a diffusers SchedulerMixin/ConfigMixin, so `PeRFlowScheduler.from_config(pipe.scheduler.config,
prediction_type="diff_eps", num_time_windows=4)` loads the hub repo's scheduler config (its extra
keys are ignored) and `save_pretrained`/`from_pretrained` round-trip it.
"""

from dataclasses import dataclass

import numpy as np
import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils import BaseOutput

PREDICTION_TYPES = ("diff_eps", "velocity")


@dataclass
class PeRFlowSchedulerOutput(BaseOutput):
    prev_sample: torch.Tensor  # the state at the next timestep, same shape as the input sample


def window_bounds(num_windows: int, t_noise: float = 1.0, t_clean: float = 0.0) -> list[tuple[float, float]]:
    """[(t_s, t_e), ...] from noise to clean, equal lengths."""
    edges = np.linspace(t_noise, t_clean, num_windows + 1)
    return [(float(edges[k]), float(edges[k + 1])) for k in range(num_windows)]


class PeRFlowScheduler(SchedulerMixin, ConfigMixin):
    order = 1

    @register_to_config
    def __init__(
        self,
        num_train_timesteps: int = 1000,
        beta_start: float = 0.00085,
        beta_end: float = 0.012,
        beta_schedule: str = "scaled_linear",
        trained_betas: list[float] | None = None,
        prediction_type: str = "diff_eps",
        t_noise: float = 1.0,
        t_clean: float = 0.0,
        num_time_windows: int = 4,
    ):
        if prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"PeRFlowScheduler prediction_type={prediction_type!r}; allowed: {list(PREDICTION_TYPES)}")
        if num_time_windows < 1 or not t_clean < t_noise:
            raise ValueError(
                f"PeRFlowScheduler needs num_time_windows >= 1 and t_clean < t_noise, got "
                f"{num_time_windows}, {t_clean}, {t_noise}"
            )
        if trained_betas is not None:
            betas = torch.tensor(trained_betas, dtype=torch.float32)
        elif beta_schedule == "linear":
            betas = torch.linspace(beta_start, beta_end, num_train_timesteps, dtype=torch.float32)
        elif beta_schedule == "scaled_linear":
            betas = torch.linspace(beta_start**0.5, beta_end**0.5, num_train_timesteps, dtype=torch.float32) ** 2
        else:
            raise ValueError(f"PeRFlowScheduler beta_schedule={beta_schedule!r}; allowed: linear, scaled_linear")
        self.alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)  # [T]
        self.windows = window_bounds(num_time_windows, t_noise, t_clean)
        self.init_noise_sigma = 1.0
        self.num_inference_steps: int | None = None
        self.timesteps = torch.from_numpy(self.timepoints(num_time_windows) * num_train_timesteps).long()

    # ---- the time grid --------------------------------------------------------------------------
    def timepoints(self, num_inference_steps: int) -> np.ndarray:
        """Start times of every step in [1, 0]: the windows share the steps, earlier windows take the remainder."""
        n = self.config.num_time_windows
        steps = max(num_inference_steps, n)
        points = []
        for k, (t_s, t_e) in enumerate(self.windows):
            in_window = steps // n + (1 if k < steps % n else 0)
            points.append(np.linspace(t_s, t_e, in_window, endpoint=False))
        return np.concatenate(points)

    def set_timesteps(self, num_inference_steps: int, device: str | torch.device | None = None) -> None:
        """Timesteps on the training scale (t * T, integers); fewer steps than windows become one per window."""
        self.num_inference_steps = max(num_inference_steps, self.config.num_time_windows)
        grid = self.timepoints(num_inference_steps) * self.config.num_train_timesteps
        self.timesteps = torch.from_numpy(grid.astype(np.int64)).to(device)

    def scale_model_input(self, sample: torch.Tensor, timestep: int | torch.Tensor | None = None) -> torch.Tensor:
        return sample

    # ---- window maths ---------------------------------------------------------------------------
    def window_of(self, t: float) -> tuple[float, float]:
        """The window [t_s, t_e) holding time t (a boundary belongs to the window it starts)."""
        tolerance = 0.1 / self.config.num_train_timesteps
        for t_s, t_e in self.windows:
            if t > t_e + tolerance:
                return t_s, t_e
        return self.windows[-1]

    def boundary_alphas(self, t_s: float, t_e: float) -> tuple[torch.Tensor, torch.Tensor]:
        """alphas_cumprod at the window's start and end (training index t * T - 1, clamped at 0)."""
        total = self.config.num_train_timesteps
        start = self.alphas_cumprod[max(round(t_s * total) - 1, 0)]
        end = self.alphas_cumprod[max(round(t_e * total) - 1, 0)]
        return start, end

    def window_map(self, window: int) -> tuple[float, float]:
        """(lambda_s, eta_s) of window k: its end is lambda_s * x_start + eta_s * eps."""
        start, end = self.boundary_alphas(*self.windows[window])
        lam = (end / start).sqrt()
        eta = (1 - end).sqrt() - lam * (1 - start).sqrt()
        return float(lam), float(eta)

    def window_factor(self, window: int) -> float:
        """d x_end / d x_start of window k with the clean image held fixed (eps = (x - sqrt(ab_s) x0) /
        sqrt(1 - ab_s)): sqrt((1 - ab_e) / (1 - ab_s)). RectifID's `window_factor: exact`."""
        start, end = self.boundary_alphas(*self.windows[window])
        return float(((1 - end) / (1 - start)).sqrt())

    # ---- one step -------------------------------------------------------------------------------
    def next_time(self, timestep: int | torch.Tensor) -> float:
        steps = [int(t) for t in self.timesteps]
        index = steps.index(int(timestep))
        return steps[index + 1] / self.config.num_train_timesteps if index + 1 < len(steps) else self.config.t_clean

    def step(
        self,
        model_output: torch.Tensor,
        timestep: int | torch.Tensor,
        sample: torch.Tensor,
        return_dict: bool = True,
        **_: object,
    ) -> PeRFlowSchedulerOutput | tuple[torch.Tensor]:
        """One Euler step along the window's straight line. model_output, sample: [B, C, h, w]."""
        t_c = int(timestep) / self.config.num_train_timesteps
        t_s, t_e = self.window_of(t_c)
        if self.config.prediction_type == "diff_eps":
            start, end = self.boundary_alphas(t_s, t_e)
            lam_s = (end / start).sqrt()
            eta_s = (1 - end).sqrt() - lam_s * (1 - start).sqrt()
            # the DDIM map from time t_c (inside the window) to the window end, interpolated along the line
            denom = lam_s * (t_c - t_s) + (t_e - t_c)
            lam_t = lam_s * (t_e - t_s) / denom
            eta_t = eta_s * (t_e - t_c) / denom
            window_end = lam_t.to(sample.dtype) * sample + eta_t.to(sample.dtype) * model_output
            velocity = (window_end - sample) / (t_e - t_c)
        else:
            velocity = model_output
        dt = self.next_time(timestep) - t_c
        prev_sample = sample + dt * velocity
        if not return_dict:
            return (prev_sample,)
        return PeRFlowSchedulerOutput(prev_sample=prev_sample)

    def __len__(self) -> int:
        return self.config.num_train_timesteps
