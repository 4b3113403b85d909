"""Quantization-aware training of small ternary models (needs torch: `tribit[train]`).

Inference never imports this package. Modules: `bitlinear` (BitLinear, STE),
`model` (2B-4T-style decoder), `tokenizer` (BPE for the bAbI model), `trainer`
(AdamW, warm-up + cosine, checkpoints), `export` (GGUF), `evaluate` (torch answers).
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
