"""Reading Hugging Face checkpoint directories: config.json and safetensors, lazily.

A checkpoint is a directory with `config.json` and either one `*.safetensors` file or shards
listed in `model.safetensors.index.json`. Tensors are located by parsing each file's safetensors
header ourselves (8-byte little-endian length + JSON) and read one at a time through `np.memmap`,
so converting a 16 GB checkpoint never holds more than one tensor in memory. This also covers
bf16, which `safetensors.safe_open(framework="numpy")` cannot return.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tribit.errors import FormatError
from tribit.formats.keys import Arch
from tribit.quant import bf16_to_f32

# safetensors dtype -> numpy dtype (BF16 is read as uint16 and widened by bf16_to_f32)
_DTYPES = {
    "F64": np.float64,
    "F32": np.float32,
    "F16": np.float16,
    "BF16": np.uint16,
    "I64": np.int64,
    "I32": np.int32,
    "I16": np.int16,
    "I8": np.int8,
    "U8": np.uint8,
    "BOOL": np.bool_,
}
_MAX_HEADER = 100 * 1024 * 1024  # safetensors' own limit
_CHUNK = 1 << 24  # elements per bf16 widening step


@dataclass(frozen=True)
class TensorEntry:
    """Where one tensor lives: file, dtype (safetensors name), shape, absolute byte range."""

    name: str
    path: Path
    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int


def load_config(hf_dir: str | Path) -> dict:
    """Read `config.json` of a checkpoint directory; FormatError when missing or invalid."""
    path = Path(hf_dir) / "config.json"
    if not path.is_file():
        raise FormatError(f"{hf_dir}: no config.json (not a Hugging Face checkpoint directory)")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise FormatError(f"{path}: invalid JSON: {e}") from e
    if not isinstance(config, dict):
        raise FormatError(f"{path}: expected a JSON object")
    return config


def _read_header(path: Path) -> list[TensorEntry]:
    """Parse and validate one safetensors header against the file size."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise FormatError(f"{path}: truncated safetensors header")
        (n,) = struct.unpack("<Q", raw)
        if n > _MAX_HEADER or 8 + n > size:
            raise FormatError(f"{path}: safetensors header length {n} exceeds the file")
        try:
            header = json.loads(f.read(n))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise FormatError(f"{path}: invalid safetensors header: {e}") from e
    if not isinstance(header, dict):
        raise FormatError(f"{path}: safetensors header is not an object")
    base = 8 + n
    entries = []
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype = info["dtype"]
            shape = tuple(int(d) for d in info["shape"])
            begin, end = (int(x) for x in info["data_offsets"])
        except (KeyError, TypeError, ValueError) as e:
            raise FormatError(f"{path}: bad header entry for tensor {name!r}") from e
        if dtype not in _DTYPES:
            raise FormatError(f"{path}: tensor {name!r} has unsupported dtype {dtype}")
        nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(_DTYPES[dtype]).itemsize
        if any(d < 0 for d in shape) or begin < 0 or end - begin != nbytes or base + end > size:
            raise FormatError(
                f"{path}: tensor {name!r} ({dtype} {list(shape)}) has bad data offsets "
                f"[{begin}, {end}) for a file of {size} bytes"
            )
        entries.append(TensorEntry(name, path, dtype, shape, base + begin, base + end))
    return entries


class Checkpoint:
    """Lazy view of the safetensors tensors of a checkpoint directory.

    `entries[name]` gives shape and dtype without reading data; `read(name)` returns one tensor
    (bf16 widened to float32; other dtypes as stored), `read_f32(name)` always float32.
    """

    def __init__(self, hf_dir: str | Path):
        self.dir = Path(hf_dir)
        self.config = load_config(self.dir)
        self.entries: dict[str, TensorEntry] = {}
        for path in self._files():
            for e in _read_header(path):
                if e.name in self.entries:
                    raise FormatError(f"{self.dir}: tensor {e.name!r} appears in two files")
                self.entries[e.name] = e
        if not self.entries:
            raise FormatError(f"{self.dir}: the safetensors files hold no tensors")

    def _files(self) -> list[Path]:
        index = self.dir / "model.safetensors.index.json"
        if index.is_file():
            try:
                weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
                names = sorted(set(weight_map.values()))
            except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
                raise FormatError(f"{index}: invalid index ({e})") from e
            files = []
            for name in names:
                p = (self.dir / name).resolve()
                if p.parent != self.dir.resolve() or not p.is_file():
                    raise FormatError(f"{index}: shard {name!r} is missing")
                files.append(p)
            return files
        files = sorted(self.dir.glob("*.safetensors"))
        if not files:
            raise FormatError(
                f"{self.dir}: no *.safetensors files (pytorch .bin checkpoints are not supported)"
            )
        return files

    def __contains__(self, name: str) -> bool:
        return name in self.entries

    def shape(self, name: str) -> tuple[int, ...]:
        """Shape of a tensor as stored (numpy order)."""
        return self._entry(name).shape

    def dtype(self, name: str) -> str:
        """safetensors dtype name of a tensor ("BF16", "U8", ...)."""
        return self._entry(name).dtype

    def _entry(self, name: str) -> TensorEntry:
        try:
            return self.entries[name]
        except KeyError:
            raise FormatError(f"{self.dir}: tensor {name!r} is missing") from None

    def read(self, name: str) -> np.ndarray:
        """Read one tensor into memory; bf16 becomes float32."""
        e = self._entry(name)
        dt = np.dtype(_DTYPES[e.dtype]).newbyteorder("<")
        count = int(np.prod(e.shape, dtype=np.int64))
        if count == 0:
            return np.zeros(e.shape, np.float32 if e.dtype == "BF16" else dt.newbyteorder("="))
        mm = np.memmap(e.path, dtype=dt, mode="r", offset=e.begin, shape=(count,))
        try:
            if e.dtype == "BF16":
                # widen in chunks: peak = the f32 result + one chunk, not 3x the tensor
                out = np.empty(count, dtype=np.float32)
                for i in range(0, count, _CHUNK):
                    out[i : i + _CHUNK] = bf16_to_f32(np.asarray(mm[i : i + _CHUNK]))
                return out.reshape(e.shape)
            return np.array(mm, dtype=dt.newbyteorder("=")).reshape(e.shape)
        finally:
            del mm

    def read_f32(self, name: str) -> np.ndarray:
        """Read one tensor as float32 (for norms, embeddings, float weights)."""
        arr = self.read(name)
        if arr.dtype.kind != "f":
            raise FormatError(
                f"{self.dir}: tensor {name!r} has dtype {self.dtype(name)}, expected a float type"
            )
        return np.ascontiguousarray(arr, dtype=np.float32)


