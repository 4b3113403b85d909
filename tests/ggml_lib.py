"""Mainline ggml's own quantizers and dot products, called through ctypes from the shared
libraries llama-cpp-python ships (built from llama.cpp's sources by pip): an independent
reference for tribit's numpy spec of Q2_0 / Q1_0 / Q8_0 (tests/test_lowbit.py).

`ggml_get_type_traits(type)` (ggml-base) gives `to_float` and `from_float_ref`;
`ggml_get_type_traits_cpu(type)` (ggml-cpu) gives the run-time `from_float` and `vec_dot`
that llama.cpp's matmul uses on this CPU. ggml-cpu also exports the float vector functions
that llama.cpp's graph ops call (`ggml_vec_dot_f32`, `ggml_vec_soft_max_f32`,
`ggml_vec_swiglu_f32`): the reference of tribit's "llama.cpp's float ops" (kernels.h),
which follow ggml's AVX-512 build (`avx512`).
"""

from __future__ import annotations

import ctypes
from pathlib import Path

import numpy as np

Q8_0, Q1_0, Q2_0 = 8, 41, 42

_FLOAT_P = ctypes.POINTER(ctypes.c_float)
_TO_FLOAT = ctypes.CFUNCTYPE(None, ctypes.c_void_p, _FLOAT_P, ctypes.c_int64)
_FROM_FLOAT = ctypes.CFUNCTYPE(None, _FLOAT_P, ctypes.c_void_p, ctypes.c_int64)
_VEC_DOT = ctypes.CFUNCTYPE(
    None,
    ctypes.c_int,
    _FLOAT_P,
    ctypes.c_size_t,
    ctypes.c_void_p,
    ctypes.c_size_t,
    ctypes.c_void_p,
    ctypes.c_size_t,
    ctypes.c_int,
)


class _Traits(ctypes.Structure):
    _fields_ = [
        ("type_name", ctypes.c_char_p),
        ("blck_size", ctypes.c_int64),
        ("blck_size_interleave", ctypes.c_int64),
        ("type_size", ctypes.c_size_t),
        ("is_quantized", ctypes.c_bool),
        ("to_float", _TO_FLOAT),
        ("from_float_ref", _FROM_FLOAT),
    ]


class _TraitsCpu(ctypes.Structure):
    _fields_ = [
        ("from_float", _FROM_FLOAT),
        ("vec_dot", _VEC_DOT),
        ("vec_dot_type", ctypes.c_int),
        ("nrows", ctypes.c_int64),
    ]


