"""Run `tribit serve` in a child process on a free loopback port, for tests that
need a real HTTP server (disconnects, chunked bodies, a browser)."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time

import httpx
import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_server(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def busy_slots(base: str, headers: dict | None = None) -> float:
    """The server's `tribit_requests_processing` gauge (busy sequence slots)."""
    text = httpx.get(base + "/metrics", headers=headers, timeout=10).text
    line = next(x for x in text.splitlines() if x.startswith("tribit_requests_processing "))
    return float(line.split()[1])


def wait_idle(base: str, headers: dict | None = None, timeout: float = 30.0,
              poll: float = 0.2) -> float:
    """Poll until no slot is busy or `timeout` passes; return the last busy count."""
    deadline = time.time() + timeout
    while (busy := busy_slots(base, headers)) > 0 and time.time() < deadline:
        time.sleep(poll)
    return busy


@contextlib.contextmanager
def serving(model, *args: str, timeout: float = 60.0):
    """Yield the base URL of `tribit serve -m model *args` once /health says ok."""
    port = free_port()
    cmd = [sys.executable, "-m", "tribit", "serve", "-m", str(model), "--port", str(port), *args]
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + timeout
    try:
        while True:
            try:
                if httpx.get(base + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                stop_server(proc)
                out = proc.stdout.read().decode(errors="replace")
                pytest.fail(f"server did not start: {out[-2000:]}")
            time.sleep(0.2)
        yield base
    finally:
        stop_server(proc)
