"""`tribit pull` against a tiny local hub (HTTP on 127.0.0.1) serving a synthetic checkpoint.

The handler implements the routes huggingface_hub's `snapshot_download` uses: repo info
(`/api/models/{repo}/revision/{rev}`), the file tree (`/api/models/{repo}/tree/{commit}`) and
`/{repo}/resolve/{rev}/{file}` (HEAD and GET with ETag, X-Repo-Commit, Content-Length).
"""

from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

pytest.importorskip("huggingface_hub")
pytest.importorskip("torch")
pytest.importorskip("transformers")

import hf_checkpoints as H  # noqa: E402

REPO = "tiny-org/bitnet-tiny"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


class _Hub(BaseHTTPRequestHandler):
    files: dict[str, bytes] = {}
    requested: list[str] = []

    def log_message(self, *args):  # keep pytest output clean
        pass

    def _send(self, code: int, body: bytes, headers: dict[str, str], head: bool) -> None:
        self.send_response(code)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _route(self, head: bool) -> None:
        path = unquote(urlparse(self.path).path)
        self.requested.append(f"{self.command} {path}")
        api = f"/api/models/{REPO}/"
        if path.startswith(api + "revision/"):
            rev = path[len(api + "revision/") :]
            if rev not in ("main", COMMIT):
                return self._send(
                    404,
                    b'{"error": "Revision Not Found"}',
                    {"X-Error-Code": "RevisionNotFound"},
                    head,
                )
            body = {
                "id": REPO,
                "modelId": REPO,
                "sha": COMMIT,
                "private": False,
                "siblings": [{"rfilename": f} for f in self.files],
            }
            return self._send(
                200, json.dumps(body).encode(), {"Content-Type": "application/json"}, head
            )
        if path.startswith(api + "tree/"):
            body = [
                {"type": "file", "path": f, "size": len(b), "oid": hashlib.sha1(b).hexdigest()}
                for f, b in self.files.items()
            ]
            return self._send(
                200, json.dumps(body).encode(), {"Content-Type": "application/json"}, head
            )
        prefix = f"/{REPO}/resolve/"
        if path.startswith(prefix):
            rev, _, name = path[len(prefix) :].partition("/")
            if name in self.files and rev in ("main", COMMIT):
                data = self.files[name]
                etag = f'"{hashlib.sha1(data).hexdigest()}"'
                return self._send(
                    200,
                    data,
                    {
                        "ETag": etag,
                        "X-Repo-Commit": COMMIT,
                        "Content-Type": "application/octet-stream",
                    },
                    head,
                )
        return self._send(
            404, b'{"error": "Repository Not Found"}', {"X-Error-Code": "RepoNotFound"}, head
        )

    def do_GET(self):  # noqa: N802
        self._route(head=False)

    def do_HEAD(self):  # noqa: N802
        self._route(head=True)


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    ckpt = H.make_bitnet(tmp_path_factory.mktemp("src"), "packed")
    files = {p.name: p.read_bytes() for p in sorted(ckpt.dir.iterdir())}
    files["README.md"] = b"# not needed for conversion\n"
    files["pytorch_model.bin"] = b"not downloaded"
    _Hub.files = files
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", ckpt
    server.shutdown()
    server.server_close()


@pytest.fixture
def hub_env(hub, tmp_path, monkeypatch):
    """Point huggingface_hub at the local hub with a fresh HF_HOME."""
    import huggingface_hub.constants as c

    url, _ = hub
    home = tmp_path / "hf_home"
    for k, v in {
        "HF_ENDPOINT": url,
        "HF_HOME": str(home),
        "HF_HUB_OFFLINE": "0",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    }.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    # huggingface_hub reads these at import time; patch the module constants too
    monkeypatch.setattr(c, "ENDPOINT", url)
    monkeypatch.setattr(
        c, "HUGGINGFACE_CO_URL_TEMPLATE", url + "/{repo_id}/resolve/{revision}/{filename}"
    )
    monkeypatch.setattr(c, "HF_HUB_CACHE", str(home / "hub"))
    monkeypatch.setattr(c, "HF_HUB_OFFLINE", False)
    _Hub.requested.clear()
    return home


