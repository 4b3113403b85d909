"""Builders of tiny synthetic Hugging Face checkpoints (docs/FORMATS.md §2, §6) and references.

Each builder writes a checkpoint directory in exactly the dtypes/layouts of one family and
returns a `Synthetic` with the *effective* float32 weights (what the original model computes
with: gamma*T after its own weight quantization and storage rounding) and a `reference(tokens)`
function: a float32 transformers model (`BitNetForCausalLM` or `LlamaForCausalLM`) loaded with
those effective weights, with a forward pre-hook on every projection that fake-quantizes its
input per token (docs/FORMATS.md 1.2, 2.6). The references never read our GGUF files.

Weights are well conditioned: masters std 0.02, embeddings std 0.1, norms 1 + 0.1*N(0, 1).
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

PROJ = [
    "self_attn.q_proj",
    "self_attn.k_proj",
    "self_attn.v_proj",
    "self_attn.o_proj",
    "mlp.gate_proj",
    "mlp.up_proj",
    "mlp.down_proj",
]
SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Mary went to the kitchen and picked up the apple.",
    "Where is the apple? The apple is in the kitchen.",
    "A journey of a thousand miles begins with a single step.",
    "Hello world! How are you today? I am fine, thank you.",
    "Numbers like 12, 345 and 6789 appear in text too.",
]
SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"]


@dataclass
class Synthetic:
    """A synthetic checkpoint on disk plus its independent reference."""

    dir: Path
    family: str
    config: dict
    effective: dict[str, np.ndarray]  # HF name -> float32 weight the original model uses
    n_tokens: int  # tokenizer size (ids < n_tokens are real tokens)
    reference: Callable[[list[int]], np.ndarray]  # tokens -> logits (n, vocab) float32


@dataclass
class Dims:
    """Tiny shapes: every K a multiple of 256 unless n_ff says otherwise."""

    n_embd: int = 256
    n_ff: int = 512
    n_layer: int = 2
    n_head: int = 4
    n_head_kv: int = 2
    n_vocab: int = 320


# --- tokenizers -------------------------------------------------------------------------


def write_bpe_tokenizer(d: Path, vocab_size: int = 300) -> int:
    """tokenizer.json (byte-level BPE trained on a few sentences) + tokenizer_config.json."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(SENTENCES * 4, trainer)
    tok.save(str(d / "tokenizer.json"))
    (d / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "bos_token": SPECIALS[0],
                "eos_token": SPECIALS[1],
                "add_bos_token": True,
                "tokenizer_class": "PreTrainedTokenizerFast",
            }
        )
    )
    return tok.get_vocab_size()


