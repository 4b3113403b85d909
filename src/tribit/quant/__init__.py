"""The numpy specification of tribit's quantization math and packings.

Native kernels and the model oracle are tested against these functions; they
are written for clarity and exactness first (docs/FORMATS.md sections 1, 2.1, 3.4, 3.7, 3.9).
"""

from .activation import quantize_activations, ternary_matmul_ref
from .floats import bf16_to_f32, dequantize_q8_0, f32_to_bf16, quantize_q8_0
from .hf_packed import pack_hf, unpack_hf
from .i2s import i2s_nbytes, pack_i2s, unpack_i2s
from .kquants import (
    dequantize_q6_k,
    dequantize_q8_k,
    q6_k_q8_k_matmul_ref,
    quantize_q6_k,
    quantize_q8_k,
)
from .ternary import absmean_ternarize, as_ternary
from .torch_sum import torch_mean_f32, torch_sum_f32
from .tq import pack_tq1_0, pack_tq2_0, unpack_tq1_0, unpack_tq2_0

__all__ = [
    "absmean_ternarize",
    "as_ternary",
    "bf16_to_f32",
    "dequantize_q6_k",
    "dequantize_q8_0",
    "dequantize_q8_k",
    "f32_to_bf16",
    "i2s_nbytes",
    "pack_hf",
    "pack_i2s",
    "pack_tq1_0",
    "pack_tq2_0",
    "quantize_activations",
    "q6_k_q8_k_matmul_ref",
    "quantize_q6_k",
    "quantize_q8_0",
    "quantize_q8_k",
    "ternary_matmul_ref",
    "torch_mean_f32",
    "torch_sum_f32",
    "unpack_hf",
    "unpack_i2s",
    "unpack_tq1_0",
    "unpack_tq2_0",
]
