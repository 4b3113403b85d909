"""`tribit.load` and `Model`: the public face of the native runtime."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .. import _core
from ..errors import ModelError, TribitError
from ..formats import GGUFReader
from ..formats.keys import (
    ATTN_K_NORM,
    ATTN_NORM,
    ATTN_Q_NORM,
    ATTN_SUB_NORM,
    FFN_NORM,
    FFN_SUB_NORM,
    OUTPUT,
    OUTPUT_NORM,
    PROJECTION,
    PROJECTIONS,
    TOKEN_EMBD,
    TokenizerKey,
    block_tensor,
)
from .config import ModelConfig, check_ctx, config_from_metadata
from .slots import SlotTable
from .weights import (
    GroupWeight,
    check_group_mode,
    check_head_type,
    check_tensors,
    dims,
    input_norms,
    read_f32,
    read_float_matrix,
    read_norm,
    read_projection,
    repack_float_matrix,
)

KV_TYPES = ("f16", "f32")
MAX_SEQ = 1 << 16


def default_threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


def max_threads() -> int:
    """The most worker threads `load` accepts: a few per CPU. More never helps (the forward
    pass is memory-bound) and an OS that cannot create them would fail mid-way."""
    return max(4, 4 * (os.cpu_count() or 1))


def check_threads(n_threads: int | None) -> int:
    """`n_threads` validated (None: `default_threads()`); ModelError with the reason."""
    if n_threads is None:
        return default_threads()
    if isinstance(n_threads, bool) or not isinstance(n_threads, (int, np.integer)):
        raise ModelError(f"n_threads must be an integer, got {n_threads!r}")
    cap = max_threads()
    if not 1 <= n_threads <= cap:
        raise ModelError(
            f"n_threads must be between 1 and {cap} (4 per CPU on this machine, which has "
            f"{os.cpu_count()}), got {n_threads}: more threads than cores only slow the "
            "forward pass down"
        )
    return int(n_threads)


def kv_cache_bytes(cfg: ModelConfig, n_seq: int, kv_type: str) -> int:
    """Bytes of the KV cache: K and V, n_layer x n_seq x n_ctx x (n_head_kv x head_dim)
    values of 2 (f16) or 4 (f32) bytes. Exact (Python integers never wrap)."""
    per = 2 if kv_type == "f16" else 4
    return 2 * cfg.n_layer * n_seq * cfg.n_ctx * cfg.n_head_kv * cfg.head_dim * per


def available_memory() -> int | None:
    """Memory this process could still get: MemAvailable + SwapFree (Linux), else the
    physical memory; None where unknown."""
    try:
        info = {}
        with open("/proc/meminfo") as f:
            for line in f:
                key, _, rest = line.partition(":")
                info[key] = int(rest.split()[0]) * 1024
        if "MemAvailable" in info:
            return info["MemAvailable"] + info.get("SwapFree", 0)
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, AttributeError):
        return None


def _check_memory(cfg: ModelConfig, n_seq: int, kv_type: str, n_threads: int) -> None:
    kv = kv_cache_bytes(cfg, n_seq, kv_type)
    # attention scratch: per thread, group x (n_ctx + 2 head_dim) doubles (model.cpp)
    scratch = n_threads * (cfg.n_head // cfg.n_head_kv) * (cfg.n_ctx + 2 * cfg.head_dim) * 8
    need = kv + scratch
    avail = available_memory()
    if avail is not None and need > avail:
        raise ModelError(
            f"the KV cache does not fit in memory: it needs {kv:,} bytes ({_human(kv)}: "
            f"n_layer {cfg.n_layer} x n_seq {n_seq} x n_ctx {cfg.n_ctx} x "
            f"{cfg.n_head_kv * cfg.head_dim} values x K and V x {kv_type}) plus {scratch:,} "
            f"bytes of attention scratch, and {avail:,} bytes ({_human(avail)}) are "
            "available; lower n_ctx or n_seq"
        )


def _human(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{n} B"
        n /= 1024
    return str(n)  # pragma: no cover


def check_arguments(
    n_threads: int | None = None,
    n_ctx: int | None = None,
    n_seq: int = 1,
    kv_type: str = "f16",
    isa: str | None = None,
    head_type: str | None = None,
    group_mode: str = "llama",
) -> int:
    """What `load` refuses before it reads any file (ModelError naming the argument);
    returns the thread count to use. n_ctx is checked against the model at load, here
    only against what the core supports."""
    if kv_type not in KV_TYPES:
        raise ModelError(f"kv_type must be one of {KV_TYPES}, got {kv_type!r}")
    if isinstance(n_seq, bool) or not isinstance(n_seq, (int, np.integer)):
        raise ModelError(f"n_seq must be an integer, got {n_seq!r}")
    if not 1 <= n_seq <= MAX_SEQ:
        raise ModelError(f"n_seq must be between 1 and {MAX_SEQ}, got {n_seq}")
    if n_ctx is not None:
        if isinstance(n_ctx, bool) or not isinstance(n_ctx, (int, np.integer)):
            raise ModelError(f"n_ctx must be an integer, got {n_ctx!r}")
        check_ctx(int(n_ctx))
    check_head_type(head_type)
    check_group_mode(group_mode)
    if isa is not None and isa not in _core.runnable_isas():
        raise ModelError(
            f"ISA {isa!r} cannot run on this CPU; available: {', '.join(_core.runnable_isas())}"
        )
    return check_threads(n_threads)


def load(
    path: str | os.PathLike | None = None,
    n_threads: int | None = None,
    n_ctx: int | None = None,
    kv_type: str = "f16",
    n_seq: int = 1,
    isa: str | None = None,
    head_type: str | None = None,
    cls: type[Model] | None = None,
    group_mode: str = "llama",
) -> Model:
    """Load a GGUF model; with no path, the embedded default model.

    n_threads: worker threads (default: the CPUs this process may use).
    n_ctx: context length per sequence (default: the trained one, at most 4096).
    kv_type: "f16" (default) or "f32" KV cache. n_seq: sequence slots (batched serving).
    isa: force a kernel variant ("generic", "avx2", ...); default: the best for this CPU.
    head_type: "q8_0" or "q6_k" repacks an F32/F16/BF16 token_embd/output once, here, into
    that smaller type (a faster, slightly lossy head; tied heads keep one copy); None
    (default) keeps the file's type, lossless. Q6_K needs n_embd % 256 == 0, Q8_0 % 32.
    group_mode: how Q2_0 / Q1_0 weights compute (docs/FORMATS.md 3.11): "llama" (default),
    activations quantized to Q8_0 blocks as llama.cpp does; "float", the float-activation
    reference (dequantized weights times float activations).
    cls: the class of the result, a subclass of Model (`tribit.load` passes the public
    `tribit.Model`, which adds the generation methods).
    """
    if path is None:
        from ..data import default_model_path

        path = default_model_path()
        if path is None:
            raise ModelError("no model path given and no embedded default model is installed")
    n_threads = check_arguments(n_threads, n_ctx, n_seq, kv_type, isa, head_type, group_mode)
    t0, rss0 = time.perf_counter(), _rss_bytes()
    reader = GGUFReader(path)
    try:
        return _build(
            reader,
            path,
            n_threads,
            n_ctx,
            kv_type,
            int(n_seq),
            isa,
            head_type,
            t0,
            rss0,
            cls or Model,
            group_mode,
        )
    except TribitError:
        raise
    except (MemoryError, ValueError, TypeError, RuntimeError, OverflowError, IndexError) as e:
        # what the native core or numpy raised about this file or these arguments: a
        # ModelError naming it, never a bare MemoryError or nanobind TypeError
        raise ModelError(
            f"{Path(path).name}: cannot load the model: {type(e).__name__}: {e}"
        ) from None


def _build(
    reader,
    path,
    n_threads,
    n_ctx,
    kv_type,
    n_seq,
    isa,
    head_type,
    t0,
    rss0,
    cls: type[Model],
    group_mode: str = "llama",
) -> Model:
    md = reader.metadata
    if TOKEN_EMBD not in reader.tensors:
        raise ModelError(f"missing tensor {TOKEN_EMBD!r}")
    emb_shape = reader.tensors[TOKEN_EMBD].shape
    if len(emb_shape) != 2:
        raise ModelError(f"{TOKEN_EMBD} must be 2-D, has shape {emb_shape}")
    n_vocab, n_embd_file = emb_shape
    has_output = OUTPUT in reader.tensors
    cfg = config_from_metadata(md, n_vocab, has_output, n_ctx)
    if n_embd_file != cfg.n_embd:
        raise ModelError(f"token_embd has {n_embd_file} columns, embedding_length is {cfg.n_embd}")
    check_vocab(md, cfg.n_vocab)
    # every tensor against the config, then the memory: before anything large is allocated
    check_tensors(reader, cfg)
    _check_memory(cfg, n_seq, kv_type, n_threads)
    native = _core.NativeModel(
        n_embd=cfg.n_embd,
        n_ff=cfg.n_ff,
        n_layer=cfg.n_layer,
        n_head=cfg.n_head,
        n_head_kv=cfg.n_head_kv,
        head_dim=cfg.head_dim,
        n_rot=cfg.n_rot,
        n_vocab=cfg.n_vocab,
        n_ctx=cfg.n_ctx,
        n_seq=n_seq,
        rope_theta=cfg.rope_theta,
        norm_eps=cfg.norm_eps,
        rope_neox=cfg.rope_type == "neox",
        act_relu2=cfg.act == "relu2",
        kv_f16=kv_type == "f16",
        n_threads=n_threads,
        isa=isa,
        group_f32=group_mode == "float",
    )
    types: dict[str, int] = {}
    n_norm_in = 0  # per-projection input norms loaded
    d = dims(cfg)
    for i in range(cfg.n_layer):
        sub, qk = cfg.sub_norms, cfg.qk_norm
        native.set_norms(
            i,
            read_norm(reader, i, ATTN_NORM, d),
            read_norm(reader, i, ATTN_SUB_NORM, d) if sub else None,
            read_norm(reader, i, FFN_NORM, d),
            read_norm(reader, i, FFN_SUB_NORM, d) if sub else None,
            read_norm(reader, i, ATTN_Q_NORM, d) if qk else None,
            read_norm(reader, i, ATTN_K_NORM, d) if qk else None,
        )
        for which, w_in in input_norms(reader, i, d).items():
            native.set_input_norm(i, PROJECTION[which].suffix, w_in)
            n_norm_in += 1
        for p in PROJECTIONS:
            w = read_projection(reader, block_tensor(i, p.suffix), p.shape(d))
            if isinstance(w, GroupWeight):
                native.set_group(i, p.suffix, w.raw, w.qtype)
            else:
                native.set_ternary(i, p.suffix, w.t, float(w.gamma))
            types[w.source_type] = types.get(w.source_type, 0) + 1
            del w  # one projection's int8 copy at a time
    head_shape = (cfg.n_vocab, cfg.n_embd)

    def head_matrix(name: str) -> tuple[np.ndarray, str]:
        # the head is read in full for every token: a copy of its own in huge pages,
        # unless it is repacked into one anyway
        raw, qtype = read_float_matrix(reader, name, head_shape, copy=head_type is None)
        return repack_float_matrix(
            raw,
            qtype,
            head_shape,
            head_type,
            name,
            q6_k=lambda x: _core.quantize_q6_k(x, n_threads),
        )

    emb, emb_type = head_matrix(TOKEN_EMBD)
    native.set_embedding(emb, emb_type, cfg.tied_head)
    head_qtype, embd_bytes = emb_type, int(emb.nbytes)
    if not cfg.tied_head:
        out, head_qtype = head_matrix(OUTPUT)
        native.set_output(out, head_qtype)
    native.set_output_norm(read_f32(reader, OUTPUT_NORM, (cfg.n_embd,)))
    load_s = time.perf_counter() - t0
    if not (isinstance(cls, type) and issubclass(cls, Model)):
        raise ModelError(f"cls must be a subclass of Model, got {cls!r}")
    model = cls(native, cfg, reader, Path(path), load_s, n_seq, n_threads, kv_type, types)
    model.head_type, model.embd_bytes = head_qtype, embd_bytes
    model.n_input_norms = n_norm_in
    rss1 = _rss_bytes()
    model.resident_bytes = rss1 - rss0 if rss0 is not None and rss1 is not None else None
    return model


def check_vocab(md: dict[str, Any], n_vocab: int) -> None:
    """The tokenizer must name exactly one token per row of `token_embd`: a tokenizer with
    more tokens yields ids the model cannot embed, one with fewer leaves rows that the model
    can generate and the tokenizer cannot print (llama.cpp refuses both as well)."""
    tokens = md.get(TokenizerKey.TOKENS)
    if isinstance(tokens, (list, tuple)) and len(tokens) != n_vocab:
        raise ModelError(
            f"the tokenizer has {len(tokens)} tokens but token_embd has {n_vocab} rows; "
            "they must match"
        )


def _rss_bytes() -> int | None:
    """Resident set size of this process (Linux /proc; None elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


class Model:
    """A loaded ternary model. Create with `tribit.load`."""

    def __init__(
        self,
        native,
        config: ModelConfig,
        reader: GGUFReader,
        path: Path,
        load_s: float,
        n_seq: int,
        n_threads: int,
        kv_type: str,
        weight_types: dict[str, int],
    ):
        self._native = native
        self.config = config
        self.path = path
        self.metadata: dict[str, Any] = reader.metadata
        self._reader = reader  # keeps the mapping behind zero-copy weights alive
        self.load_time_s = load_s
        self.n_seq = n_seq
        self.n_threads = n_threads
        self.kv_type = kv_type
        self._weight_types = weight_types
        self._tokenizer = None
        # growth of the process's resident memory while loading (None where unknown)
        self.resident_bytes: int | None = None
        # the head's type in memory (the file's, or what load(head_type=) made of it) and
        # the embedding's bytes in memory (gathered a row per token, not streamed)
        self.head_type: str = ""
        self.embd_bytes: int = 0
        # per-projection input norms in the blocks (BitNet-embedding: 7 per layer)
        self.n_input_norms: int = 0
        # which tokens each KV slot holds, and which slots generations have claimed
        self.slots = SlotTable(n_seq)

    # -- tokens ------------------------------------------------------------
    @property
    def tokenizer(self):
        """The tokenizer described by the file's metadata (built on first use)."""
        if self._tokenizer is None:
            from ..tokenizer import Tokenizer

            self._tokenizer = Tokenizer.from_gguf(self.metadata)
        return self._tokenizer

    def tokenize(self, text: str, add_bos: bool = True, special: bool = False) -> list[int]:
        return self.tokenizer.encode(text, add_bos=add_bos, special=special)

    def detokenize(self, tokens: Sequence[int]) -> str:
        return self.tokenizer.decode(list(tokens))

    # -- running -----------------------------------------------------------
    @property
    def n_ctx(self) -> int:
        return self.config.n_ctx

    @property
    def isa(self) -> str:
        return self._native.isa

    def forward(
        self,
        tokens: Sequence[int],
        pos: Sequence[int] | int | None = None,
        seq: Sequence[int] | int = 0,
        logits: str | Sequence[bool] = "last",
        hidden: bool = False,
    ) -> np.ndarray:
        """Run a batch: token i at position pos[i] of sequence seq[i].

        `pos` as an int is the start of a consecutive run; None continues each
        sequence where it stopped. Token i attends to the cache entries of its
        sequence at positions <= pos[i]. `logits`: "last" (one row per distinct
        sequence, its last token, in order of first appearance), "all", or a bool
        per token: which rows come back. Returns float32 (rows, n_vocab); with
        `hidden`, the rows' final-norm hidden states (rows, n_embd) instead of logits,
        without computing the head (what embeddings pool).
        """
        tok = np.ascontiguousarray(tokens, dtype=np.int32).reshape(-1)
        n = tok.size
        if n == 0:
            raise ModelError("forward needs at least one token")
        if isinstance(seq, (int, np.integer)):
            seq_a = np.full(n, int(seq), np.int32)
        else:
            seq_a = np.ascontiguousarray(seq, dtype=np.int32).reshape(-1)
        if seq_a.size != n:
            raise ModelError(f"seq has {seq_a.size} entries for {n} tokens")
        if pos is None or isinstance(pos, (int, np.integer)):
            pos_a = np.empty(n, np.int32)
            nxt: dict[int, int] = {}
            for i, s in enumerate(seq_a.tolist()):
                if s not in nxt:
                    if not 0 <= s < self.n_seq:
                        raise ModelError(f"sequence {s} out of range [0, {self.n_seq})")
                    nxt[s] = self._native.n_past(s) if pos is None else int(pos)
                pos_a[i] = nxt[s]
                nxt[s] += 1
        else:
            pos_a = np.ascontiguousarray(pos, dtype=np.int32).reshape(-1)
            if pos_a.size != n:
                raise ModelError(f"pos has {pos_a.size} entries for {n} tokens")
        if isinstance(logits, str):
            want = np.zeros(n, np.uint8)
            if logits == "all":
                want[:] = 1
            elif logits == "last":
                last: dict[int, int] = {}
                for i, s in enumerate(seq_a.tolist()):
                    last[s] = i
                want[list(last.values())] = 1
            else:
                raise ModelError(
                    f"logits must be 'last', 'all' or a bool per token, got {logits!r}"
                )
            rows_order = None
            if logits == "last":
                # rows come out in batch order; reorder to first appearance of each seq
                firsts = list(dict.fromkeys(seq_a.tolist()))
                idx = sorted(last[s] for s in firsts)
                rows_order = [idx.index(last[s]) for s in firsts]
        else:
            want = np.ascontiguousarray(logits, dtype=np.uint8).reshape(-1)
            if want.size != n:
                raise ModelError(f"logits mask has {want.size} entries for {n} tokens")
            rows_order = None
        try:
            out = self._native.forward(tok, pos_a, seq_a, want, bool(hidden))
        except (ValueError, RuntimeError, MemoryError) as e:  # bad batch, out of memory
            self.slots.forget_from(pos_a.tolist(), seq_a.tolist())
            raise ModelError(str(e)) from None
        self.slots.record(tok.tolist(), pos_a.tolist(), seq_a.tolist())
        return out[rows_order] if rows_order is not None else out

    def logits(self, tokens: Sequence[int]) -> np.ndarray:
        """Logits of every position of `tokens` on a fresh state (uses slot 0)."""
        self.reset(0)
        try:
            return self.forward(tokens, 0, 0, logits="all")
        finally:
            self.reset(0)

    def reset(self, seq: int | None = None) -> None:
        """Clear one sequence slot, or all with None."""
        self._native.reset(-1 if seq is None else self._check_seq(seq))
        self.slots.clear(seq)

    def trim(self, seq: int, n: int) -> None:
        """Keep the first n positions of a sequence's cache."""
        self._native.trim(self._check_seq(seq), max(0, int(n)))
        self.slots.trim(seq, int(n))

    def n_past(self, seq: int = 0) -> int:
        """Positions written in slot `seq` (valid or not: see cached_tokens)."""
        return self._native.n_past(self._check_seq(seq))

    def cached_tokens(self, seq: int = 0) -> list[int]:
        """The token ids whose K/V rows slot `seq` holds as a valid prefix, in order: what
        a new prompt starting with them does not need to recompute."""
        return self.slots.tokens(self._check_seq(seq))

    def profile(self, reset: bool = False) -> dict[str, tuple[float, int]]:
        """Wall seconds and calls per op of the forward passes so far (since the
        last `reset=True`): embed, norm, quantize, matmul_qkv, rope, kv_store,
        attention, matmul_out, matmul_gate_up, activation, matmul_down, residual,
        head. Each op is timed around its whole parallel section."""
        out = {op: (float(s), int(c)) for op, (s, c) in self._native.profile().items()}
        if reset:
            self._native.reset_profile()
        return out

    def _check_seq(self, seq: int) -> int:
        if not 0 <= seq < self.n_seq:
            raise ModelError(f"sequence {seq} out of range [0, {self.n_seq})")
        return int(seq)

    def describe(self) -> dict[str, Any]:
        """What `tribit info -m` prints: architecture, sizes, weight types, memory."""
        c = self.config
        return {
            "path": str(self.path),
            "arch": c.arch,
            "name": c.name,
            "hparams": {k: v for k, v in c.as_dict().items() if k not in ("arch", "name")},
            "weight_types": dict(self._weight_types),
            "head_type": self.head_type,
            "input_norms": self.n_input_norms,
            "file_bytes": self.path.stat().st_size,
            "weight_bytes": int(self._native.weight_bytes),
            "kv_bytes": int(self._native.kv_bytes),
            "resident_bytes_after_load": self.resident_bytes,
            "isa": self.isa,
            "n_threads": self.n_threads,
            "load_time_s": round(self.load_time_s, 4),
        }

    def __repr__(self) -> str:
        c = self.config
        return (
            f"<tribit.Model {c.arch} n_layer={c.n_layer} n_embd={c.n_embd} "
            f"n_vocab={c.n_vocab} from {self.path.name}>"
        )