QWEN_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def write_qwen_tokenizer(d: Path, vocab_size: int = 300, appends: str | None = "<|endoftext|>"):
    """A Qwen2/Qwen3-style tokenizer.json: byte-level BPE behind Qwen2's split regex,
    `<|endoftext|>`/`<|im_start|>`/`<|im_end|>` specials, no BOS, and (as Qwen3-Embedding)
    a post-processor appending `appends` to every text; tokenizer_config.json names the chat
    end `<|im_end|>` as EOS. Returns the tokenizer size."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    from tribit.tokenizer.hf import _QWEN2_HF

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_QWEN2_HF), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=QWEN_SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(SENTENCES * 4, trainer)
    if appends is not None:
        tok.post_processor = processors.TemplateProcessing(
            single=f"$A {appends}",
            pair=f"$A {appends} $B:1 {appends}:1",
            special_tokens=[(appends, tok.token_to_id(appends))],
        )
    tok.save(str(d / "tokenizer.json"))
    (d / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "bos_token": None,
                "eos_token": "<|im_end|>",
                "pad_token": "<|endoftext|>",
                "tokenizer_class": "PreTrainedTokenizerFast",
            }
        )
    )
    return tok.get_vocab_size()


def _pb_varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _pb_field(num: int, wire: int, payload: bytes) -> bytes:
    key = _pb_varint(num << 3 | wire)
    if wire == 2:
        return key + _pb_varint(len(payload)) + payload
    return key + payload


def write_sentencepiece_model(d: Path, n_pieces: int = 300) -> int:
    """A LLaMA-style SentencePiece `tokenizer.model` (BPE, byte fallback), protobuf encoded by
    hand (no sentencepiece/protobuf package needed): <unk>, <s>, </s>, 256 byte pieces, then
    pieces from the sentences with decreasing scores."""
    pieces: list[tuple[str, float, int]] = [("<unk>", 0.0, 2), ("<s>", 0.0, 3), ("</s>", 0.0, 3)]
    pieces += [(f"<0x{b:02X}>", 0.0, 6) for b in range(256)]
    seen = {p for p, _, _ in pieces}
    words = []
    for s in SENTENCES:
        for w in s.replace("?", " ").replace(".", " ").replace("!", " ").split():
            for cand in ("\u2581" + w, w[:2], "\u2581" + w[:2], w[-3:]):
                if cand not in seen:
                    seen.add(cand)
                    words.append(cand)
    for ch in "abcdefghijklmnopqrstuvwxyz":
        if ch not in seen:
            seen.add(ch)
            words.append(ch)
    words = words[: max(0, n_pieces - len(pieces))]
    pieces += [(w, -float(i + 1), 1) for i, w in enumerate(words)]
    blob = b""
    for piece, score, ptype in pieces:
        sp = (
            _pb_field(1, 2, piece.encode())
            + _pb_field(2, 5, struct.pack("<f", score))
            + _pb_field(3, 0, _pb_varint(ptype))
        )
        blob += _pb_field(1, 2, sp)
    # TrainerSpec: model_type BPE (3: 2), vocab_size (4), byte_fallback (35), unk/bos/eos/pad ids
    trainer = (
        _pb_field(3, 0, _pb_varint(2))
        + _pb_field(4, 0, _pb_varint(len(pieces)))
        + _pb_field(35, 0, _pb_varint(1))
        + _pb_field(40, 0, _pb_varint(0))
        + _pb_field(41, 0, _pb_varint(1))
        + _pb_field(42, 0, _pb_varint(2))
        + _pb_field(43, 0, _pb_varint((1 << 64) - 1))
    )
    normalizer = (
        _pb_field(1, 2, b"identity")
        + _pb_field(3, 0, _pb_varint(1))
        + _pb_field(4, 0, _pb_varint(0))
    )
    blob += _pb_field(2, 2, trainer) + _pb_field(3, 2, normalizer)
    (d / "tokenizer.model").write_bytes(blob)
    (d / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "bos_token": "<s>",
                "eos_token": "</s>",
                "unk_token": "<unk>",
                "add_bos_token": True,
                "tokenizer_class": "LlamaTokenizer",
            }
        )
    )
    return len(pieces)


# --- weights ----------------------------------------------------------------------------


def _round(x: np.ndarray, dtype: str) -> np.ndarray:
    """Round float32 values to the storage dtype and back (what the checkpoint holds)."""
    import torch

    return torch.from_numpy(x).to(getattr(torch, dtype)).to(torch.float32).numpy()


def weight_quant(w: np.ndarray) -> tuple[np.ndarray, np.float32]:
    """docs/FORMATS.md 1.1 as transformers/1bitLLM write it, in torch (not via tribit.quant)."""
    import torch

    wt = torch.from_numpy(w)
    scale = 1.0 / wt.abs().mean().clamp_(min=1e-5)
    t = (wt * scale).round().clamp_(-1, 1)
    return t.to(torch.int8).numpy(), np.float32(1.0 / scale.item())


def random_masters(
    dims: Dims, seed: int, sub_norms: dict[str, int] | None, lm_head: bool
) -> dict[str, np.ndarray]:
    """Float32 master weights in HF names (q/k/v/o/gate/up/down std 0.02)."""
    rng = np.random.default_rng(seed)
    hd = dims.n_embd // dims.n_head
    d_kv = dims.n_head_kv * hd
    shapes = {
        "self_attn.q_proj": (dims.n_embd, dims.n_embd),
        "self_attn.k_proj": (d_kv, dims.n_embd),
        "self_attn.v_proj": (d_kv, dims.n_embd),
        "self_attn.o_proj": (dims.n_embd, dims.n_embd),
        "mlp.gate_proj": (dims.n_ff, dims.n_embd),
        "mlp.up_proj": (dims.n_ff, dims.n_embd),
        "mlp.down_proj": (dims.n_embd, dims.n_ff),
    }

    def norm(n: int) -> np.ndarray:
        return (1.0 + 0.1 * rng.standard_normal(n)).astype(np.float32)

    w = {
        "model.embed_tokens.weight": (
            0.1 * rng.standard_normal((dims.n_vocab, dims.n_embd))
        ).astype(np.float32)
    }
    for i in range(dims.n_layer):
        p = f"model.layers.{i}."
        w[p + "input_layernorm.weight"] = norm(dims.n_embd)
        w[p + "post_attention_layernorm.weight"] = norm(dims.n_embd)
        for mod, shape in shapes.items():
            w[f"{p}{mod}.weight"] = (0.02 * rng.standard_normal(shape)).astype(np.float32)
        for mod, width in (sub_norms or {}).items():
            w[f"{p}{mod}.weight"] = norm(width)
    w["model.norm.weight"] = norm(dims.n_embd)
    if lm_head:
        w["lm_head.weight"] = (0.1 * rng.standard_normal((dims.n_vocab, dims.n_embd))).astype(
            np.float32
        )
    return w


def save_safetensors(path: Path, tensors: dict[str, np.ndarray], dtypes: dict[str, str]) -> None:
    """Write tensors with per-tensor torch dtype names ("bfloat16", "uint8", ...)."""
    import torch
    from safetensors.torch import save_file

    save_file(
        {
            k: torch.from_numpy(np.ascontiguousarray(v)).to(getattr(torch, dtypes[k]))
            for k, v in tensors.items()
        },
        str(path),
        metadata={"format": "pt"},
    )


def shard(d: Path, n: int = 2) -> None:
    """Split d/model.safetensors into n shards plus model.safetensors.index.json."""
    from safetensors.torch import load_file, save_file

    path = d / "model.safetensors"
    tensors = load_file(str(path))
    path.unlink()
    names = sorted(tensors)
    weight_map = {}
    for j in range(n):
        fname = f"model-{j + 1:05d}-of-{n:05d}.safetensors"
        part = {k: tensors[k] for k in names[j::n]}
        save_file(part, str(d / fname), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(part, fname))
    (d / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": 0}, "weight_map": weight_map})
    )


# --- references ---------------------------------------------------------------------------


def _act_quant_hook(module, args):
    """Per-token absmax int8 fake quantization of a projection's input (docs/FORMATS.md 1.2)."""
    (x,) = args
    scale = 127.0 / x.abs().amax(dim=-1, keepdim=True).clamp(min=1e-5)
    return ((x * scale).round().clamp(-128, 127) / scale,)


