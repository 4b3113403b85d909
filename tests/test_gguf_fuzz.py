"""Random mutations of valid GGUF files give FormatError or a valid read, nothing else."""

import struct

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gguf_builder import valid_file
from tribit.errors import FormatError
from tribit.formats import GGUFReader

BASE = valid_file()
EXTREMES = [0, 1, 2**31, 2**32 - 1, 2**63, 2**64 - 1, 255]


@st.composite
def mutated(draw):
    blob = bytearray(BASE)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "truncate", "insert", "u64", "u32"]))
        pos = draw(st.integers(0, max(0, len(blob) - 1)))
        if not blob:
            break
        if kind == "flip":
            blob[pos] ^= draw(st.integers(1, 255))
        elif kind == "truncate":
            del blob[pos:]
        elif kind == "insert":
            blob[pos:pos] = draw(st.binary(min_size=1, max_size=16))
        elif kind == "u64" and pos + 8 <= len(blob):
            blob[pos : pos + 8] = struct.pack("<Q", draw(st.sampled_from(EXTREMES)))
        elif kind == "u32" and pos + 4 <= len(blob):
            blob[pos : pos + 4] = struct.pack("<I", draw(st.sampled_from(EXTREMES)) & 0xFFFFFFFF)
    return bytes(blob)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(blob=mutated())
def test_mutations_fail_cleanly(tmp_path, blob):
    p = tmp_path / "m.gguf"
    p.write_bytes(blob)
    try:
        r = GGUFReader(p)
    except FormatError:
        return
    for key, value in r.metadata.items():
        assert isinstance(key, str)
        repr(value)
    for name, ti in r.tensors.items():
        raw = r.raw(name)
        assert raw.size == ti.nbytes
        int(np.asarray(raw[:16]).sum())
