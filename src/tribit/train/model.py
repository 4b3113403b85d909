"""A 2B-4T-style decoder built from BitLinear (docs/FORMATS.md 1.4): RMSNorm, attention
and FFN sub-norms, ReLU², NeoX RoPE, GQA, tied embeddings, no biases — the
training-time forward that tribit's runtime reproduces."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .bitlinear import BitLinear


@dataclass
class BitNetConfig:
    """Hyper-parameters, in tribit's vocabulary. TQ2_0 export needs n_embd and n_ff
    to be multiples of 256."""

    n_vocab: int = 512
    n_embd: int = 256
    n_ff: int = 512
    n_layer: int = 4
    n_head: int = 4
    n_head_kv: int = 2
    n_ctx: int = 256
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    def as_dict(self) -> dict:
        return asdict(self)

    def validate(self) -> None:
        """Raise ValueError on shapes the runtime or TQ2_0 cannot hold."""
        if self.n_embd % 256 or self.n_ff % 256:
            raise ValueError(
                f"n_embd ({self.n_embd}) and n_ff ({self.n_ff}) must be "
                "multiples of 256 (TQ2_0 blocks)"
            )
        if self.n_embd % self.n_head or self.n_head % self.n_head_kv:
            raise ValueError(
                f"n_head {self.n_head} must divide n_embd {self.n_embd} and be a "
                f"multiple of n_head_kv {self.n_head_kv}"
            )
        if self.head_dim % 2:
            raise ValueError(f"head_dim {self.head_dim} must be even (RoPE)")


class RMSNorm(nn.Module):
    """RMSNorm with a learned weight: x / sqrt(mean(x²) + eps) * w. `runtime_math`:
    the runtime's arithmetic, the sum of squares in float64, its mean rounded to
    float32, then (x * (1 / sqrt(mean + eps))) * w in float32."""

    def __init__(self, d: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))
        self.eps = eps
        self.runtime_math = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.runtime_math:
            mean = (x.double().square().sum(-1, keepdim=True) / x.shape[-1]).float()
        else:
            mean = x.pow(2).mean(-1, keepdim=True)
        return x * torch.rsqrt(mean + self.eps) * self.weight


def attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, f64: bool = False
) -> torch.Tensor:
    """Softmax attention of q (b, n_head, n, head_dim) over k, v (b, n_head_kv, m,
    head_dim), query head h reading kv head h // (n_head / n_head_kv), where `mask`
    (b, n, m) is True, or causally (the last n of m positions) when None.

    `f64`: computed in float64 and rounded to float32 once, as the runtime does
    (csrc/kernels.h), so that the outputs are the runtime's float32 values (up to
    ~1e-8-rare roundings; `BitNetLM.runtime_math`). Otherwise float32 SDPA (training:
    1.4x faster steps), whose sums in another order differ from the runtime's in the
    last bits, enough to move an int8 code now and then."""
    if not f64:
        return F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=None if mask is None else mask[:, None],
            is_causal=mask is None and q.shape[2] > 1,
            enable_gqa=q.shape[1] != k.shape[1],
        )
    group = q.shape[1] // k.shape[1]
    kd = k.double().repeat_interleave(group, dim=1)
    vd = v.double().repeat_interleave(group, dim=1)
    s = (q.double() @ kd.transpose(-1, -2)) * (1.0 / math.sqrt(q.shape[-1]))
    if mask is None:
        n, m = q.shape[2], k.shape[2]
        mask = torch.ones(n, m, dtype=torch.bool).tril(m - n)
    else:
        mask = mask[:, None]
    return (torch.softmax(s.masked_fill(~mask, float("-inf")), dim=-1) @ vd).float()


def rope_tables(n: int, head_dim: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin of shape (n, head_dim/2) for positions 0..n-1 (angles in float64)."""
    half = head_dim // 2
    inv = theta ** (-2.0 * torch.arange(half, dtype=torch.float64) / head_dim)
    ang = torch.arange(n, dtype=torch.float64)[:, None] * inv[None, :]
    return ang.cos().float(), ang.sin().float()


def rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """NeoX RoPE on x (batch, heads, seq, head_dim): pairs (i, i + head_dim/2).
    cos/sin: (seq, head_dim/2), or (batch, 1, seq, head_dim/2) for per-row positions."""
    half = x.shape[-1] // 2
    a, b = x[..., :half], x[..., half:]
    return torch.cat([a * cos - b * sin, a * sin + b * cos], dim=-1)


class Block(nn.Module):
    """One decoder layer: sub-LN attention and a ReLU² gated FFN with sub-LN."""

    def __init__(self, cfg: BitNetConfig):
        super().__init__()
        qdim, kvdim = cfg.n_head * cfg.head_dim, cfg.n_head_kv * cfg.head_dim
        self.cfg = cfg
        self.attn_norm = RMSNorm(cfg.n_embd, cfg.norm_eps)
        self.q = BitLinear(cfg.n_embd, qdim)
        self.k = BitLinear(cfg.n_embd, kvdim)
        self.v = BitLinear(cfg.n_embd, kvdim)
        self.attn_sub_norm = RMSNorm(qdim, cfg.norm_eps)
        self.o = BitLinear(qdim, cfg.n_embd)
        self.ffn_norm = RMSNorm(cfg.n_embd, cfg.norm_eps)
        self.gate = BitLinear(cfg.n_embd, cfg.n_ff)
        self.up = BitLinear(cfg.n_embd, cfg.n_ff)
        self.ffn_sub_norm = RMSNorm(cfg.n_ff, cfg.norm_eps)
        self.down = BitLinear(cfg.n_ff, cfg.n_embd)
        self.qkv: tuple[torch.Tensor, ...] | None = None  # see forward's keep_qkv
        self.runtime_math = False

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        cache: dict | None = None,
        mask: torch.Tensor | None = None,
        keep_qkv: bool = False,
    ) -> torch.Tensor:
        """x (b, n, n_embd) at the positions of `cos`/`sin`. `cache` (greedy decoding):
        keys/values of earlier positions, extended in place; with earlier positions
        present, x must be one token. `mask` (b, n, n), True where a token may attend,
        replaces the causal mask (training on packed, branching sequences).
        `keep_qkv`: keep the rotated queries, keys and values (b, heads, n, head_dim) in
        `self.qkv`, for losses on the attention pattern (`attention_logits`).
        `runtime_math`: attention in float64 (`attention`)."""
        c = self.cfg
        b, n, _ = x.shape
        h = self.attn_norm(x)
        q = self.q(h).view(b, n, c.n_head, c.head_dim).transpose(1, 2)
        k = self.k(h).view(b, n, c.n_head_kv, c.head_dim).transpose(1, 2)
        v = self.v(h).view(b, n, c.n_head_kv, c.head_dim).transpose(1, 2)
        q, k = rope(q, cos, sin), rope(k, cos, sin)
        self.qkv = (q, k, v) if keep_qkv else None
        if cache is not None:
            if "k" in cache:
                if n != 1:
                    raise ValueError("decoding with a cache takes one token at a time")
                k, v = torch.cat([cache["k"], k], dim=2), torch.cat([cache["v"], v], dim=2)
            cache["k"], cache["v"] = k, v
        a = attention(q, k, v, mask, self.runtime_math)
        a = a.transpose(1, 2).reshape(b, n, c.n_head * c.head_dim)
        x = x + self.o(self.attn_sub_norm(a))
        h = self.ffn_norm(x)
        f = F.relu(self.gate(h)).square() * self.up(h)
        return x + self.down(self.ffn_sub_norm(f))