def torch_reference(model_cls, config, effective: dict[str, np.ndarray]) -> Callable:
    """A float32 transformers model with `effective` weights and activation fake-quant."""
    import torch

    model = model_cls(config).to(torch.float32).eval()
    state = {k: torch.from_numpy(v) for k, v in effective.items()}
    if "lm_head.weight" not in state:
        state["lm_head.weight"] = state["model.embed_tokens.weight"]
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected, unexpected
    assert all("rotary" in m for m in missing), missing
    for name, mod in model.named_modules():
        if any(name.endswith(p) for p in PROJ):
            mod.register_forward_pre_hook(_act_quant_hook)

    def logits(tokens: list[int]) -> np.ndarray:
        with torch.no_grad():
            out = model(torch.tensor([tokens]), use_cache=False).logits
        return out[0].to(torch.float32).numpy()

    return logits


HOOKED = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
HOOKED_WHICH = dict(zip(HOOKED, ("q", "k", "v", "o", "gate", "up", "down"), strict=True))


def bitnet_embedding_reference(config, state: dict, codes: list, inputs: list | None = None):
    """BitNet-embedding in torch (docs/FORMATS.md 1.6): transformers' `Qwen3Model` (float32,
    eager) loaded with `state` (HF names with or without "model."; projections the effective
    gamma * T), every projection's input through its own RMSNorm (`<proj>.norm.weight`, eps
    `config.rms_norm_eps`) and per-token absmax int8 by a forward pre-hook. `codes` receives
    (layer, which, int8 codes) of every projection input, `inputs` the input before its norm."""
    import torch
    import transformers

    inputs = [] if inputs is None else inputs
    eps = config.rms_norm_eps
    config._attn_implementation = "eager"
    model = transformers.Qwen3Model(config).float().eval()
    params = dict(model.named_parameters())
    norms = {}
    loaded = set()
    with torch.no_grad():
        for key, arr in state.items():
            key = key.removeprefix("model.")
            t = torch.from_numpy(np.ascontiguousarray(arr, np.float32))
            if key.endswith("_proj.norm.weight"):
                norms[key.removesuffix(".norm.weight")] = t
                continue
            if key in params:
                assert params[key].shape == t.shape, key
                params[key].copy_(t)
                loaded.add(key)
    assert loaded == set(params), set(params) - loaded

    def hook_for(name):
        layer = int(name.split(".")[1])
        which = HOOKED_WHICH[name.rsplit(".", 1)[-1]]
        w = norms[name]

        def hook(module, args):
            x = args[0]
            inputs.append((layer, which, x[0].double().numpy()))
            # BitLinear: RMSNorm(x, norm.weight) -> per-token absmax int8 -> matmul
            x = w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))
            scale = 127.0 / x.abs().amax(dim=-1, keepdim=True).clamp(min=1e-5)
            q = (x * scale).round().clamp(-128, 127)
            codes.append((layer, which, q[0].to(torch.int8).numpy()))
            return (q / scale,) + tuple(args[1:])

        return hook

    for name, mod in model.named_modules():
        if name.rsplit(".", 1)[-1] in HOOKED:
            mod.register_forward_pre_hook(hook_for(name))
    return model