def test_pull_downloads_and_converts(hub, hub_env, tmp_path):
    import gguf

    from tribit.convert import convert_hf
    from tribit.convert.pull import pull

    _, ckpt = hub
    rep = pull(REPO, out_dir=tmp_path / "out", progress=False)
    assert rep.path == tmp_path / "out" / "ggml-model-tq2_0.gguf"
    snap = hub_env / "hub" / "models--tiny-org--bitnet-tiny" / "snapshots" / COMMIT
    assert sorted(p.name for p in snap.iterdir()) == sorted(
        p.name for p in ckpt.dir.iterdir()
    )  # *.json, *.safetensors only
    assert not any("README" in r or "pytorch_model" in r for r in _Hub.requested)
    # identical to converting the source directory
    direct = tmp_path / "direct.gguf"
    convert_hf(ckpt.dir, direct, name="bitnet-tiny", progress=False)
    assert rep.path.read_bytes() == direct.read_bytes()
    assert gguf.GGUFReader(str(rep.path)).fields["general.name"].contents() == "bitnet-tiny"


def test_pull_offline_uses_cache(hub, hub_env, tmp_path, monkeypatch):
    import huggingface_hub.constants as c

    from tribit.convert.pull import pull
    from tribit.errors import FormatError

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(c, "HF_HUB_OFFLINE", True)
    with pytest.raises(FormatError, match="cannot download"):  # empty cache
        pull(REPO, out_dir=tmp_path / "a", progress=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(c, "HF_HUB_OFFLINE", False)
    pull(REPO, out_dir=tmp_path / "b", qtype="tq1_0", progress=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(c, "HF_HUB_OFFLINE", True)
    _Hub.requested.clear()
    rep = pull(REPO, out_dir=tmp_path / "c", qtype="tq1_0", progress=False)
    assert _Hub.requested == []  # served from the cache
    assert rep.path.read_bytes() == (tmp_path / "b" / "ggml-model-tq1_0.gguf").read_bytes()


def test_pull_errors(hub, hub_env, tmp_path):
    from tribit.cli.main import main
    from tribit.convert.pull import pull
    from tribit.errors import FormatError

    with pytest.raises(FormatError, match="owner/name"):
        pull("no-slash", out_dir=tmp_path)
    with pytest.raises(FormatError, match="cannot download"):
        pull("tiny-org/missing", out_dir=tmp_path, progress=False)
    with pytest.raises(FormatError, match="cannot download"):
        pull(REPO, revision="v9", out_dir=tmp_path, progress=False)
    assert main(["pull", "tiny-org/missing", "-o", str(tmp_path / "x"), "--no-progress"]) == 1


def test_pull_cli_honours_environment(hub, tmp_path):
    """A fresh process: HF_ENDPOINT / HF_HOME from the environment, as users set them."""
    import os
    import subprocess
    import sys

    url, _ = hub
    import tribit

    src = Path(tribit.__file__).resolve().parents[1]  # the tribit these tests import
    env = {
        **os.environ,
        "HF_ENDPOINT": url,
        "HF_HOME": str(tmp_path / "home"),
        "HF_HUB_OFFLINE": "0",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "PYTHONPATH": os.pathsep.join([str(src), os.environ.get("PYTHONPATH", "")]),
    }
    env.pop("HF_HUB_CACHE", None)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "tribit",
            "pull",
            REPO,
            "--revision",
            COMMIT,
            "-o",
            str(tmp_path / "cli"),
            "--qtype",
            "i2_s",
            "--no-progress",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "cli" / "ggml-model-i2_s.gguf").is_file()
    assert (tmp_path / "home" / "hub" / "models--tiny-org--bitnet-tiny").is_dir()