def attention_logits(blk: Block, head: int, rows: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Log-probabilities of one head's attention in the last forward of `blk` (run
    with `keep_qkv`), for query rows `rows` ((r, 2): batch, position), over all key
    positions (r, n); `mask` (b, n, n) is the attention mask of that forward."""
    q, k, _ = blk.qkv
    kv_head = head // (q.shape[1] // k.shape[1])  # GQA: consecutive query heads share one
    b, i = rows[:, 0], rows[:, 1]
    s = (q[b, head, i, None, :] * k[b, kv_head]).sum(-1) / math.sqrt(q.shape[-1])
    return torch.log_softmax(s.masked_fill(~mask[b, i], float("-inf")), dim=-1)


class BitNetLM(nn.Module):
    """The whole decoder; `forward(tokens) -> logits (batch, seq, n_vocab)`.

    `runtime_math` (False while training): compute what the runtime computes, the
    way it does, to compare answers with tribit's question by question: attention in
    float64 (`attention`), RMSNorm's sum of squares in float64, BitLinear's gamma
    from a float64 mean, as `export_gguf` writes it. The training forward rounds
    these three differently in the last bits (and is 1.4x faster for the attention)."""

    def __init__(self, cfg: BitNetConfig):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.n_vocab, cfg.n_embd)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.norm = RMSNorm(cfg.n_embd, cfg.norm_eps)
        nn.init.normal_(self.embed.weight, std=0.02)
        for m in self.modules():
            if isinstance(m, BitLinear):
                nn.init.normal_(m.weight, std=0.02)
        self._rope: tuple[int, torch.Tensor, torch.Tensor] | None = None

    @property
    def runtime_math(self) -> bool:
        return self.norm.runtime_math

    @runtime_math.setter
    def runtime_math(self, on: bool) -> None:
        for m in self.modules():
            if isinstance(m, (RMSNorm, BitLinear, Block)):
                m.runtime_math = on

    def _tables(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self._rope is None or self._rope[0] < n:
            cos, sin = rope_tables(max(n, self.cfg.n_ctx), self.cfg.head_dim, self.cfg.rope_theta)
            self._rope = (cos.shape[0], cos, sin)
        return self._rope[1][:n], self._rope[2][:n]

    def hidden(
        self,
        tokens: torch.Tensor,
        caches: list[dict] | None = None,
        pos: int = 0,
        positions: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        keep_qkv: int | None = None,
    ) -> torch.Tensor:
        """Final hidden states after output_norm, (batch, seq, n_embd), of `tokens`
        at positions pos, pos+1, ... (`caches`: one dict per layer, for decoding).
        Packed training batches give each token's position (`positions`, (b, n)) and
        the attention `mask` (b, n, n) instead. `keep_qkv`: a layer whose queries,
        keys and values are kept (`Block.forward`)."""
        n = tokens.shape[1]
        if positions is not None:
            cos, sin = self._tables(int(positions.max()) + 1)
            cos, sin = cos[positions][:, None], sin[positions][:, None]
        else:
            cos, sin = self._tables(pos + n)
            cos, sin = cos[pos:], sin[pos:]
        x = self.embed(tokens)
        for i, blk in enumerate(self.blocks):
            x = blk(x, cos, sin, None if caches is None else caches[i], mask, i == keep_qkv)
        return self.norm(x)

    def head(self, h: torch.Tensor) -> torch.Tensor:
        """Tied output head: logits = h @ token_embd.T."""
        return h @ self.embed.weight.T

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.hidden(tokens))

    @torch.no_grad()
    def greedy(
        self, prompt: list[int], max_tokens: int, stop: set[int], cache: bool = True
    ) -> list[int]:
        """Greedy continuation of `prompt`. With `cache`, earlier keys and values are
        kept and each new token is one forward step; without, every token runs the
        training-time forward over the whole sequence. The two agree to float
        rounding, which can still move an int8 activation code by one and so break a
        near-tie between the two best tokens differently (with `runtime_math`, float64
        attention, they round to the same float32 values)."""
        if not cache:
            toks, out = list(prompt), []
            for _ in range(max_tokens):
                nxt = int(self(torch.tensor([toks]))[0, -1].argmax())
                if nxt in stop:
                    break
                out.append(nxt)
                toks.append(nxt)
            return out
        caches: list[dict] = [{} for _ in self.blocks]
        h = self.hidden(torch.tensor([list(prompt)]), caches)[:, -1]
        pos = len(prompt)
        out = []
        for _ in range(max_tokens):
            nxt = int(self.head(h)[0].argmax())
            if nxt in stop:
                break
            out.append(nxt)
            h = self.hidden(torch.tensor([[nxt]]), caches, pos)[:, -1]
            pos += 1
        return out