# --- families -----------------------------------------------------------------------------


def make_bitnet(
    d: Path, variant: str = "master-f32", dims: Dims | None = None, seed: int = 0
) -> Synthetic:
    """2B-4T style: `variant` "master-f32" / "master-bf16" (online, docs/FORMATS.md 2.2) or "packed"
    (uint8 + bf16 weight_scale, multiply, docs/FORMATS.md 2.1)."""
    from transformers import BitNetConfig, BitNetForCausalLM

    dims = dims or Dims()
    d.mkdir(parents=True, exist_ok=True)
    n_tokens = write_bpe_tokenizer(d)
    config = BitNetConfig(
        vocab_size=dims.n_vocab,
        hidden_size=dims.n_embd,
        intermediate_size=dims.n_ff,
        num_hidden_layers=dims.n_layer,
        num_attention_heads=dims.n_head,
        num_key_value_heads=dims.n_head_kv,
        tie_word_embeddings=True,
        max_position_embeddings=256,
        bos_token_id=0,
        eos_token_id=1,
        attn_implementation="eager",
    )
    sub = {"self_attn.attn_sub_norm": dims.n_embd, "mlp.ffn_sub_norm": dims.n_ff}
    masters = random_masters(dims, seed, sub, lm_head=False)
    storage = "float32" if variant == "master-f32" else "bfloat16"
    masters = {k: _round(v, storage) for k, v in masters.items()}
    effective, tensors, dtypes = {}, {}, {}
    for k, v in masters.items():
        if any(k.endswith(p + ".weight") for p in PROJ):
            t, gamma = weight_quant(v)
            if variant == "packed":
                from tribit.quant import pack_hf

                ws = _round(np.array([gamma], np.float32), "bfloat16")
                tensors[k], dtypes[k] = pack_hf(t), "uint8"
                tensors[k + "_scale"], dtypes[k + "_scale"] = ws, "bfloat16"
                effective[k] = t.astype(np.float32) * ws[0]
                continue
            effective[k] = t.astype(np.float32) * gamma
        else:
            effective[k] = v
        tensors[k], dtypes[k] = v, storage
    if variant == "packed":
        save_safetensors(d / "model.safetensors", tensors, dtypes)
        cfg = config.to_dict()
        cfg.pop("attn_implementation", None)
    else:  # masters: transformers writes the checkpoint itself (docs/FORMATS.md 2.6)
        import torch

        model = BitNetForCausalLM(config)
        model.load_state_dict({k: torch.from_numpy(v) for k, v in masters.items()}, strict=False)
        model.to(getattr(torch, storage)).save_pretrained(d)
        cfg = json.loads((d / "config.json").read_text())
    cfg.update(
        architectures=["BitNetForCausalLM"],
        torch_dtype=storage,
        quantization_config={
            "quant_method": "bitnet",
            "linear_class": "autobitlinear",
            "quantization_mode": "offline" if variant == "packed" else "online",
        },
    )
    (d / "config.json").write_text(json.dumps(cfg, indent=1))
    ref = torch_reference(BitNetForCausalLM, config, effective)
    return Synthetic(d, "bitnet-b1.58", cfg, effective, n_tokens, ref)