class GGML:
    """The few ggml entry points the tests need."""

    def __init__(self, libdir: Path):
        mode = ctypes.RTLD_GLOBAL
        self.base = ctypes.CDLL(str(libdir / "libggml-base.so"), mode=mode)
        self.cpu = ctypes.CDLL(str(libdir / "libggml-cpu.so"), mode=mode)
        self.base.ggml_get_type_traits.restype = ctypes.POINTER(_Traits)
        self.cpu.ggml_get_type_traits_cpu.restype = ctypes.POINTER(_TraitsCpu)
        self.cpu.ggml_cpu_init()  # the f16 tables the CPU kernels read
        self.cpu.ggml_vec_dot_f32.argtypes = [
            ctypes.c_int,
            _FLOAT_P,
            ctypes.c_size_t,
            _FLOAT_P,
            ctypes.c_size_t,
            _FLOAT_P,
            ctypes.c_size_t,
            ctypes.c_int,
        ]
        self.cpu.ggml_vec_dot_f32.restype = None
        self.cpu.ggml_vec_soft_max_f32.argtypes = [ctypes.c_int, _FLOAT_P, _FLOAT_P, ctypes.c_float]
        self.cpu.ggml_vec_soft_max_f32.restype = ctypes.c_double
        self.cpu.ggml_vec_swiglu_f32.argtypes = [ctypes.c_int, _FLOAT_P, _FLOAT_P, _FLOAT_P]
        self.cpu.ggml_vec_swiglu_f32.restype = None
        # the code paths built in: Q1_0's vec_dot order is AVX2's (8 FMA lanes), the float
        # vector functions' AVX-512's (GGML_NATIVE on an AVX-512 CPU)
        self.avx2 = bool(self.cpu.ggml_cpu_has_avx2())
        self.avx512 = bool(self.cpu.ggml_cpu_has_avx512())

    def _t(self, typ: int) -> _Traits:
        return self.base.ggml_get_type_traits(typ).contents

    def _c(self, typ: int) -> _TraitsCpu:
        return self.cpu.ggml_get_type_traits_cpu(typ).contents

    def row_bytes(self, typ: int, k: int) -> int:
        t = self._t(typ)
        return k // t.blck_size * t.type_size

    def quantize_ref(self, typ: int, x: np.ndarray) -> np.ndarray:
        """Rows of x through `from_float_ref` (the file quantizer)."""
        x = np.ascontiguousarray(x, np.float32)
        out = np.zeros((x.shape[0], self.row_bytes(typ, x.shape[1])), np.uint8)
        fn = self._t(typ).from_float_ref
        for r in range(x.shape[0]):
            fn(x[r].ctypes.data_as(_FLOAT_P), out[r].ctypes.data, x.shape[1])
        return out

    def quantize_runtime(self, typ: int, x: np.ndarray) -> np.ndarray:
        """Rows of x through the CPU backend's `from_float` (activations at run time)."""
        x = np.ascontiguousarray(x, np.float32)
        out = np.zeros((x.shape[0], self.row_bytes(typ, x.shape[1])), np.uint8)
        fn = self._c(typ).from_float
        for r in range(x.shape[0]):
            fn(x[r].ctypes.data_as(_FLOAT_P), out[r].ctypes.data, x.shape[1])
        return out

    def dequantize(self, typ: int, raw: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
        raw = np.ascontiguousarray(raw, np.uint8).reshape(shape[0], -1)
        out = np.zeros(shape, np.float32)
        fn = self._t(typ).to_float
        for r in range(shape[0]):
            fn(raw[r].ctypes.data, out[r].ctypes.data_as(_FLOAT_P), shape[1])
        return out

    def matmul(
        self, typ: int, raw: np.ndarray, shape: tuple[int, int], x: np.ndarray
    ) -> np.ndarray:
        """y (n, m) as llama.cpp's CPU matmul computes it: x quantized to the type's
        vec_dot_type with the run-time quantizer, then vec_dot per (row, token)."""
        m, k = shape
        c = self._c(typ)
        xq = self.quantize_runtime(c.vec_dot_type, x)
        raw = np.ascontiguousarray(raw, np.uint8).reshape(m, -1)
        y = np.zeros((x.shape[0], m), np.float32)
        s = ctypes.c_float()
        for j in range(x.shape[0]):
            for r in range(m):
                c.vec_dot(k, ctypes.byref(s), 0, raw[r].ctypes.data, 0, xq[j].ctypes.data, 0, 1)
                y[j, r] = s.value
        return y

    def vec_dot_f32(self, x: np.ndarray, y: np.ndarray) -> np.float32:
        x = np.ascontiguousarray(x, np.float32)
        y = np.ascontiguousarray(y, np.float32)
        s = ctypes.c_float()
        p = x.ctypes.data_as(_FLOAT_P)
        self.cpu.ggml_vec_dot_f32(
            x.size, ctypes.byref(s), 0, p, 0, y.ctypes.data_as(_FLOAT_P), 0, 1
        )
        return np.float32(s.value)

    def vec_soft_max_f32(self, x: np.ndarray, mx: float) -> tuple[np.ndarray, float]:
        """(exp(x - mx) per value, their sum in double) as ggml's softmax op computes them."""
        x = np.ascontiguousarray(x, np.float32)
        y = np.zeros_like(x)
        s = self.cpu.ggml_vec_soft_max_f32(
            x.size, y.ctypes.data_as(_FLOAT_P), x.ctypes.data_as(_FLOAT_P), mx
        )
        return y, s

    def vec_swiglu_f32(self, x: np.ndarray, g: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, np.float32)
        g = np.ascontiguousarray(g, np.float32)
        y = np.zeros_like(x)
        self.cpu.ggml_vec_swiglu_f32(
            x.size,
            y.ctypes.data_as(_FLOAT_P),
            x.ctypes.data_as(_FLOAT_P),
            g.ctypes.data_as(_FLOAT_P),
        )
        return y


def load() -> GGML | None:
    """ggml from the installed llama-cpp-python, or None when it is not installed."""
    try:
        import llama_cpp
    except ImportError:
        return None
    libdir = Path(llama_cpp.__file__).parent / "lib"
    if not (libdir / "libggml-cpu.so").exists():
        return None
    return GGML(libdir)