# --- family detection -------------------------------------------------------------------

#: family name -> (GGUF arch, what it covers), in the order shown to users.
SUPPORTED = {
    "bitnet-b1.58": (
        Arch.BITNET_B158,
        "microsoft/bitnet-b1.58-2B-4T (packed) and -bf16 (BitNetForCausalLM, model_type bitnet)",
    ),
    "1bitllm": (
        Arch.BITNET,
        "1bitLLM/bitnet_b1_58-large, -3B (BitnetForCausalLM, model_type llama)",
    ),
    "llama-bitnet": (
        Arch.LLAMA,
        "HF1BitLLM/Llama3-8B-1.58, tiiuae Falcon3-*-1.58bit, Falcon-E "
        "(LlamaForCausalLM + quantization_config quant_method bitnet)",
    ),
    "bitnet-embedding": (
        Arch.QWEN3,
        "microsoft/bitnet-embedding-0.6b (model_type qwen3 with an input RMSNorm per "
        "projection, `<proj>.norm.weight`; an embedding model)",
    ),
}


def _supported_text() -> str:
    return "; ".join(f"{desc} -> arch {arch}" for arch, desc in SUPPORTED.values())


def detect_family(config: dict) -> str:
    """Name the checkpoint family of a config.json (a key of SUPPORTED) or raise FormatError.

    Detection uses `architectures[0]`, `model_type` and `quantization_config`; anything else is
    refused with the list of what is supported.
    """
    archs = config.get("architectures") or []
    arch0 = archs[0] if isinstance(archs, list) and archs else None
    model_type = config.get("model_type")
    qc = config.get("quantization_config") or {}
    if not isinstance(qc, dict):
        raise FormatError("config.json: quantization_config is not an object")
    if model_type == "gemma3_text":
        raise FormatError(
            "config.json: model_type 'gemma3_text' (BitNet-embedding 270M is a Gemma3 block): "
            f"tribit does not run Gemma3. Supported: {_supported_text()}"
        )
    if model_type == "qwen3":
        # BitNet-embedding: the plan builder refuses a plain Qwen3 (no input norms: not ternary)
        family = "bitnet-embedding"
    elif qc.get("use_rms_norm"):
        raise FormatError(
            "config.json: quantization_config.use_rms_norm is true: an extra RMSNorm inside every "
            "BitLinear, which neither bitnet.cpp, llama.cpp nor tribit implements"
        )
    elif model_type == "bitnet" or arch0 == "BitNetForCausalLM":
        family = "bitnet-b1.58"
    elif arch0 == "BitnetForCausalLM" and model_type == "llama":
        family = "1bitllm"
    elif arch0 == "LlamaForCausalLM" and qc.get("quant_method") == "bitnet":
        family = "llama-bitnet"
    elif arch0 == "LlamaForCausalLM":
        raise FormatError(
            "config.json: LlamaForCausalLM without quantization_config.quant_method 'bitnet' is "
            f"not a ternary checkpoint. Supported: {_supported_text()}"
        )
    else:
        raise FormatError(
            f"config.json: unsupported model (architectures {archs!r}, model_type "
            f"{model_type!r}). Supported: {_supported_text()}"
        )
    if qc and qc.get("quant_method") not in (None, "bitnet"):
        raise FormatError(
            f"config.json: quantization_config.quant_method {qc.get('quant_method')!r} is not "
            "'bitnet'"
        )
    return family