def make_1bitllm(
    d: Path, dims: Dims | None = None, seed: int = 1, dtype: str = "float32"
) -> Synthetic:
    """1bitLLM style (docs/FORMATS.md 2.3, 6.4): BitnetForCausalLM, model_type llama, SiLU, MHA,
    inner_attn_ln / ffn_layernorm, float masters, tied, SentencePiece tokenizer.model."""
    from transformers import BitNetConfig, BitNetForCausalLM

    dims = dims or Dims(n_ff=384, n_head_kv=4)  # 384: ffn_down falls back to I2_S like the 3B
    d.mkdir(parents=True, exist_ok=True)
    n_tokens = write_sentencepiece_model(d)
    sub = {"self_attn.inner_attn_ln": dims.n_embd, "mlp.ffn_layernorm": dims.n_ff}
    masters = {
        k: _round(v, dtype) for k, v in random_masters(dims, seed, sub, lm_head=False).items()
    }
    save_safetensors(d / "model.safetensors", masters, dict.fromkeys(masters, dtype))
    cfg = {
        "architectures": ["BitnetForCausalLM"],
        "model_type": "llama",
        "hidden_act": "silu",
        "hidden_size": dims.n_embd,
        "intermediate_size": dims.n_ff,
        "num_hidden_layers": dims.n_layer,
        "num_attention_heads": dims.n_head,
        "num_key_value_heads": dims.n_head,
        "vocab_size": dims.n_vocab,
        "max_position_embeddings": 256,
        "rope_theta": 10000.0,
        "rms_norm_eps": 1e-5,
        "tie_word_embeddings": True,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "pad_token_id": 32000,
        "weight_bits": 1,
        "input_bits": 8,
        "torch_dtype": dtype,
    }
    (d / "config.json").write_text(json.dumps(cfg, indent=1))
    rename = {"inner_attn_ln": "attn_sub_norm", "ffn_layernorm": "ffn_sub_norm"}
    effective = {}
    for k, v in masters.items():
        if any(k.endswith(p + ".weight") for p in PROJ):
            t, gamma = weight_quant(v)
            v = t.astype(np.float32) * gamma
        for a, b in rename.items():
            k = k.replace(a, b)
        effective[k] = v
    config = BitNetConfig(
        vocab_size=dims.n_vocab,
        hidden_size=dims.n_embd,
        intermediate_size=dims.n_ff,
        num_hidden_layers=dims.n_layer,
        num_attention_heads=dims.n_head,
        num_key_value_heads=dims.n_head,
        hidden_act="silu",
        tie_word_embeddings=True,
        max_position_embeddings=256,
        bos_token_id=1,
        eos_token_id=2,
        rope_parameters={"rope_theta": 10000.0, "rope_type": "default"},
        attn_implementation="eager",
    )
    ref = torch_reference(BitNetForCausalLM, config, effective)
    return Synthetic(d, "1bitllm", cfg, effective, n_tokens, ref)


def make_llama(d: Path, dims: Dims | None = None, seed: int = 2) -> Synthetic:
    """Llama3-8B-1.58 / Falcon3 style (docs/FORMATS.md 2.4, 6.3): LlamaForCausalLM + bitnet
    quantization_config, packed uint8 + bf16 weight_scale = 1/gamma (divide), bf16 float
    tensors, untied bf16 lm_head, GQA."""
    from transformers import LlamaConfig, LlamaForCausalLM

    dims = dims or Dims()
    d.mkdir(parents=True, exist_ok=True)
    n_tokens = write_bpe_tokenizer(d)
    masters = {
        k: _round(v, "bfloat16") for k, v in random_masters(dims, seed, None, lm_head=True).items()
    }
    effective, tensors, dtypes = {}, {}, {}
    from tribit.quant import pack_hf

    for k, v in masters.items():
        if any(k.endswith(p + ".weight") for p in PROJ):
            t, gamma = weight_quant(v)
            ws = _round(np.array([1.0 / gamma], np.float32), "bfloat16")
            tensors[k], dtypes[k] = pack_hf(t), "uint8"
            tensors[k + "_scale"], dtypes[k + "_scale"] = ws, "bfloat16"
            effective[k] = t.astype(np.float32) / ws[0]
        else:
            tensors[k], dtypes[k], effective[k] = v, "bfloat16", v
    save_safetensors(d / "model.safetensors", tensors, dtypes)
    config = LlamaConfig(
        vocab_size=dims.n_vocab,
        hidden_size=dims.n_embd,
        intermediate_size=dims.n_ff,
        num_hidden_layers=dims.n_layer,
        num_attention_heads=dims.n_head,
        num_key_value_heads=dims.n_head_kv,
        hidden_act="silu",
        tie_word_embeddings=False,
        max_position_embeddings=256,
        rms_norm_eps=1e-5,
        bos_token_id=0,
        eos_token_id=1,
        rope_parameters={"rope_theta": 500000.0, "rope_type": "default"},
        attn_implementation="eager",
    )
    cfg = config.to_dict()
    cfg.update(
        architectures=["LlamaForCausalLM"],
        torch_dtype="bfloat16",
        quantization_config={"quant_method": "bitnet"},
    )
    cfg.pop("attn_implementation", None)
    (d / "config.json").write_text(json.dumps(cfg, indent=1))
    ref = torch_reference(LlamaForCausalLM, config, effective)
    return Synthetic(d, "llama-bitnet", cfg, effective, n_tokens, ref)


