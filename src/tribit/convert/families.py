"""Per-family mapping of Hugging Face checkpoints to GGUF tensors and hyper-parameters.

Families (detected by `hf.detect_family`, docs/FORMATS.md §2):

- `bitnet-b1.58`: microsoft/bitnet-b1.58-2B-4T (packed uint8 + `weight_scale`, multiply) and
  -bf16 (float masters) -> arch `bitnet-b1.58`, ReLU², sub-norms, NeoX RoPE, tied head.
- `1bitllm`: 1bitLLM bitnet_b1_58-large/-3B (float masters, `inner_attn_ln`/`ffn_layernorm`)
  -> arch `bitnet`, SiLU, NeoX RoPE, tied head.
- `llama-bitnet`: Llama3-8B-1.58, Falcon3-1.58bit, Falcon-E (packed + `weight_scale`, divide)
  -> arch `llama`, SiLU, no sub-norms, normal RoPE with Q/K rows permuted exactly as
  llama.cpp's `convert_hf_to_gguf.py` `LlamaModel.permute`, untied `output`.
- `bitnet-embedding`: microsoft/bitnet-embedding-0.6b (model_type qwen3, float masters, an
  input RMSNorm per projection) -> arch `qwen3` with `<proj>_norm_in` norms, q/k norms, no
  head, `pooling_type`, EOS appended (docs/FORMATS.md 2.7).

Each projection becomes (t int8, gamma f32). Packed weights unpack (docs/FORMATS.md 2.1) with the
scale convention of `quantization_config.linear_class`: autobitlinear multiplies, bitlinear
divides; when absent, the family's bitnet.cpp convention (multiply for 2B-4T, divide for
Llama). Float weights that already hold exactly {-g, 0, +g} keep t and g; other float masters
are ternarized with absmean (docs/FORMATS.md 1.1), as online BitLinear does.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from tribit.errors import FormatError
from tribit.formats.keys import (
    ATTN_K_NORM,
    ATTN_NORM,
    ATTN_Q_NORM,
    ATTN_SUB_NORM,
    FFN_NORM,
    FFN_SUB_NORM,
    INPUT_NORM,
    LLM,
    OUTPUT,
    OUTPUT_NORM,
    PROJECTIONS,
    QK_NORM_ARCHS,
    TOKEN_EMBD,
    Arch,
    Dims,
    Norm,
    PoolingType,
    TokenizerKey,
    arch_key,
    block_tensor,
    embed_prompt_key,
)
from tribit.quant import absmean_ternarize, as_ternary, unpack_hf

from .hf import SUPPORTED, Checkpoint, detect_family
from .writer import ModelPlan, TensorPlan

log = logging.getLogger("tribit.convert")

_HF_PROJ = {  # projection (keys.PROJECTIONS) -> HF module under model.layers.N.
    "q": "self_attn.q_proj",
    "k": "self_attn.k_proj",
    "v": "self_attn.v_proj",
    "o": "self_attn.o_proj",
    "gate": "mlp.gate_proj",
    "up": "mlp.up_proj",
    "down": "mlp.down_proj",
}
_SUB_NORMS = {  # family -> (HF module under model.layers.N., GGUF norm)
    "bitnet-b1.58": (
        ("self_attn.attn_sub_norm", ATTN_SUB_NORM),
        ("mlp.ffn_sub_norm", FFN_SUB_NORM),
    ),
    "1bitllm": (("self_attn.inner_attn_ln", ATTN_SUB_NORM), ("mlp.ffn_layernorm", FFN_SUB_NORM)),
    "llama-bitnet": (),
    "bitnet-embedding": (),
}
_ACT = {"bitnet-b1.58": "relu2", "1bitllm": "silu", "llama-bitnet": "silu"}
EMBEDDING = "bitnet-embedding"
_ACT[EMBEDDING] = "silu"


@dataclass(frozen=True)
class HParams:
    """Hyper-parameters read from config.json (shared vocabulary)."""

    n_embd: int
    n_ff: int
    n_layer: int
    n_head: int
    n_head_kv: int
    head_dim: int
    n_ctx_train: int
    rope_theta: float
    norm_eps: float
    tied: bool
    rope_scaling: tuple[str, float] | None


def _int(config: dict, key: str, default: int | None = None) -> int:
    v = config.get(key, default)
    if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
        raise FormatError(f"config.json: {key} must be a positive integer, got {v!r}")
    return v


def read_hparams(config: dict, family: str) -> HParams:
    """Validate and collect the hyper-parameters of `config` for `family`."""
    act = config.get("hidden_act", "silu")
    if act != _ACT[family]:
        raise FormatError(
            f"config.json: hidden_act {act!r}; the {family} family uses {_ACT[family]!r}"
        )
    for key in ("attention_bias", "mlp_bias"):
        if config.get(key):
            raise FormatError(f"config.json: {key} is true; biases are not supported")
    layer_types = config.get("layer_types") or []
    if config.get("use_sliding_window") or any(t != "full_attention" for t in layer_types):
        raise FormatError("config.json: sliding-window attention is not supported")
    embedding = family == EMBEDDING
    n_embd = _int(config, "hidden_size")
    n_head = _int(config, "num_attention_heads")
    n_head_kv = _int(config, "num_key_value_heads", n_head)
    head_dim = config.get("head_dim") or n_embd // n_head
    if n_head % n_head_kv or head_dim % 2:
        raise FormatError(
            f"config.json: {n_head} heads, {n_head_kv} KV heads, head_dim "
            f"{head_dim}: heads must be a multiple of KV heads, head_dim even"
        )
    rope = config.get("rope_parameters") or {}  # transformers >= 5 moves rope_theta here
    theta = config.get("rope_theta", rope.get("rope_theta"))
    if theta is None:
        theta = 500000.0 if family == "bitnet-b1.58" else 10000.0
    scaling = config.get("rope_scaling") or None
    rope_type = (scaling or rope).get("rope_type", (scaling or {}).get("type", "default"))
    if rope_type in ("default", None):
        rope_scaling = None
    elif rope_type == "linear":
        rope_scaling = ("linear", float((scaling or rope)["factor"]))
    else:
        raise FormatError(
            f"config.json: rope scaling {rope_type!r} is not supported (only none and 'linear')"
        )
    tied_default = family != "llama-bitnet"
    return HParams(
        n_embd=n_embd,
        n_ff=_int(config, "intermediate_size"),
        n_layer=_int(config, "num_hidden_layers"),
        n_head=n_head,
        n_head_kv=n_head_kv,
        head_dim=int(head_dim),
        # Qwen3Config's defaults (and bitnet.cpp's embedding converter's context) for qwen3
        n_ctx_train=_int(config, "max_position_embeddings", 32768 if embedding else 2048),
        rope_theta=float(theta),
        norm_eps=float(config.get("rms_norm_eps", 1e-6 if embedding else 1e-5)),
        tied=bool(config.get("tie_word_embeddings", tied_default)),
        rope_scaling=rope_scaling,
    )


def permute_qk(w: np.ndarray, n_head: int, n_head_kv: int | None = None) -> np.ndarray:
    """llama.cpp's `LlamaModel.permute` (convert_hf_to_gguf.py): reorder the rows of a Q or K
    projection from HF's rotate-half RoPE pairing (i, i + d/2) to GGML's interleaved pairing
    (2i, 2i + 1), per head. Pass n_head_kv for K (GQA)."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return (
        w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
        .swapaxes(1, 2)
        .reshape(w.shape)
    )


