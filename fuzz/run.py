"""Fuzz harness for tribit's untrusted inputs (issue 17, item 10).

Targets:
  gguf      GGUFReader on arbitrary bytes: only FormatError may come out.
  load      the full `tribit.load` path (reader, config, tokenizer/tensor checks, native
            model) plus one forward and one tokenize: only FormatError/ModelError/TribitError.
  template  chat-template rendering in the sandbox (in-process, 2 s alarm): only TribitError.

Usage (from the repository root):
  python fuzz/run.py gguf -runs=1000000            # coverage-guided (atheris + libFuzzer)
  python fuzz/run.py load -runs=20000 -max_len=400000
  python fuzz/run.py template -runs=100000
  python fuzz/run.py gguf --plain --runs 5000      # no atheris: seeded random mutations

With atheris (pip install atheris) the run is coverage-guided: libFuzzer mutates a seed corpus
written from valid files (tests/tiny_models.py, tests/gguf_builder.py) and the built-in
templates; any other exception is a finding (libFuzzer stops and writes crash-<sha1>).
`--plain` is a dependency-free mutation loop (bit flips, truncation, inserted bytes, extreme
integers) used by the CI smoke test (tests/test_fuzz_smoke.py); it prints one summary line:
`target=... inputs=N seconds=S rate=R/s expected_errors=E accepted=A findings=F`.
Numbers of the long runs: docs/FUZZING.md.
"""

from __future__ import annotations

import os
import random
import struct
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # seed writers


def _use_source_tree() -> None:
    """Import tribit from ROOT/src with plain loaders (atheris cannot instrument modules that
    an editable install's redirecting finder loads) and the built core from ROOT/build."""
    if not (ROOT / "src" / "tribit").is_dir():
        return
    sys.meta_path[:] = [f for f in sys.meta_path if "Redirecting" not in type(f).__name__]
    sys.path.insert(0, str(ROOT / "src"))
    if "TRIBIT_CORE_DIR" not in os.environ:
        cores = sorted(
            (
                c for c in (ROOT / "build").glob("*/_core*.so") if c.parent.name != "asan"
            ),  # scripts/sanitize.sh's: needs preload
            key=lambda p: p.stat().st_mtime,
        )
        if cores:
            os.environ["TRIBIT_CORE_DIR"] = str(cores[-1].parent)


_use_source_tree()

EXTREMES = [0, 1, 2**31 - 1, 2**31, 2**32 - 1, 2**53, 2**55, 2**63, 2**64 - 1, 255, 4000]


# -- seeds ----------------------------------------------------------------------------------
def gguf_seeds() -> list[bytes]:
    from gguf_builder import valid_file

    seeds = [valid_file()]
    seeds += load_seeds()[:1]
    return seeds


_LOAD_SEEDS: list[bytes] | None = None


def load_seeds() -> list[bytes]:
    """Small valid models: TQ2_0, TQ1_0 and I2_S projections, tied and untied heads."""
    global _LOAD_SEEDS
    if _LOAD_SEEDS is None:
        from tiny_models import tiny_model

        out = []
        with tempfile.TemporaryDirectory() as d:
            for i, kw in enumerate(
                [
                    dict(qtype="tq2_0"),
                    dict(qtype="tq1_0", emb_type="f16"),
                    dict(qtype="i2_s", arch="llama", emb_type="q8_0"),
                ]
            ):
                p = tiny_model(
                    Path(d) / f"s{i}.gguf",
                    n_embd=256,
                    n_ff=256,
                    n_layer=1,
                    n_vocab=260,
                    ctx=64,
                    **kw,
                )
                out.append(Path(p).read_bytes())
        _LOAD_SEEDS = out
    return _LOAD_SEEDS


