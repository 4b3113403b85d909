"""Model layouts for `tribit dummy`: bitnet.cpp's dummy size table and real model shapes.

The bitnet.cpp rows mirror `utils/generate-dummy-bitnet-model.py` (docs/FORMATS.md 4.1): arch
`bitnet`, multi-head attention (KV heads = heads), 32002-token vocabulary. The real rows are the
shapes of the published checkpoints (docs/FORMATS.md §2).
"""

from __future__ import annotations

from dataclasses import dataclass

from tribit.errors import FormatError
from tribit.formats.keys import QK_NORM_ARCHS, SUB_NORM_ARCHS, Arch, PoolingType


@dataclass(frozen=True)
class Layout:
    """Shape and hyper-parameters of one model layout (shared vocabulary)."""

    name: str
    arch: str  # GGUF general.architecture
    n_embd: int
    n_ff: int
    n_layer: int
    n_head: int
    n_head_kv: int
    n_vocab: int
    n_ctx_train: int = 2048
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    tied: bool = True  # False: an `output` head tensor is written
    source: str = "bitnet.cpp generate-dummy-bitnet-model.py"
    key_length: int = 0  # head_dim where it is not n_embd / n_head (Qwen3)
    norm_in: bool = False  # per-projection input norms (BitNet-embedding)
    pooling: int | None = None  # `<arch>.pooling_type` of an embedding model
    qtype: str | None = None  # default storage of the projections (None: the writer's default)
    head: str | None = None  # default storage of token_embd / output (None: f16)

    @property
    def head_dim(self) -> int:
        """Per-head width."""
        return self.key_length or self.n_embd // self.n_head

    def n_params(self) -> int:
        """Parameter count (ternary projections + embeddings + norms + head)."""
        d_q, d_kv = self.n_head * self.head_dim, self.n_head_kv * self.head_dim
        per_layer = (
            2 * d_q * self.n_embd
            + 2 * d_kv * self.n_embd
            + 3 * self.n_embd * self.n_ff
            + 2 * self.n_embd
        )
        per_layer += (d_q + self.n_ff) if self.arch in SUB_NORM_ARCHS else 0
        per_layer += 2 * self.head_dim if self.arch in QK_NORM_ARCHS else 0
        per_layer += (5 * self.n_embd + d_q + self.n_ff) if self.norm_in else 0
        head = 0 if self.tied else self.n_vocab * self.n_embd
        return self.n_layer * per_layer + self.n_vocab * self.n_embd + self.n_embd + head


def _bonsai(
    size: str, n_embd: int, n_ff: int, n_layer: int, n_head: int, n_ctx: int, tied: bool
) -> Layout:
    # PrismML's Ternary Bonsai (Qwen3 shapes; every matrix Q2_0, norms f32, q/k norms)
    return Layout(
        f"bonsai-{size}",
        Arch.QWEN3,
        n_embd,
        n_ff,
        n_layer,
        n_head,
        8,
        151936,
        n_ctx_train=n_ctx,
        rope_theta=1e6,
        norm_eps=1e-6,
        tied=tied,
        key_length=128,
        qtype="q2_0",
        head="q2_0",
        source=_BONSAI,
    )


_BONSAI = "HF prism-ml/Ternary-Bonsai-*-gguf model cards (base Qwen3-*; docs/FORMATS.md 3.11)"


def _bitnet_cpp(name: str, n_embd: int, n_ff: int, n_layer: int, n_head: int) -> Layout:
    return Layout(name, Arch.BITNET, n_embd, n_ff, n_layer, n_head, n_head, 32002)


_REAL = "published checkpoint shape (docs/FORMATS.md §2)"

#: name -> Layout, in display order.
LAYOUTS: dict[str, Layout] = {
    lay.name: lay
    for lay in (
        _bitnet_cpp("125M", 768, 3072, 11, 12),
        _bitnet_cpp("350M", 1024, 3072, 24, 16),
        _bitnet_cpp("1B", 2048, 3584, 24, 32),
        _bitnet_cpp("1.5B", 1536, 9216, 28, 32),
        _bitnet_cpp("2.7B", 3072, 7680, 24, 32),
        _bitnet_cpp("3.8B", 3840, 8192, 24, 32),
        _bitnet_cpp("7B", 4096, 12032, 32, 32),
        _bitnet_cpp("13B", 5120, 13824, 40, 40),
        _bitnet_cpp("30B", 6656, 16384, 60, 52),
        _bitnet_cpp("70B", 8192, 24576, 80, 64),
        _bitnet_cpp("100B", 8192, 45568, 72, 64),
        Layout("large", Arch.BITNET, 1536, 4096, 24, 16, 16, 32002, source=_REAL),
        Layout("3B", Arch.BITNET, 3200, 8640, 26, 32, 32, 32002, source=_REAL),
        Layout(
            "2B-4T",
            Arch.BITNET_B158,
            2560,
            6912,
            30,
            20,
            5,
            128256,
            n_ctx_train=4096,
            rope_theta=500000.0,
            source=_REAL,
        ),
        Layout(
            "8B",
            Arch.LLAMA,
            4096,
            14336,
            32,
            32,
            8,
            128256,
            n_ctx_train=8192,
            rope_theta=500000.0,
            tied=False,
            source=_REAL,
        ),
        # microsoft/bitnet-embedding-0.6b as bitnet.cpp's converter writes it (Qwen3 with
        # per-projection input norms, no head, last-token pooling; docs/FORMATS.md 1.6);
        # vocabulary: Qwen3-Embedding's 151669 [UNCONFIRMED for this checkpoint]
        Layout(
            "bitnet-embedding-0.6b",
            Arch.QWEN3,
            1024,
            3072,
            28,
            16,
            8,
            151669,
            n_ctx_train=32768,
            rope_theta=1e6,
            norm_eps=1e-6,
            key_length=128,
            norm_in=True,
            pooling=PoolingType.LAST,
            source="bitnet.cpp docs/bitnet-embeddings-qwen3-gguf-conversion.md",
        ),
        # Ternary Bonsai: cards give base model, vocab 151936, layers / heads (4B, 8B), context
        # and tying (from the non-embedding parameter counts); n_ff, theta and eps are the
        # Qwen3 base models' (docs/FORMATS.md 3.11)
        _bonsai("1.7B", 2048, 6144, 28, 16, 32768, tied=True),
        _bonsai("4B", 2560, 9728, 36, 32, 32768, tied=True),
        _bonsai("8B", 4096, 12288, 36, 32, 65536, tied=False),
    )
}


def get_layout(name: str) -> Layout:
    """Look a layout up by name (case-insensitive); FormatError listing the names otherwise."""
    for key, lay in LAYOUTS.items():
        if key.lower() == name.lower():
            return lay
    raise FormatError(f"unknown layout {name!r}; choose one of {', '.join(LAYOUTS)}")
