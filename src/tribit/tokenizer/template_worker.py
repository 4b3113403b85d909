"""Chat templates from model files, rendered in a child process under a hard budget.

jinja2's sandbox stops escapes, not work: nested `range(100000)` loops, an exponential
macro, `~` concatenation in a loop, `'x'|center(10**9)` or `tojson(indent=30000)` run for
minutes or take gigabytes inside one C call, where no in-process check can stop them. So a
template that came with a model is rendered by a persistent worker process (`python -m
tribit.tokenizer.template_worker`) whose address space is capped (RLIMIT_AS, Linux) and
which is killed when a render runs past its time budget; the caller gets a TribitError and
the next render starts a fresh worker. Built-in templates are trusted and render in-process.

Protocol on the worker's stdin/stdout: 4-byte little-endian length + JSON, both ways.
Request {"source", "ctx"}; answer {"text"} or {"error"}.
"""

from __future__ import annotations

import atexit
import json
import os
import select
import struct
import subprocess
import sys
import threading
import time
from typing import Any

from ..errors import TribitError

DEFAULT_TIMEOUT_S = 2.0
DEFAULT_MEMORY_BYTES = 512 << 20  # on top of what the worker has after start-up
_MAX_MESSAGE = 1 << 30


class TemplateBudgetError(TribitError):
    """A chat template ran past its time or memory budget."""


def _read_exact(fd: int, n: int, deadline: float | None) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise TimeoutError
        chunk = os.read(fd, n - len(buf))
        if not chunk:
            raise EOFError
        buf += chunk
    return bytes(buf)


def _write_message(fd: int, obj: Any) -> None:
    data = json.dumps(obj, ensure_ascii=True, default=str).encode()
    view = memoryview(struct.pack("<I", len(data)) + data)
    while view:
        view = view[os.write(fd, view) :]


def _read_message(fd: int, deadline: float | None) -> Any:
    (n,) = struct.unpack("<I", _read_exact(fd, 4, deadline))
    if n > _MAX_MESSAGE:
        raise EOFError
    return json.loads(_read_exact(fd, n, deadline))


class TemplateRunner:
    """Renders template sources in a budgeted worker process (see module doc). Thread-safe:
    renders are serialised (each takes milliseconds unless hostile, and a hostile one is
    cut at `timeout_s`)."""

    def __init__(
        self, timeout_s: float = DEFAULT_TIMEOUT_S, memory_bytes: int = DEFAULT_MEMORY_BYTES
    ) -> None:
        self.timeout_s = float(timeout_s)
        self.memory_bytes = int(memory_bytes)
        self._proc: subprocess.Popen | None = None
        self._lock = threading.Lock()
        self.restarts = 0

    def _start(self) -> subprocess.Popen:
        env = dict(os.environ, TRIBIT_TEMPLATE_MEMORY=str(self.memory_bytes))
        src = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
        proc = subprocess.Popen(
            [sys.executable, "-m", "tribit.tokenizer.template_worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
            close_fds=True,
        )
        # the worker says "ready" once jinja2 is imported and its limit set (not counted
        # against a render's budget)
        try:
            if _read_message(proc.stdout.fileno(), time.monotonic() + 60) != "ready":
                raise EOFError
        except (EOFError, TimeoutError, ValueError):
            self._kill(proc)
            raise TribitError("the chat template worker process did not start") from None
        return proc

    @staticmethod
    def _kill(proc: subprocess.Popen) -> None:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        for f in (proc.stdin, proc.stdout):
            if f is not None:
                f.close()

    def render(self, source: str, ctx: dict[str, Any]) -> str:
        """The template's output for `ctx`; TribitError for a template error, and
        TemplateBudgetError when it runs past the time or memory budget."""
        with self._lock:
            if self._proc is None or self._proc.poll() is not None:
                self._proc = self._start()
            proc = self._proc
            try:
                _write_message(proc.stdin.fileno(), {"source": source, "ctx": ctx})
                answer = _read_message(proc.stdout.fileno(), time.monotonic() + self.timeout_s)
            except TimeoutError:
                self._reset(proc)
                raise TemplateBudgetError(
                    f"the chat template ran past its time budget ({self.timeout_s:g} s)"
                ) from None
            except (EOFError, OSError, ValueError):
                self._reset(proc)
                raise TemplateBudgetError(
                    "the chat template ran out of its memory budget "
                    f"({self.memory_bytes >> 20} MiB) or crashed the worker"
                ) from None
        if "error" in answer:
            if answer.get("budget"):
                raise TemplateBudgetError(
                    f"the chat template ran out of its memory budget "
                    f"({self.memory_bytes >> 20} MiB): {answer['error']}"
                )
            raise TribitError(answer["error"])
        return answer["text"]

    def _reset(self, proc: subprocess.Popen) -> None:
        self._kill(proc)
        self._proc = None
        self.restarts += 1

    def close(self) -> None:
        with self._lock:
            if self._proc is not None:
                self._kill(self._proc)
                self._proc = None

    def __del__(self) -> None:  # pragma: no cover - best effort at interpreter exit
        try:
            if self._proc is not None and self._proc.poll() is None:
                self._proc.kill()
        except Exception:
            pass


_default: TemplateRunner | None = None
_default_lock = threading.Lock()


def default_runner() -> TemplateRunner:
    """The process-wide runner (created on first use)."""
    global _default
    with _default_lock:
        if _default is None:
            _default = TemplateRunner()
            atexit.register(_default.close)  # the worker ends with us, reaped and closed
        return _default


def _limit_memory() -> None:
    extra = int(os.environ.get("TRIBIT_TEMPLATE_MEMORY", DEFAULT_MEMORY_BYTES))
    try:
        import resource

        with open("/proc/self/statm") as f:
            vm = int(f.read().split()[0]) * resource.getpagesize()
        resource.setrlimit(resource.RLIMIT_AS, (vm + extra, resource.RLIM_INFINITY))
    except (ImportError, OSError, ValueError):  # pragma: no cover - not Linux: time only
        pass


def main() -> None:
    """The worker loop (see module doc)."""
    import jinja2.sandbox  # noqa: F401 - imported before the limit is set

    from .chat import _render_source

    _limit_memory()
    fin, fout = sys.stdin.fileno(), sys.stdout.fileno()
    _write_message(fout, "ready")
    while True:
        try:
            req = _read_message(fin, None)
        except (EOFError, OSError):
            return
        try:
            answer = {"text": _render_source(req["source"], req["ctx"])}
        except MemoryError:
            answer = {"error": "the chat template ran out of its memory budget", "budget": True}
        except TribitError as e:
            budget = "exhausted resources: MemoryError" in str(e)
            answer = {"error": str(e), "budget": budget}
        except Exception as e:  # pragma: no cover - _render_source maps template errors
            answer = {"error": f"the chat template failed: {type(e).__name__}: {e}"}
        try:
            _write_message(fout, answer)
        except MemoryError:
            _write_message(
                fout, {"error": "the chat template's output is too large", "budget": True}
            )


if __name__ == "__main__":
    main()