def template_seeds() -> list[bytes]:
    from tribit.tokenizer.chat import BUILTIN_TEMPLATES

    extra = [
        "{% for m in messages %}{{ m.role|upper }}: {{ m.content|trim }}\n{% endfor %}",
        "{{ messages|tojson }}{% if add_generation_prompt %}{{ bos_token }}{% endif %}",
        "{% set ns = namespace(n=0) %}{% for m in messages %}{% set ns.n = ns.n + 1 %}"
        "{% endfor %}{{ ns.n }}{{ raise_exception('x') if ns.n > 9 }}",
        "{{ ''.__class__ }}{{ cycler.__init__ }}{{ 'a' * 3 }}{{ 2 ** 10 }}",
    ]
    return [t.encode() for t in [*BUILTIN_TEMPLATES.values(), *extra]]


# -- targets --------------------------------------------------------------------------------
class Target:
    name = ""
    expected: tuple[type[BaseException], ...] = ()
    instrument = ("tribit",)  # packages atheris instruments for coverage

    def seeds(self) -> list[bytes]:
        raise NotImplementedError

    def __call__(self, data: bytes) -> bool:
        """Run one input; True if it was accepted (a valid file / a render)."""
        raise NotImplementedError


class _FileTarget(Target):
    def __init__(self) -> None:
        shm = "/dev/shm" if os.path.isdir("/dev/shm") else None
        fd, self.path = tempfile.mkstemp(suffix=".gguf", dir=shm)
        os.close(fd)

    def write(self, data: bytes) -> None:
        with open(self.path, "wb") as f:
            f.write(data)


class GgufTarget(_FileTarget):
    name = "gguf"

    def __init__(self) -> None:
        super().__init__()
        from tribit.errors import FormatError
        from tribit.formats import GGUFReader

        self.reader, self.expected = GGUFReader, (FormatError,)

    def seeds(self) -> list[bytes]:
        return gguf_seeds()

    def __call__(self, data: bytes) -> bool:
        self.write(data)
        try:
            r = self.reader(self.path)
        except self.expected:
            return False
        for key, value in r.metadata.items():
            assert isinstance(key, str)
            repr(value)
        for name, ti in r.tensors.items():
            raw = r.raw(name)
            assert raw.size == ti.nbytes, name
            int(raw[:16].sum())
        r.close()
        return True


class LoadTarget(_FileTarget):
    name = "load"

    def __init__(self) -> None:
        super().__init__()
        import warnings

        import tribit

        warnings.simplefilter("ignore")
        self.load = tribit.load
        self.expected = (tribit.TribitError,)

    def seeds(self) -> list[bytes]:
        return load_seeds()

    def __call__(self, data: bytes) -> bool:
        self.write(data)
        try:
            m = self.load(self.path, n_threads=1, n_ctx=16)
            m.forward([0, 1], 0)
            m.tokenize("Mary went to the garden.")
        except self.expected:
            return False
        return True


class TemplateTarget(Target):
    name = "template"
    instrument = ("tribit", "jinja2", "markupsafe")

    def __init__(self) -> None:
        import signal

        import jinja2.ext  # noqa: F401 - imported here, inside atheris' instrumentation
        import jinja2.sandbox  # noqa: F401

        from tribit.errors import TribitError
        from tribit.tokenizer.chat import _render_source

        class Alarm(Exception):
            pass

        def on_alarm(signum, frame):
            raise Alarm()

        signal.signal(signal.SIGALRM, on_alarm)
        self.render, self.alarm = _render_source, Alarm
        # a render past 2 s or out of memory is what the worker's budget is for (expected)
        self.expected = (TribitError, Alarm, MemoryError)
        self.ctx = {
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": "<|eot_id|>hi {{ x }}"},
            ],
            "add_generation_prompt": True,
            "bos_token": "<s>",
            "eos_token": "</s>",
        }

    def seeds(self) -> list[bytes]:
        return template_seeds()

    def __call__(self, data: bytes) -> bool:
        import copy
        import signal

        src = data.decode("utf-8", errors="replace")
        signal.setitimer(signal.ITIMER_REAL, 2.0)
        try:
            self.render(src, copy.deepcopy(self.ctx))
        except self.expected:
            return False
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        return True


TARGETS = {"gguf": GgufTarget, "load": LoadTarget, "template": TemplateTarget}