def gguf_hparams(hp: HParams, n_vocab: int, arch: str) -> dict[str, object]:
    """The `<arch>.*` metadata keys (without the prefix) of docs/FORMATS.md 3.3."""
    out: dict[str, object] = {
        LLM.VOCAB_SIZE: n_vocab,
        LLM.CONTEXT_LENGTH: hp.n_ctx_train,
        LLM.EMBEDDING_LENGTH: hp.n_embd,
        LLM.BLOCK_COUNT: hp.n_layer,
        LLM.FEED_FORWARD_LENGTH: hp.n_ff,
        LLM.HEAD_COUNT: hp.n_head,
        LLM.HEAD_COUNT_KV: hp.n_head_kv,
        LLM.LAYERNORM_RMS_EPS: hp.norm_eps,
        LLM.ROPE_DIMENSION_COUNT: hp.head_dim,
        LLM.ROPE_FREQ_BASE: hp.rope_theta,
    }
    if hp.head_dim * hp.n_head != hp.n_embd or arch in QK_NORM_ARCHS:  # Qwen3 files say it
        out[LLM.KEY_LENGTH] = hp.head_dim
        out[LLM.VALUE_LENGTH] = hp.head_dim
    if hp.rope_scaling:
        out[LLM.ROPE_SCALING_TYPE], out[LLM.ROPE_SCALING_FACTOR] = hp.rope_scaling
    return out


