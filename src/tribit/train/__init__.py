"""Quantization-aware training of small ternary models (needs torch: `tribit[train]`).

Inference never imports this package. Generic modules: `bitlinear` (BitLinear, STE),
`model` (2B-4T-style decoder), `tokenizer` (BPE encoding from GGUF metadata), `trainer`
(schedule, packed batches, loss, checkpoints), `export` (GGUF), `evaluate` (greedy
answers of a checkpoint). The bAbI demo: `babi` (its settings, tokenizer, data, loop).
"""

from .bitlinear import BitLinear, quantize_activations_ste, quantize_weights_ste
from .model import BitNetConfig, BitNetLM

__all__ = [
    "BitLinear",
    "BitNetConfig",
    "BitNetLM",
    "quantize_activations_ste",
    "quantize_weights_ste",
]