# -- plain mutation loop --------------------------------------------------------------------
def mutate(rng: random.Random, blob: bytes) -> bytes:
    b = bytearray(blob)
    for _ in range(rng.randint(1, 4)):
        if not b:
            break
        pos = rng.randrange(len(b))
        kind = rng.choice(("flip", "truncate", "insert", "u64", "u32", "byte"))
        if kind == "flip":
            b[pos] ^= 1 << rng.randrange(8)
        elif kind == "byte":
            b[pos] = rng.randrange(256)
        elif kind == "truncate":
            del b[pos:]
        elif kind == "insert":
            b[pos:pos] = rng.randbytes(rng.randint(1, 16))
        elif kind == "u64" and pos + 8 <= len(b):
            b[pos : pos + 8] = struct.pack("<Q", rng.choice(EXTREMES) % 2**64)
        elif kind == "u32" and pos + 4 <= len(b):
            b[pos : pos + 4] = struct.pack("<I", rng.choice(EXTREMES) & 0xFFFFFFFF)
    return bytes(b)


def run_plain(target: Target, runs: int, seed: int, max_seconds: float | None) -> int:
    rng = random.Random(seed)
    seeds = target.seeds()
    t0 = time.perf_counter()
    n = rejected = accepted = findings = 0
    for n in range(1, runs + 1):
        data = mutate(rng, rng.choice(seeds)) if n > len(seeds) else seeds[n - 1]
        try:
            if target(data):
                accepted += 1
            else:
                rejected += 1
        except Exception:
            findings += 1
            out = Path(f"finding-{target.name}-{n}.bin")
            out.write_bytes(data)
            print(f"FINDING (input saved to {out}):", file=sys.stderr)
            traceback.print_exc()
        if max_seconds is not None and time.perf_counter() - t0 > max_seconds:
            break
    dt = time.perf_counter() - t0
    print(
        f"target={target.name} inputs={n} seconds={dt:.1f} rate={n / dt:.0f}/s "
        f"expected_errors={rejected} accepted={accepted} findings={findings}",
        flush=True,
    )
    return 1 if findings else 0


# -- atheris -------------------------------------------------------------------------------
def run_atheris(target_cls, argv: list[str]) -> None:
    import atheris

    with atheris.instrument_imports(include=list(target_cls.instrument)):
        target = target_cls()
    corpus = tempfile.mkdtemp(prefix=f"tribit-fuzz-{target.name}-")
    for i, s in enumerate(target.seeds()):
        Path(corpus, f"seed{i}").write_bytes(s)
    # libFuzzer: the first directory is the corpus it grows
    dirs = [a for a in argv[1:] if not a.startswith("-")]
    flags = [a for a in argv[1:] if a.startswith("-")]
    if not any(f.startswith("-max_len=") for f in flags):
        flags.append(f"-max_len={max(len(s) for s in target.seeds()) + 4096}")
    counts = [0, 0]  # inputs, accepted

    def one(data: bytes) -> None:
        counts[0] += 1
        counts[1] += bool(target(data))
        if counts[0] % 5000 == 0:  # libFuzzer does not know what "accepted" means
            print(
                f"tribit-fuzz: target={target.name} inputs={counts[0]} accepted={counts[1]}",
                file=sys.stderr,
                flush=True,
            )

    atheris.Setup([argv[0], *flags, *(dirs or [corpus])], one)
    atheris.Fuzz()


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in TARGETS:
        print(__doc__)
        return 2
    name, rest = argv[0], argv[1:]
    if "--plain" in rest:
        import argparse

        p = argparse.ArgumentParser(prog=f"fuzz/run.py {name} --plain")
        p.add_argument("--plain", action="store_true")
        p.add_argument("--runs", type=int, default=1000)
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--max-seconds", type=float, default=None)
        a = p.parse_args(rest)
        return run_plain(TARGETS[name](), a.runs, a.seed, a.max_seconds)
    run_atheris(TARGETS[name], [f"fuzz-{name}", *rest])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