class _Projection:
    """Loads one HF projection as (t, gamma), packed or float."""

    def __init__(
        self,
        ckpt: Checkpoint,
        hf_name: str,
        shape: tuple[int, int],
        multiply: bool,
        permute: tuple[int, int] | None = None,
    ):
        self.ckpt, self.hf_name, self.shape = ckpt, hf_name, shape
        self.multiply, self.permute = multiply, permute
        self.weight = f"{hf_name}.weight"
        self.packed = ckpt.dtype(self.weight) == "U8"
        m, k = shape
        want = ((m + 3) // 4, k) if self.packed else shape
        if ckpt.shape(self.weight) != want:
            raise FormatError(
                f"{self.weight}: shape {list(ckpt.shape(self.weight))}, expected "
                f"{list(want)}{' (packed uint8)' if self.packed else ''}"
            )

    def gamma(self) -> float:
        """The exact scale; cheap for packed weights (reads weight_scale only)."""
        return self._packed_gamma() if self.packed else self.load()[1]

    def _packed_gamma(self) -> np.float32:
        name = f"{self.hf_name}.weight_scale"
        ws = self.ckpt.read_f32(name).reshape(-1)
        if ws.size != 1:
            raise FormatError(f"{name}: {ws.size} values; only one scale per tensor is supported")
        s = np.float32(ws[0])
        if not np.isfinite(s) or s <= 0:
            raise FormatError(f"{name}: scale {s} is not a positive finite number")
        return s if self.multiply else np.float32(1.0) / s

    def load(self) -> tuple[np.ndarray, np.float32]:
        if self.packed:
            try:  # unpack_hf refuses code 3 (not a ternary value)
                t = unpack_hf(self.ckpt.read(self.weight), self.shape[0])
            except ValueError as e:
                raise FormatError(f"{self.weight}: {e}") from e
            t = np.ascontiguousarray(t, dtype=np.int8)
            gamma = self._packed_gamma()
        else:
            w = self.ckpt.read_f32(self.weight)
            exact = as_ternary(w)
            t, gamma = exact if exact is not None else absmean_ternarize(w)
            gamma = np.float32(gamma)
        if self.permute:
            t = np.ascontiguousarray(permute_qk(t, *self.permute))
        return t, gamma


def _norm(ckpt: Checkpoint, hf_name: str, width: int):
    if ckpt.shape(hf_name) != (width,):
        raise FormatError(f"{hf_name}: shape {list(ckpt.shape(hf_name))}, expected [{width}]")
    return lambda: ckpt.read_f32(hf_name)


def build_plan(ckpt: Checkpoint, tokenizer: dict[str, object], name: str) -> ModelPlan:
    """Map a checkpoint to a `ModelPlan` (no tensor data is read except packed scales' size)."""
    family = detect_family(ckpt.config)
    if family == EMBEDDING:
        return _embedding_plan(ckpt, tokenizer, name)
    arch = SUPPORTED[family][0]
    hp = read_hparams(ckpt.config, family)
    qc = ckpt.config.get("quantization_config") or {}
    # explicit linear_class wins; without it, what bitnet.cpp's converters do per family
    # (BitnetModel multiplies by weight_scale, LlamaModel divides)
    default_class = "autobitlinear" if family == "bitnet-b1.58" else "bitlinear"
    linear_class = qc.get("linear_class", default_class)
    if linear_class not in ("autobitlinear", "bitlinear"):
        raise FormatError(
            f"config.json: quantization_config.linear_class {linear_class!r} is "
            "not 'autobitlinear' or 'bitlinear'"
        )
    multiply = linear_class == "autobitlinear"
    dims = Dims.of(hp.n_embd, hp.n_ff, hp.n_head, hp.n_head_kv, hp.head_dim)
    permutes = {}
    if family == "llama-bitnet":  # normal RoPE in GGML: permute Q/K like llama.cpp
        permutes = {"q": (hp.n_head, hp.n_head), "k": (hp.n_head, hp.n_head_kv)}

    embd = "model.embed_tokens.weight"
    n_vocab, width = ckpt.shape(embd)
    if width != hp.n_embd:
        raise FormatError(f"{embd}: width {width}, expected hidden_size {hp.n_embd}")
    tensors = [
        TensorPlan(TOKEN_EMBD, (n_vocab, hp.n_embd), "embd", load=lambda: ckpt.read_f32(embd))
    ]

    def norm(i: int, hf_name: str, gguf: Norm) -> TensorPlan:
        (width,) = gguf.shape(dims)
        return TensorPlan(
            block_tensor(i, gguf.suffix), (width,), "norm", load=_norm(ckpt, hf_name, width)
        )

    for i in range(hp.n_layer):
        pre = f"model.layers.{i}."
        tensors.append(norm(i, pre + "input_layernorm.weight", ATTN_NORM))
        for p in PROJECTIONS:
            shape = p.shape(dims)
            proj = _Projection(
                ckpt, pre + _HF_PROJ[p.which], shape, multiply, permutes.get(p.which)
            )
            gamma = proj._packed_gamma() if proj.packed else proj.gamma
            tensors.append(
                TensorPlan(
                    block_tensor(i, p.suffix), shape, "ternary", load_ternary=proj.load, gamma=gamma
                )
            )
        tensors.append(norm(i, pre + "post_attention_layernorm.weight", FFN_NORM))
        for hf_mod, gguf in _SUB_NORMS[family]:
            tensors.append(norm(i, f"{pre}{hf_mod}.weight", gguf))
    tensors.append(
        TensorPlan(
            OUTPUT_NORM, (hp.n_embd,), "norm", load=_norm(ckpt, "model.norm.weight", hp.n_embd)
        )
    )
    if not hp.tied:
        head = "lm_head.weight"
        if head not in ckpt:
            raise FormatError(f"{ckpt.dir}: tie_word_embeddings is false but {head} is missing")
        if ckpt.shape(head) != (n_vocab, hp.n_embd):
            raise FormatError(
                f"{head}: shape {list(ckpt.shape(head))}, expected {[n_vocab, hp.n_embd]}"
            )
        if family != "llama-bitnet":
            log.warning("untied lm_head: written as `output`; bitnet.cpp ignores it for %s", arch)
        tensors.append(
            TensorPlan(OUTPUT, (n_vocab, hp.n_embd), "head", load=lambda: ckpt.read_f32(head))
        )
    return ModelPlan(
        arch=arch,
        name=name,
        hparams=gguf_hparams(hp, n_vocab, arch),
        tensors=tensors,
        tokenizer=tokenizer,
    )


# --- BitNet-embedding (docs/FORMATS.md 2.7) ------------------------------------------------

# sentence-transformers' Pooling flags -> the GGUF pooling type (what llama.cpp computes)
_ST_POOLING = {
    "pooling_mode_lasttoken": PoolingType.LAST,
    "pooling_mode_mean_tokens": PoolingType.MEAN,
    "pooling_mode_cls_token": PoolingType.CLS,
}
_ST_UNSUPPORTED = (
    "pooling_mode_max_tokens",
    "pooling_mode_mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens",
)
_PROMPT_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")


def _json(path: Path) -> object:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise FormatError(f"{path}: invalid JSON: {e}") from e


def sentence_transformers_pooling(hf_dir: Path) -> PoolingType | None:
    """The pooling of the checkpoint's sentence-transformers modules (`modules.json` ->
    the Pooling module's `config.json`), None when there is none; FormatError for modules
    tribit cannot reproduce (a Dense projection after pooling, max or weighted pooling)."""
    path = hf_dir / "modules.json"
    if not path.is_file():
        return None
    modules = _json(path)
    if not isinstance(modules, list):
        raise FormatError(f"{path}: expected a list of modules")
    for mod in modules:
        kind = str(mod.get("type", "")) if isinstance(mod, dict) else ""
        if kind.endswith("Dense"):
            raise FormatError(
                f"{path}: a Dense module after pooling ({kind}) is not converted; the "
                "embeddings would miss it"
            )
    for mod in modules:
        if not (isinstance(mod, dict) and str(mod.get("type", "")).endswith("Pooling")):
            continue
        cfg_path = (hf_dir / str(mod.get("path", "")) / "config.json").resolve()
        if not cfg_path.is_relative_to(hf_dir.resolve()) or not cfg_path.is_file():
            return None
        cfg = _json(cfg_path)
        if not isinstance(cfg, dict):
            raise FormatError(f"{cfg_path}: expected a JSON object")
        bad = [k for k in _ST_UNSUPPORTED if cfg.get(k)]
        modes = [p for k, p in _ST_POOLING.items() if cfg.get(k)]
        if bad or len(modes) > 1:
            raise FormatError(
                f"{cfg_path}: pooling {', '.join(bad) or 'of several modes at once'} is not "
                "supported (last, mean or cls)"
            )
        return modes[0] if modes else None
    return None


def sentence_transformers_prompts(hf_dir: Path) -> dict[str, str]:
    """Named input prompts (`config_sentence_transformers.json` `prompts`, e.g. Qwen3-Embedding's
    "query" instruction); empty ones are left out."""
    path = hf_dir / "config_sentence_transformers.json"
    if not path.is_file():
        return {}
    cfg = _json(path)
    prompts = cfg.get("prompts") if isinstance(cfg, dict) else None
    if not isinstance(prompts, dict):
        return {}
    out = {}
    for k, v in prompts.items():
        if not isinstance(v, str):
            raise FormatError(f"{path}: prompt {k!r} is not a string")
        if not _PROMPT_NAME.fullmatch(str(k)):
            raise FormatError(f"{path}: prompt name {k!r} (letters, digits, _ and - only)")
        if v:
            out[str(k)] = v
    return out


def _template_ends(spec: object) -> tuple[str | None, str | None]:
    """The special tokens a tokenizer.json post-processor puts before and after a single
    text (None: nothing there)."""
    if isinstance(spec, dict):
        if spec.get("type") == "TemplateProcessing":
            single = spec.get("single") or []
            single = single if isinstance(single, list) else []

            def special(item: object) -> str | None:
                if isinstance(item, dict) and isinstance(item.get("SpecialToken"), dict):
                    return item["SpecialToken"].get("id")
                return None

            return (special(single[0]), special(single[-1])) if single else (None, None)
        for proc in spec.get("processors") or []:  # a Sequence post-processor
            ends = _template_ends(proc)
            if ends != (None, None):
                return ends
    return None, None


def embedding_tokenizer(hf_dir: Path, md: dict[str, object]) -> dict[str, object]:
    """Tokenizer metadata of a BitNet-embedding model: the special tokens the checkpoint's
    tokenizer puts around a text, exactly. EOS is appended to every text (`add_eos_token`)
    and is the token the post-processor appends, else `<|endoftext|>` as bitnet.cpp's
    converter sets (not Qwen's chat end `<|im_end|>`, which tokenizer_config.json may name);
    BOS only when the post-processor prepends one (Qwen's config.json names a bos_token_id
    its tokenizer never adds)."""
    ids = {t: i for i, t in enumerate(md[TokenizerKey.TOKENS])}
    spec = _json(hf_dir / "tokenizer.json") if (hf_dir / "tokenizer.json").is_file() else {}
    first, last = _template_ends(spec.get("post_processor") if isinstance(spec, dict) else None)
    name = last if last in ids else "<|endoftext|>"
    out = dict(md)
    if name in ids:
        out[TokenizerKey.EOS_ID] = ids[name]
    elif TokenizerKey.EOS_ID in md:
        log.warning(
            "no <|endoftext|> token and no end token in the tokenizer's post-processor: "
            "texts end with the tokenizer's EOS %r",
            md[TokenizerKey.TOKENS][md[TokenizerKey.EOS_ID]],
        )
    else:
        raise FormatError(
            f"{hf_dir}: the tokenizer has no end-of-text token: last-token pooling needs one"
        )
    out[TokenizerKey.ADD_EOS] = True
    out[TokenizerKey.ADD_BOS] = first in ids
    if first in ids:
        out[TokenizerKey.BOS_ID] = ids[first]
    return out


def _embedding_plan(ckpt: Checkpoint, tokenizer: dict[str, object], name: str) -> ModelPlan:
    """bitnet.cpp's `convert-bitnet-embedding-to-gguf.py` map (docs/FORMATS.md 2.7), with
    tribit's storage: norms f32, projections as `--qtype`, pooling LAST unless the checkpoint's
    sentence-transformers config names another."""
    cfg = ckpt.config
    hp = read_hparams(cfg, EMBEDDING)
    # Qwen3Model.save_pretrained writes names without "model."; bitnet.cpp's converter takes both
    pre = "model." if "model.embed_tokens.weight" in ckpt else ""
    embd = pre + "embed_tokens.weight"
    layer0 = f"{pre}layers.0."
    if not any(n.endswith("_proj.norm.weight") for n in ckpt.entries):
        raise FormatError(
            f"{ckpt.dir}: a Qwen3 checkpoint without per-projection input norms "
            f"({layer0}self_attn.q_proj.norm.weight, ...): not BitNet-embedding, and plain "
            "Qwen3 weights are not ternary"
        )
    if "head_dim" not in cfg:  # Qwen3Config's default (128) and n_embd / n_head may differ
        rows = ckpt.shape(layer0 + "self_attn.q_proj.weight")[0]
        if rows % hp.n_head:
            raise FormatError(f"q_proj has {rows} rows, not a multiple of {hp.n_head} heads")
        hp = replace(hp, head_dim=rows // hp.n_head)
    dims = Dims.of(hp.n_embd, hp.n_ff, hp.n_head, hp.n_head_kv, hp.head_dim)
    shape = ckpt.shape(embd)
    if len(shape) != 2 or shape[1] != hp.n_embd:
        raise FormatError(f"{embd}: shape {list(shape)}, expected [n_vocab, {hp.n_embd}]")
    n_vocab = shape[0]

    def norm(hf_name: str, gguf_name: str, width: int, what: str = "") -> TensorPlan:
        if hf_name not in ckpt:
            raise FormatError(f"{ckpt.dir}: tensor {hf_name!r} is missing{what}")
        return TensorPlan(gguf_name, (width,), "norm", load=_norm(ckpt, hf_name, width))

    tensors = [
        TensorPlan(TOKEN_EMBD, (n_vocab, hp.n_embd), "embd", load=lambda: ckpt.read_f32(embd))
    ]
    for i in range(hp.n_layer):
        p = f"{pre}layers.{i}."
        tensors.append(
            norm(p + "input_layernorm.weight", block_tensor(i, ATTN_NORM.suffix), hp.n_embd)
        )
        for proj in PROJECTIONS:
            hf = p + _HF_PROJ[proj.which]
            weight = f"{hf}.weight"
            if ckpt.dtype(weight) not in ("F32", "F16", "BF16"):
                raise FormatError(
                    f"{weight}: dtype {ckpt.dtype(weight)}; BitNet-embedding "
                    "checkpoints hold float weights (bitnet.cpp's converter ternarizes them)"
                )
            lp = _Projection(ckpt, hf, proj.shape(dims), multiply=True)
            tensors.append(
                TensorPlan(
                    block_tensor(i, proj.suffix),
                    proj.shape(dims),
                    "ternary",
                    load_ternary=lp.load,
                    gamma=lp.gamma,
                )
            )
        tensors.append(
            norm(p + "post_attention_layernorm.weight", block_tensor(i, FFN_NORM.suffix), hp.n_embd)
        )
        for hf_mod, qk in (("self_attn.q_norm", ATTN_Q_NORM), ("self_attn.k_norm", ATTN_K_NORM)):
            tensors.append(norm(f"{p}{hf_mod}.weight", block_tensor(i, qk.suffix), hp.head_dim))
        for proj in PROJECTIONS:
            n_in = INPUT_NORM[proj.which]
            tensors.append(
                norm(
                    f"{p}{_HF_PROJ[proj.which]}.norm.weight",
                    block_tensor(i, n_in.suffix),
                    n_in.shape(dims)[0],
                    " (every projection of a BitNet-embedding block has its own input norm)",
                )
            )
    tensors.append(norm(pre + "norm.weight", OUTPUT_NORM, hp.n_embd))
    if "lm_head.weight" in ckpt:
        log.info("lm_head.weight not written: an embedding model has no head")

    pooling = sentence_transformers_pooling(ckpt.dir)
    if pooling is None:  # bitnet.cpp's converter writes MEAN here; the model is trained LAST
        pooling = PoolingType.LAST
    log.info("pooling: %s", pooling.name.lower())
    metadata: dict[str, object] = {arch_key(Arch.QWEN3, LLM.POOLING_TYPE): np.uint32(pooling)}
    for key, text in sentence_transformers_prompts(ckpt.dir).items():
        metadata[embed_prompt_key(key)] = text
    return ModelPlan(
        arch=Arch.QWEN3,
        name=name,
        hparams=gguf_hparams(hp, n_vocab, Arch.QWEN3),
        tensors=tensors,
        tokenizer=tokenizer,
        metadata=metadata,
    )


def finish_tokenizer(ckpt: Checkpoint, md: dict[str, object]) -> dict[str, object]:
    """Family-specific tokenizer settings on top of the checkpoint's own (an embedding model's
    EOS, `embedding_tokenizer`)."""
    if detect_family(ckpt.config) == EMBEDDING:
        return embedding_tokenizer(ckpt.dir, md)
    return md
