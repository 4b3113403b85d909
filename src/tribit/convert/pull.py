"""`tribit pull`: download a checkpoint from the Hugging Face Hub and convert it to GGUF.

Downloads go through `huggingface_hub.snapshot_download`, so the usual environment applies:
HF_ENDPOINT (mirror or test server), HF_HUB_OFFLINE (use the cache only), HF_HOME /
HF_HUB_CACHE (cache location) and HF_TOKEN (gated repos). Only what conversion needs is fetched.
"""

from __future__ import annotations

from pathlib import Path

from tribit.errors import FormatError

from .writer import DEFAULT_QTYPE, WriteReport

#: files conversion needs (config, tokenizer, weights); everything else in a repo is skipped
ALLOW_PATTERNS = ["*.json", "*.safetensors", "tokenizer.model"]


def download(repo: str, revision: str | None = None, cache_dir: str | Path | None = None) -> Path:
    """Fetch the files conversion needs from `repo` into the hub cache; return the snapshot dir.

    Network and hub errors become FormatError with the hub's message.
    """
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        path = snapshot_download(
            repo_id=repo, revision=revision, cache_dir=cache_dir, allow_patterns=ALLOW_PATTERNS
        )
    except (HfHubHTTPError, LocalEntryNotFoundError, OSError, ValueError) as e:
        raise FormatError(
            f"cannot download {repo!r}{f' at revision {revision!r}' if revision else ''}: {e}"
        ) from e
    return Path(path)


def default_output(repo: str, out_dir: str | Path | None, qtype: str) -> Path:
    """`<out_dir>/ggml-model-<qtype>.gguf`, out_dir defaulting to `models/<repo name>` (the
    layout bitnet.cpp's setup_env uses)."""
    out_dir = Path(out_dir) if out_dir is not None else Path("models") / repo.split("/")[-1]
    return out_dir / f"ggml-model-{qtype}.gguf"


def pull(
    repo: str,
    revision: str | None = None,
    out_dir: str | Path | None = None,
    qtype: str = DEFAULT_QTYPE,
    head: str = "f16",
    progress: bool = True,
) -> WriteReport:
    """Download `repo` (see `download`) and convert it with `convert_hf` into
    `default_output(repo, out_dir, qtype)`."""
    from . import convert_hf

    if repo.count("/") != 1 or not all(repo.split("/")):
        raise FormatError(f"repository {repo!r} must look like 'owner/name'")
    snapshot = download(repo, revision)
    out = default_output(repo, out_dir, qtype)
    out.parent.mkdir(parents=True, exist_ok=True)
    return convert_hf(
        snapshot, out, qtype=qtype, head=head, name=repo.split("/")[-1], progress=progress
    )