@dataclass
class EmbeddingDims:
    """The 0.6B shape family of BitNet-embedding (q is n_head * head_dim = 2048 wide), cut to
    `n_layer` layers and a tiny vocabulary."""

    n_embd: int = 1024
    n_ff: int = 3072
    n_layer: int = 2
    n_head: int = 16
    n_head_kv: int = 8
    head_dim: int = 128
    n_vocab: int = 320


def bitnet_embedding_masters(dims: EmbeddingDims, seed: int, prefix: str = "") -> dict:
    """Float32 masters in the names bitnet.cpp's embedding converter reads: Qwen3's, plus
    `<proj>.norm.weight`, the input norm of each projection (as wide as its input)."""
    rng = np.random.default_rng(seed)
    d_q, d_kv = dims.n_head * dims.head_dim, dims.n_head_kv * dims.head_dim
    shapes = {  # module -> (rows, cols); cols is the input norm's width
        "self_attn.q_proj": (d_q, dims.n_embd),
        "self_attn.k_proj": (d_kv, dims.n_embd),
        "self_attn.v_proj": (d_kv, dims.n_embd),
        "self_attn.o_proj": (dims.n_embd, d_q),
        "mlp.gate_proj": (dims.n_ff, dims.n_embd),
        "mlp.up_proj": (dims.n_ff, dims.n_embd),
        "mlp.down_proj": (dims.n_embd, dims.n_ff),
    }

    def norm(n: int) -> np.ndarray:
        return (1.0 + 0.1 * rng.standard_normal(n)).astype(np.float32)

    w = {
        prefix + "embed_tokens.weight": (
            0.1 * rng.standard_normal((dims.n_vocab, dims.n_embd))
        ).astype(np.float32)
    }
    for i in range(dims.n_layer):
        p = f"{prefix}layers.{i}."
        w[p + "input_layernorm.weight"] = norm(dims.n_embd)
        w[p + "post_attention_layernorm.weight"] = norm(dims.n_embd)
        w[p + "self_attn.q_norm.weight"] = norm(dims.head_dim)
        w[p + "self_attn.k_norm.weight"] = norm(dims.head_dim)
        for mod, shape in shapes.items():
            w[f"{p}{mod}.weight"] = (0.02 * rng.standard_normal(shape)).astype(np.float32)
            w[f"{p}{mod}.norm.weight"] = norm(shape[1])
    w[prefix + "norm.weight"] = norm(dims.n_embd)
    for name in w:  # sharpened as tiny_models.qwen3_weights (tests/test_embedding_model.py)
        if any(f".{m}." in name for m in ("v_proj", "o_proj", "gate_proj", "up_proj")):
            if not name.endswith(".norm.weight"):
                w[name] = w[name] * 4
        if ".q_norm." in name or ".k_norm." in name:
            w[name] = w[name] * 2
    return w


