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


def stop_server(proc: subprocess.Popen) -> str:
    """Stop the server; return everything it printed (its pipe is closed here)."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc.stdout is None or proc.stdout.closed:
        return getattr(proc, "output", "")
    proc.output = proc.stdout.read().decode(errors="replace")
    proc.stdout.close()
    return proc.output


def busy_slots(base: str, headers: dict | None = None) -> float:
    """The server's `tribit_requests_processing` gauge (busy sequence slots)."""
    text = httpx.get(base + "/metrics", headers=headers, timeout=10).text
    line = next(x for x in text.splitlines() if x.startswith("tribit_requests_processing "))
    return float(line.split()[1])


def wait_idle(
    base: str, headers: dict | None = None, timeout: float = 30.0, poll: float = 0.2
) -> float:
    """Poll until no slot is busy or `timeout` passes; return the last busy count."""
    deadline = time.time() + timeout
    while (busy := busy_slots(base, headers)) > 0 and time.time() < deadline:
        time.sleep(poll)
    return busy


def launch(model, *args: str) -> tuple[subprocess.Popen, str]:
    """Start `tribit serve -m model *args` on a free port; return (process, base URL)."""
    port = free_port()
    cmd = [sys.executable, "-m", "tribit", "serve", "-m", str(model), "--port", str(port), *args]
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    return proc, f"http://127.0.0.1:{port}"


def wait_health(proc: subprocess.Popen, base: str, done, timeout: float) -> httpx.Response | None:
    """Poll /health until `done(response)`, the process exits or `timeout` passes;
    return the last response (None if the server never answered)."""
    deadline, r = time.time() + timeout, None
    while proc.poll() is None and time.time() < deadline:
        try:
            r = httpx.get(base + "/health", timeout=2)
            if done(r):
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    return r


@contextlib.contextmanager
def serving(model, *args: str, timeout: float = 60.0):
    """Yield the base URL of `tribit serve -m model *args` once /health says ok."""
    proc, base = launch(model, *args)
    try:
        r = wait_health(proc, base, lambda r: r.status_code == 200, timeout)
        if r is None or r.status_code != 200:
            out = stop_server(proc)
            pytest.fail(f"server did not start: {out[-2000:]}")
        yield base
    finally:
        stop_server(proc)
