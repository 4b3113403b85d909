"""GGUF metadata keys and tensor names: the one table (docs/FORMATS.md 3.3, 3.8).

Every metadata key tribit reads or writes and every tensor name of the model graph is spelled
here, once; the model loader, the converters, the trainer's exporter and the native binding
build their names from it. Laid out like gguf-py's `constants.py`: keys grouped by namespace,
the per-architecture hyper-parameters as suffixes of `<arch>.` (`arch_key`), the block
tensors as suffixes of `blk.<i>.` (`block_tensor`), and the projections with their shapes.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum


class Arch:
    """`general.architecture` values tribit reads and writes (docs/FORMATS.md 3.3)."""

    BITNET = "bitnet"  # 1bitLLM, bitnet.cpp dummies
    BITNET_25 = "bitnet-25"  # first official 2B-4T GGUF
    BITNET_B158 = "bitnet-b1.58"  # current 2B-4T GGUF, tribit's own
    LLAMA = "llama"  # Llama3-8B-1.58, Falcon3/Falcon-E
    QWEN3 = "qwen3"  # Qwen3 blocks: BitNet-embedding 0.6B, Qwen3 generative files


# the architectures whose blocks hold attn_sub_norm and ffn_sub_norm (docs/FORMATS.md 1.4)
SUB_NORM_ARCHS = frozenset({Arch.BITNET, Arch.BITNET_25, Arch.BITNET_B158})
# the architectures whose blocks hold per-head RMSNorms of q and k (docs/FORMATS.md 1.6)
QK_NORM_ARCHS = frozenset({Arch.QWEN3})


class General:
    """`general.*` keys."""

    ARCHITECTURE = "general.architecture"
    NAME = "general.name"
    FILE_TYPE = "general.file_type"
    QUANTIZATION_VERSION = "general.quantization_version"
    ALIGNMENT = "general.alignment"
    DESCRIPTION = "general.description"
    SAMPLING_TEMP = "general.sampling.temp"  # llama.cpp's: the makers' recommended temperature


class LLM:
    """Per-architecture hyper-parameters: the key is `<arch>.` + the suffix (`arch_key`)."""

    VOCAB_SIZE = "vocab_size"
    CONTEXT_LENGTH = "context_length"
    EMBEDDING_LENGTH = "embedding_length"
    BLOCK_COUNT = "block_count"
    FEED_FORWARD_LENGTH = "feed_forward_length"
    HEAD_COUNT = "attention.head_count"
    HEAD_COUNT_KV = "attention.head_count_kv"
    KEY_LENGTH = "attention.key_length"
    VALUE_LENGTH = "attention.value_length"
    LAYERNORM_RMS_EPS = "attention.layer_norm_rms_epsilon"
    ROPE_DIMENSION_COUNT = "rope.dimension_count"
    ROPE_FREQ_BASE = "rope.freq_base"
    ROPE_SCALING_TYPE = "rope.scaling.type"
    ROPE_SCALING_FACTOR = "rope.scaling.factor"
    POOLING_TYPE = "pooling_type"  # embedding models (gguf-py's add_pooling_type)


class PoolingType(IntEnum):
    """Values of `<arch>.pooling_type` (llama.cpp's llama_pooling_type)."""

    NONE = 0
    MEAN = 1
    CLS = 2
    LAST = 3
    RANK = 4


def arch_key(arch: str, suffix: str) -> str:
    """The metadata key of hyper-parameter `suffix` (an `LLM` attribute) under `arch`."""
    return f"{arch}.{suffix}"


class TokenizerKey:
    """`tokenizer.*` keys (docs/FORMATS.md 3.8)."""

    PREFIX = "tokenizer.ggml."
    MODEL = PREFIX + "model"
    PRE = PREFIX + "pre"
    TOKENS = PREFIX + "tokens"
    TOKEN_TYPE = PREFIX + "token_type"
    SCORES = PREFIX + "scores"
    MERGES = PREFIX + "merges"
    BOS_ID = PREFIX + "bos_token_id"
    EOS_ID = PREFIX + "eos_token_id"
    EOT_ID = PREFIX + "eot_token_id"
    ADD_BOS = PREFIX + "add_bos_token"
    ADD_EOS = PREFIX + "add_eos_token"
    ADD_SPACE_PREFIX = PREFIX + "add_space_prefix"
    REMOVE_EXTRA_WHITESPACES = PREFIX + "remove_extra_whitespaces"
    CHAT_TEMPLATE = "tokenizer.chat_template"


def token_id_key(name: str) -> str:
    """`tokenizer.ggml.<name>_token_id` ("bos", "eos", "eot", "eom", "unknown", "padding")."""
    return f"{TokenizerKey.PREFIX}{name}_token_id"


class TokenType(IntEnum):
    """Values of `tokenizer.ggml.token_type` (llama.cpp's llama_token_type)."""

    NORMAL = 1
    UNKNOWN = 2
    CONTROL = 3
    USER_DEFINED = 4
    UNUSED = 5
    BYTE = 6


class Tribit:
    """tribit's own keys: other readers ignore them."""

    # exact f32 per-tensor weight scale of a ternary tensor: SCALE_PREFIX + tensor name
    SCALE_PREFIX = "tribit.scale."
    DUMMY_LAYOUT = "tribit.dummy.layout"
    DUMMY_SEED = "tribit.dummy.seed"
    TRAIN_STEPS = "tribit.train.steps"
    TRAIN_SEED = "tribit.train.seed"
    TRAIN_INIT = "tribit.train.init"  # the file a fine-tune started from
    CHAT_EXAMPLES = "tribit.chat.examples"  # example prompts the web page offers
    # an embedding model's named input prompts (sentence-transformers' `prompts`, e.g.
    # "query"): EMBED_PROMPT_PREFIX + name -> the text put before such an input
    EMBED_PROMPT_PREFIX = "tribit.embedding.prompt."


class Prism:
    """PrismML's keys: `prism.hadamard.*` declares Hadamard-folded weights (Ternary
    Bonsai-2): every folded matmul needs its activations rotated first, which tribit does
    not do, so a file carrying any such key is refused (docs/FORMATS.md 3.11)."""

    HADAMARD_PREFIX = "prism.hadamard."


def embed_prompt_key(name: str) -> str:
    """The metadata key of an embedding model's prompt `name` ("query", "document", ...)."""
    return Tribit.EMBED_PROMPT_PREFIX + name


def scale_key(tensor: str) -> str:
    """The metadata key holding the exact weight scale of ternary tensor `tensor`."""
    return Tribit.SCALE_PREFIX + tensor


# --- tensor names ------------------------------------------------------------------------

WEIGHT = ".weight"
TOKEN_EMBD = "token_embd" + WEIGHT
OUTPUT = "output" + WEIGHT  # the untied head
OUTPUT_NORM = "output_norm" + WEIGHT


def block_tensor(bid: int, suffix: str) -> str:
    """`blk.<bid>.<suffix>.weight`: a tensor of transformer block `bid`."""
    return f"blk.{bid}.{suffix}{WEIGHT}"


def scale_tensor(weight: str) -> str:
    """The optional one-value output multiplier `<base>.scale` of a projection `<base>.weight`
    (arch `bitnet`)."""
    return weight.removesuffix(WEIGHT) + ".scale"


@dataclass(frozen=True)
class Dims:
    """The widths a tensor shape is made of: `embd` (n_embd), `q` (n_head * head_dim),
    `kv` (n_head_kv * head_dim), `ff` (n_ff) and `head` (head_dim)."""

    embd: int
    q: int
    kv: int
    ff: int
    head: int = 0

    @classmethod
    def of(cls, n_embd: int, n_ff: int, n_head: int, n_head_kv: int, head_dim: int) -> Dims:
        return cls(n_embd, n_head * head_dim, n_head_kv * head_dim, n_ff, head_dim)


@dataclass(frozen=True)
class Projection:
    """A ternary projection of a block: `which` is tribit's short name (BitNetLM attribute,
    the native core's slot), `suffix` the GGUF tensor name under `blk.<i>.`, and `rows`,
    `cols` the `Dims` fields of its (M, K) shape (numpy order)."""

    which: str
    suffix: str
    rows: str
    cols: str

    def shape(self, dims: Dims) -> tuple[int, int]:
        return getattr(dims, self.rows), getattr(dims, self.cols)


@dataclass(frozen=True)
class Norm:
    """An RMSNorm weight of a block: GGUF suffix under `blk.<i>.` and its `Dims` width."""

    suffix: str
    width: str

    def shape(self, dims: Dims) -> tuple[int]:
        return (getattr(dims, self.width),)


PROJECTIONS: tuple[Projection, ...] = (
    Projection("q", "attn_q", "q", "embd"),
    Projection("k", "attn_k", "kv", "embd"),
    Projection("v", "attn_v", "kv", "embd"),
    Projection("o", "attn_output", "embd", "q"),
    Projection("gate", "ffn_gate", "ff", "embd"),
    Projection("up", "ffn_up", "ff", "embd"),
    Projection("down", "ffn_down", "embd", "ff"),
)
PROJECTION = {p.which: p for p in PROJECTIONS}

ATTN_NORM = Norm("attn_norm", "embd")
ATTN_SUB_NORM = Norm("attn_sub_norm", "q")  # sub-LN archs only (docs/FORMATS.md 1.4)
FFN_NORM = Norm("ffn_norm", "embd")
FFN_SUB_NORM = Norm("ffn_sub_norm", "ff")  # sub-LN archs only
NORMS: tuple[Norm, ...] = (ATTN_NORM, ATTN_SUB_NORM, FFN_NORM, FFN_SUB_NORM)
ATTN_Q_NORM = Norm("attn_q_norm", "head")  # per-head q norm, Qwen3 (docs/FORMATS.md 1.6)
ATTN_K_NORM = Norm("attn_k_norm", "head")  # per-head k norm, Qwen3
QK_NORMS: tuple[Norm, ...] = (ATTN_Q_NORM, ATTN_K_NORM)

# optional input norm of each projection, `blk.<i>.<projection>_norm_in.weight`, as wide as
# the projection's input (BitNet-embedding; docs/FORMATS.md 1.6): present -> applied
NORM_IN_SUFFIX = "_norm_in"
INPUT_NORM: dict[str, Norm] = {
    p.which: Norm(p.suffix + NORM_IN_SUFFIX, p.cols) for p in PROJECTIONS
}