def make_bitnet_embedding(
    d: Path,
    dims: EmbeddingDims | None = None,
    seed: int = 3,
    dtype: str = "bfloat16",
    prefix: str = "",
    pooling: str | None = None,
    prompts: dict[str, str] | None = None,
) -> Synthetic:
    """microsoft/bitnet-embedding-0.6b style (docs/FORMATS.md 2.7): a Qwen3 config
    (`Qwen3Model`, model_type qwen3), float masters in `dtype` under the names bitnet.cpp's
    converter maps (prefix "" as Qwen3Model.save_pretrained writes them, or "model."),
    Qwen tokenizer. `pooling` ("lasttoken", "mean_tokens", ...) writes a sentence-transformers
    modules.json + 1_Pooling/config.json; `prompts` a config_sentence_transformers.json.
    `reference(tokens)` gives the final-norm hidden states (n, n_embd) of the hooked
    `Qwen3Model` on the effective weights (no head: `Synthetic.reference` returns them in
    place of logits)."""
    from transformers import Qwen3Config

    dims = dims or EmbeddingDims()
    d.mkdir(parents=True, exist_ok=True)
    n_tokens = write_qwen_tokenizer(d)
    masters = {k: _round(v, dtype) for k, v in bitnet_embedding_masters(dims, seed, prefix).items()}
    save_safetensors(d / "model.safetensors", masters, dict.fromkeys(masters, dtype))
    config = Qwen3Config(
        vocab_size=dims.n_vocab,
        hidden_size=dims.n_embd,
        intermediate_size=dims.n_ff,
        num_hidden_layers=dims.n_layer,
        num_attention_heads=dims.n_head,
        num_key_value_heads=dims.n_head_kv,
        head_dim=dims.head_dim,
        max_position_embeddings=512,
        rms_norm_eps=1e-6,
        rope_parameters={"rope_theta": 1e6, "rope_type": "default"},
        tie_word_embeddings=True,
        hidden_act="silu",
        attention_bias=False,
        use_sliding_window=False,
        # as Qwen3-Embedding's config: both <|endoftext|> (the trainer's first id); the
        # tokenizer adds no BOS all the same
        bos_token_id=0,
        eos_token_id=0,
    )
    cfg = config.to_dict()
    cfg.update(architectures=["Qwen3Model"], torch_dtype=dtype)
    (d / "config.json").write_text(json.dumps(cfg, indent=1))
    if pooling is not None:
        (d / "modules.json").write_text(
            json.dumps(
                [
                    {
                        "idx": 0,
                        "name": "0",
                        "path": "",
                        "type": "sentence_transformers.models.Transformer",
                    },
                    {
                        "idx": 1,
                        "name": "1",
                        "path": "1_Pooling",
                        "type": "sentence_transformers.models.Pooling",
                    },
                    {
                        "idx": 2,
                        "name": "2",
                        "path": "2_Normalize",
                        "type": "sentence_transformers.models.Normalize",
                    },
                ]
            )
        )
        (d / "1_Pooling").mkdir(exist_ok=True)
        flags = ("cls_token", "mean_tokens", "max_tokens", "lasttoken")
        (d / "1_Pooling" / "config.json").write_text(
            json.dumps(
                {"word_embedding_dimension": dims.n_embd}
                | {f"pooling_mode_{f}": f == pooling for f in flags}
            )
        )
    if prompts is not None:
        (d / "config_sentence_transformers.json").write_text(
            json.dumps({"prompts": prompts, "default_prompt_name": None})
        )
    effective = {}
    for k, v in masters.items():
        if any(k.endswith(p + ".weight") for p in PROJ):
            t, gamma = weight_quant(v)
            v = t.astype(np.float32) * gamma
        effective[k] = v
    model = bitnet_embedding_reference(config, effective, [])

    def hidden(tokens: list[int]) -> np.ndarray:
        import torch

        with torch.no_grad():
            out = model(torch.tensor([tokens]), use_cache=False).last_hidden_state
        return out[0].to(torch.float32).numpy()

    return Synthetic(d, "bitnet-embedding", cfg, effective, n_tokens, hidden)


# --- a second, runtime-independent check: numpy forward over a GGUF read with gguf-py ---
# It follows the GGUF conventions (arch `bitnet`/`bitnet-b1.58`: sub-norms, NeoX RoPE; `llama`:
# no sub-norms, interleaved RoPE on permuted Q/K), so a converter that botches the Q/K
# permutation or a scale disagrees with the transformers reference.


def read_gguf(path) -> tuple[dict, dict[str, np.ndarray]]:
    """(metadata, float32 tensors) through gguf-py; ternary tensors dequantized."""
    import gguf

    r = gguf.GGUFReader(str(path))
    meta = {}
    for name, field in r.fields.items():
        if not field.types or name.startswith("GGUF."):
            continue
        if field.types[0] == gguf.GGUFValueType.ARRAY:
            continue
        val = field.parts[field.data[0]]
        meta[name] = (
            bytes(val).decode() if field.types[0] == gguf.GGUFValueType.STRING else val.item()
        )
    tensors = {}
    for t in r.tensors:
        shape = tuple(int(x) for x in reversed(t.shape))
        x = gguf.quants.dequantize(t.data, t.tensor_type)
        tensors[t.name] = np.asarray(x, dtype=np.float32).reshape(shape)
    return meta, tensors


def _rms(x, w, eps):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def _act_quant(x):
    s = 127.0 / np.maximum(np.abs(x).max(axis=-1, keepdims=True), 1e-5)
    return np.clip(np.rint(x * s), -128, 127), s


