"""`tribit serve`: the OpenAI-compatible server with batched decoding."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tribit.cli.util import add_head_type_argument, port

HELP = "serve a model over an OpenAI-compatible HTTP API (and a chat page at /)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-m", "--model", default=None, help="GGUF model (default: the embedded model)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    p.add_argument("--port", type=port, default=8080)
    p.add_argument(
        "-np", "--parallel", type=int, default=4, help="sequence slots (concurrent requests)"
    )
    p.add_argument("-c", "--ctx-size", type=int, default=None, help="context per slot")
    p.add_argument("-t", "--threads", type=int, default=None)
    add_head_type_argument(p)
    key = p.add_mutually_exclusive_group()
    key.add_argument("--api-key", default=None)
    key.add_argument("--api-key-file", type=Path, default=None)
    p.add_argument("--cors-origins", nargs="*", default=[], help="allowed CORS origins")
    p.add_argument("--max-queue", type=int, default=64, help="waiting requests before 503")
    p.add_argument("--max-body", type=int, default=4 << 20, help="request body limit in bytes")
    p.add_argument("--alias", default=None, help="model name reported by the API")
    p.add_argument(
        "--pooling",
        choices=("last", "mean", "cls"),
        default=None,
        help="pooling of /v1/embeddings, overriding the file's pooling_type (and "
        "letting a generative model embed); BitNet-embedding needs last",
    )
    p.add_argument(
        "--stream-interval",
        type=float,
        default=0.0,
        metavar="MS",
        help="coalesce streamed tokens: at most one SSE event per MS milliseconds "
        "(default 0: one event per token)",
    )


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from tribit.errors import TribitError
    from tribit.server.app import ServerSettings, create_app

    api_key = args.api_key
    if api_key is not None and not api_key.strip():
        # an empty key used to switch authentication off without a word
        raise TribitError(
            "--api-key is empty: give a non-empty key, or leave the option out "
            "to serve without authentication"
        )
    if args.api_key_file is not None:
        from tribit.cli.util import read_text_file

        api_key = read_text_file(args.api_key_file, "API key file").strip()
        if not api_key:
            raise TribitError(f"API key file {args.api_key_file} is empty")
    if args.parallel < 1 or args.max_queue < 1 or args.max_body < 1:
        raise TribitError("--parallel, --max-queue and --max-body must be >= 1")
    if not 0 <= args.stream_interval <= 10_000:
        raise TribitError("--stream-interval must be between 0 and 10000 ms")
    _check_model_arguments(args)
    if args.host not in ("127.0.0.1", "localhost", "::1") and not api_key:
        print(
            f"tribit serve: warning: listening on {args.host} without --api-key: anyone who "
            "can reach this port can use the model",
            file=sys.stderr,
        )
    settings = ServerSettings(
        model_path=args.model,
        n_parallel=args.parallel,
        n_ctx=args.ctx_size,
        n_threads=args.threads,
        api_key=api_key,
        cors_origins=list(args.cors_origins),
        max_queue=args.max_queue,
        max_body_bytes=args.max_body,
        model_name=args.alias,
        head_type=args.head_type,
        pooling=args.pooling,
        stream_interval_ms=args.stream_interval,
    )
    _log_to_console()
    app = create_app(settings)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", timeout_keep_alive=30)
    return 0


def _check_model_arguments(args: argparse.Namespace) -> None:
    """What `tribit.load` would refuse, refused before the server starts listening (the
    model loads in the background, where an error only shows in /health)."""
    from tribit.errors import ModelError
    from tribit.formats.gguf_reader import open_regular_file
    from tribit.llm import check_load_arguments

    try:
        check_load_arguments(
            n_threads=args.threads,
            n_ctx=args.ctx_size,
            n_seq=args.parallel,
            head_type=args.head_type,
        )
    except ModelError as e:  # said with the flags' names
        msg = str(e).replace("n_ctx", "-c").replace("n_seq", "--parallel")
        raise ModelError(msg) from None
    if args.model is not None:
        import os

        os.close(open_regular_file(args.model))


def _log_to_console() -> None:
    """The server's messages on stderr as "tribit serve: error: ..." lines."""
    import logging

    class Format(logging.Formatter):
        def format(self, record: logging.LogRecord) -> str:
            return f"tribit serve: {record.levelname.lower()}: {record.getMessage()}"

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(Format())
    log = logging.getLogger("tribit.serve")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
