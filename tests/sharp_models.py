"""Tiny random models whose attention is position-sensitive (for the model tests).

tiny_models' masters (std 0.02) give nearly uniform attention: a RoPE, GQA or
masking bug then barely moves the logits. Scaling the Q/K masters by 8 (and, for
archs without sub-norms, gate/up by 4) keeps the model well conditioned (f32 vs
f64 KLD ~1e-6) while every one-op bug gives KLD >= 0.06 (test_model_sensitivity).
"""

from __future__ import annotations

import numpy as np

from tiny_models import random_weights

N_VOCAB, N_EMBD, N_FF, N_LAYER, N_HEAD = 300, 256, 512, 2, 4


def sharp_weights(n_head_kv: int, sub_norms: bool, seed: int = 0) -> dict[str, np.ndarray]:
    """Float masters (name -> float32 array) of a 2-layer, 4-head model."""
    w = random_weights(
        N_EMBD, N_FF, N_LAYER, N_HEAD, n_head_kv, N_VOCAB, seed, sub_norms, sub_norms
    )
    for name in w:
        if ".attn_q." in name or ".attn_k." in name:
            w[name] = w[name] * 8
        if not sub_norms and (".ffn_gate." in name or ".ffn_up." in name):
            w[name] = w[name] * 4
    return w
