"""BitLinear: ternary weights and int8 activations in the forward pass, with
straight-through gradients (docs/FORMATS.md 1.1-1.3).

`quantize_weights_ste` and `quantize_activations_ste` are the textbook
formulation (`x + (q - x).detach()`). `BitLinear` computes the same function with
one fused autograd op that is faster on CPUs and whose forward is the runtime's
exact integer epilogue: `y = float(sum_i t_i * q_i) * (gamma / scale)` (the
integer sums are exact in float32 while 127 * K < 2**24, i.e. K <= 132104), so a
trained model's BitLinear outputs are the ones tribit computes.
"""

from __future__ import annotations

import torch
from torch import nn

ACT_MAX = 127.0
FLOOR = 1e-5


def weight_quant(w: torch.Tensor, f64_mean: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """`(t, gamma)`: absmean ternarization, one scale per tensor (docs/FORMATS.md 1.1).

    `gamma = mean|w|` clamped at 1e-5 (float32 scalar tensor), `t` in {-1, 0, 1}
    (float tensor, same shape as `w`), rounded half to even. `f64_mean` (export and
    the runtime-math forward): the mean summed in float64 and rounded once, the same
    float32 with any thread count; a float32 sum's last bits depend on torch's
    threads, and a gamma one ulp off the exported one moves int8 codes downstream.
    """
    mean = w.abs().double().mean().float() if f64_mean else w.abs().mean()
    gamma = mean.clamp(min=FLOOR)
    t = (w * (1.0 / gamma)).round().clamp(-1, 1)
    return t, gamma


def act_quant(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`(q, scale)`: per-token absmax int8 codes (as floats) and the multiplier
    `scale = 127 / max(amax, 1e-5)` of shape (..., 1) (docs/FORMATS.md 1.2)."""
    amax = x.abs().amax(dim=-1, keepdim=True).clamp(min=FLOOR)
    # a true division like numpy's (python_scalar / tensor would be 127 * (1 / amax))
    scale = torch.div(amax.new_tensor(ACT_MAX), amax)
    q = (x * scale).round().clamp(-128, 127)
    return q, scale


def quantize_weights_ste(w: torch.Tensor) -> torch.Tensor:
    """Fake-quantized weight `gamma * t` with an identity (straight-through) gradient."""
    t, gamma = weight_quant(w)
    return w + (t * gamma - w).detach()


def quantize_activations_ste(x: torch.Tensor) -> torch.Tensor:
    """Fake-quantized activations `q / scale` with a straight-through gradient."""
    q, scale = act_quant(x)
    return x + (q / scale - x).detach()


class _BitLinearFn(torch.autograd.Function):
    """y = (q @ t.T) * (gamma / scale); gradients of the STE formulation:
    dx = dy @ (gamma t), dw = dy.T @ (q / scale)."""

    @staticmethod
    def forward(
        ctx,
        x: torch.Tensor,
        w: torch.Tensor,  # type: ignore[override]
        f64_mean: bool = False,
    ) -> torch.Tensor:
        t, gamma = weight_quant(w, f64_mean)
        q, scale = act_quant(x)
        ctx.save_for_backward(q, scale, t, gamma)
        return (q @ t.T) * (gamma / scale)

    @staticmethod
    def backward(ctx, dy: torch.Tensor):  # type: ignore[override]
        q, scale, t, gamma = ctx.saved_tensors
        dx = (dy @ t) * gamma
        dw = dy.reshape(-1, dy.shape[-1]).T @ (q / scale).reshape(-1, q.shape[-1])
        return dx, dw, None


class BitLinear(nn.Linear):
    """A bias-free nn.Linear whose forward uses ternary weights (per-tensor absmean
    scale) and int8 per-token activations, trained with straight-through gradients.
    `runtime_math`: gamma's mean in float64, as exported (`weight_quant`)."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__(in_features, out_features, bias=False)
        self.runtime_math = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _BitLinearFn.apply(x, self.weight, self.runtime_math)

    def forward_ste(self, x: torch.Tensor) -> torch.Tensor:
        """The textbook formulation (same values up to float rounding; for tests)."""
        return nn.functional.linear(quantize_activations_ste(x), quantize_weights_ste(self.weight))