def _bitlinear(x, w, gamma):
    t = np.rint(w / np.abs(w).max()) if np.abs(w).max() > 0 else w
    q, s = _act_quant(x)
    return (q @ t.T) * (gamma / s)


def _rope(x, pos, theta, neox):
    n, h, d = x.shape
    inv = theta ** (-np.arange(0, d, 2, dtype=np.float64) / d)
    ang = pos[:, None] * inv[None, :]
    cos, sin = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]
    if neox:
        a, b = x[..., : d // 2], x[..., d // 2 :]
        return np.concatenate([a * cos - b * sin, a * sin + b * cos], axis=-1)
    a, b = x[..., 0::2], x[..., 1::2]
    out = np.empty_like(x)
    out[..., 0::2], out[..., 1::2] = a * cos - b * sin, a * sin + b * cos
    return out


def forward(meta: dict, w: dict[str, np.ndarray], tokens: list[int]) -> np.ndarray:
    """Logits (n, n_vocab) for `tokens` at positions 0..n-1 (float64 math)."""
    arch = meta["general.architecture"]
    g = lambda k: meta[f"{arch}.{k}"]  # noqa: E731
    n_head, n_kv = g("attention.head_count"), g("attention.head_count_kv")
    eps, theta = g("attention.layer_norm_rms_epsilon"), g("rope.freq_base")
    hd = g("rope.dimension_count")
    neox, act = arch != "llama", ("relu2" if arch == "bitnet-b1.58" else "silu")
    w = {k: v.astype(np.float64) for k, v in w.items()}
    scale = lambda name: meta[f"tribit.scale.{name}"]  # noqa: E731
    x = w["token_embd.weight"][tokens]
    n = len(tokens)
    pos = np.arange(n, dtype=np.float64)
    mask = np.triu(np.full((n, n), -np.inf), 1)
    for i in range(g("block_count")):
        b = f"blk.{i}."
        lin = lambda h, nm: _bitlinear(h, w[b + nm + ".weight"], scale(b + nm + ".weight"))  # noqa: E731,B023
        h = _rms(x, w[b + "attn_norm.weight"], eps)
        q = _rope(lin(h, "attn_q").reshape(n, n_head, hd), pos, theta, neox)
        k = _rope(lin(h, "attn_k").reshape(n, n_kv, hd), pos, theta, neox)
        v = lin(h, "attn_v").reshape(n, n_kv, hd)
        rep = n_head // n_kv
        k, v = np.repeat(k, rep, axis=1), np.repeat(v, rep, axis=1)
        att = np.einsum("qhd,khd->hqk", q, k) / np.sqrt(hd) + mask
        att = np.exp(att - att.max(-1, keepdims=True))
        att /= att.sum(-1, keepdims=True)
        o = np.einsum("hqk,khd->qhd", att, v).reshape(n, n_head * hd)
        if b + "attn_sub_norm.weight" in w:
            o = _rms(o, w[b + "attn_sub_norm.weight"], eps)
        x = x + lin(o, "attn_output")
        h = _rms(x, w[b + "ffn_norm.weight"], eps)
        gate, up = lin(h, "ffn_gate"), lin(h, "ffn_up")
        a = np.maximum(gate, 0) ** 2 if act == "relu2" else gate / (1 + np.exp(-gate))
        f = a * up
        if b + "ffn_sub_norm.weight" in w:
            f = _rms(f, w[b + "ffn_sub_norm.weight"], eps)
        x = x + lin(f, "ffn_down")
    x = _rms(x, w["output_norm.weight"], eps)
    head = w.get("output.weight", w["token_embd.weight"])
    return (x @ head.T).astype(np.float32)


def kl_top1(ref: np.ndarray, got: np.ndarray) -> tuple[float, float]:
    """(mean KL(ref || got) over positions, top-1 agreement) of two logit matrices."""

    def logsoftmax(z):
        z = z.astype(np.float64)
        z = z - z.max(-1, keepdims=True)
        return z - np.log(np.exp(z).sum(-1, keepdims=True))

    lp, lq = logsoftmax(ref), logsoftmax(got)
    kl = float(np.mean(np.sum(np.exp(lp) * (lp - lq), axis=-1)))
    top1 = float(np.mean(ref.argmax(-1) == got.argmax(-1)))
    return kl, top1


# GGUF suffix -> HF module path inside a layer (transformers' Llama/BitNet names)
HF_NAMES = {
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
    "attn_sub_norm": "self_attn.attn_sub_norm",
    "ffn_sub_norm": "mlp.ffn_sub_norm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
GGUF_PROJ = {"attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"}
