"""Rewrite a bAbI model file with the chat metadata of `tribit.train.babi.model_metadata()`
(chat template, description, example prompts), with tribit's GGUF writer: every other key
(with its type) and every tensor's bytes are kept as they are.

    python scripts/babi_chat_metadata.py src/tribit/data/babi-tiny.gguf [OUT.gguf]

`tribit train babi` writes these keys itself; this is for files exported before it did.
"""

from __future__ import annotations

import sys
from pathlib import Path

from tribit.formats import GGUFValueType, GGUFWriter
from tribit.formats.gguf_reader import GGUFReader
from tribit.train.babi import model_metadata


def rewrite(src: Path, dst: Path, updates: dict) -> None:
    with GGUFReader(src) as r:
        w = GGUFWriter(dst)
        for k, v in r.metadata.items():
            if k not in updates:  # arrays: element types inferred, as export_gguf wrote them
                vt = r.metadata_types[k]
                w.add_metadata(k, v, None if vt == GGUFValueType.ARRAY else vt)
        for k, v in updates.items():
            w.add_metadata(k, v)
        for name, ti in r.tensors.items():
            w.add_tensor(name, ti.shape, ti.ggml_type, bytes(r.raw(name)))
        w.write()


def main(argv: list[str]) -> int:
    if not 1 <= len(argv) <= 2:
        print(__doc__, file=sys.stderr)
        return 2
    src = Path(argv[0])
    dst = Path(argv[1]) if len(argv) == 2 else src
    rewrite(src, dst, model_metadata())
    print(f"wrote {dst}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
