"""`tribit run`: complete a prompt (or chat with -cnv), like bitnet.cpp's run_inference.py.

Accepts run_inference.py's flags (-m -p -n -t -c -temp -cnv) and llama-cli's sampling
flags, streams the continuation to stdout and prints a llama.cpp-style performance summary
to stderr. Without -m it runs the model embedded in tribit.
"""

from __future__ import annotations

import argparse
import sys
import time

from tribit.cli.util import add_head_type_argument

HELP = "generate text from a prompt (bitnet.cpp run_inference.py / llama-cli flags)"

# llama.cpp's sampling defaults; only the temperature default differs (see --temp)
DEFAULT_TOP_K = 40
DEFAULT_TOP_P = 0.95
DEFAULT_MIN_P = 0.05
RUN_TEMP = 0.0
CHAT_TEMP = 0.8

_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", "'": "'", '"': '"', "0": "\0"}


def process_escapes(text: str) -> str:
    """Turn the two characters `\\n` into a newline (and \\t \\r \\\\ \\' \\" \\0), as
    llama-cli does with -p; an unknown escape is kept as written."""
    out, i = [], 0
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text) and text[i + 1] in _ESCAPES:
            out.append(_ESCAPES[text[i + 1]])
            i += 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    """-m, -t, -c and the flags accepted for compatibility."""
    p.add_argument("-m", "--model", help="GGUF model file (default: the embedded bAbI model)")
    p.add_argument(
        "-t",
        "--threads",
        type=int,
        default=None,
        help="worker threads (default: all CPUs this process may use)",
    )
    p.add_argument(
        "-c",
        "--ctx-size",
        type=int,
        default=None,
        help="context size in tokens (default: the model's, at most 4096)",
    )
    p.add_argument("--kv-type", choices=("f16", "f32"), default="f16", help="KV cache type")
    add_head_type_argument(p)
    p.add_argument(
        "-b",
        "--batch-size",
        type=int,
        default=None,
        help="accepted for compatibility and ignored: the prompt is always processed in one batch",
    )
    p.add_argument(
        "-ngl",
        "--n-gpu-layers",
        type=int,
        default=None,
        help="accepted for compatibility and ignored (CPU only)",
    )
    p.add_argument("--no-perf", action="store_true", help="no performance summary on stderr")


def add_sampling_arguments(p: argparse.ArgumentParser, temp_default: float) -> None:
    """llama-cli's sampling flags. `-temp` (single dash, bitnet.cpp's spelling) is an
    explicit option string: argparse would not accept it otherwise."""
    p.add_argument(
        "-n",
        "--n-predict",
        type=int,
        default=None,
        help="tokens to generate (-1: until end of text or full context)",
    )
    p.add_argument(
        "--temp",
        "-temp",
        "--temperature",
        dest="temp",
        type=float,
        default=None,
        help=f"temperature (default {temp_default:g}; 0 = greedy)",
    )
    p.add_argument("-s", "--seed", type=int, default=None, help="sampling seed (default random)")
    p.add_argument("--top-k", type=int, default=DEFAULT_TOP_K, help="top-k (0 = off; default 40)")
    p.add_argument("--top-p", type=float, default=DEFAULT_TOP_P, help="top-p (1 = off; 0.95)")
    p.add_argument("--min-p", type=float, default=DEFAULT_MIN_P, help="min-p (0 = off; 0.05)")
    p.add_argument(
        "--typical-p",
        "--typical",
        dest="typical_p",
        type=float,
        default=1.0,
        help="locally typical sampling (1 = off)",
    )
    p.add_argument("--repeat-penalty", type=float, default=1.0, help="(1 = off)")
    p.add_argument(
        "--repeat-last-n",
        type=int,
        default=64,
        help="tokens the penalties look back on (default 64)",
    )
    p.add_argument("--presence-penalty", type=float, default=0.0, help="(0 = off)")
    p.add_argument("--frequency-penalty", type=float, default=0.0, help="(0 = off)")
    p.add_argument(
        "--stop",
        action="append",
        default=None,
        metavar="TEXT",
        help="stop at this text (not printed); repeat for several",
    )
    p.add_argument(
        "--no-escape",
        action="store_true",
        help="take -p literally (default: \\n in -p is a newline)",
    )


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.epilog = (
        "Defaults: greedy decoding (--temp 0) so that a run is reproducible; bitnet.cpp's\n"
        "run_inference.py uses --temp 0.8, pass it to get the same. With -cnv the default\n"
        "temperature is 0.8 and -p is the system prompt. -n defaults to 128 (run) and\n"
        "-1 (chat: until the end of the turn).\n"
        "Example: tribit run -p 'Mary went to the garden. Where is Mary?\\nAnswer:' -n 12"
    )
    p.add_argument("-p", "--prompt", default=None, help="the prompt (\\n means a newline)")
    p.add_argument("-f", "--file", default=None, help="read the prompt from a file")
    p.add_argument(
        "-cnv",
        "--conversation",
        action="store_true",
        help="interactive chat; -p is the system prompt",
    )
    p.add_argument("--echo", action="store_true", help="print the prompt before the answer")
    add_model_arguments(p)
    add_sampling_arguments(p, RUN_TEMP)


def load_model(args: argparse.Namespace):
    """Load -m (or the embedded model, saying so on stderr); returns (model, load seconds)."""
    import tribit
    from tribit.data import default_model_path

    path = args.model
    if path is None:
        path = default_model_path()
        if path is None:
            raise tribit.TribitError("no model given (-m MODEL.gguf) and none is embedded")
        print(f"tribit: no -m given, using the embedded model {path}", file=sys.stderr)
    if args.batch_size is not None:
        print(
            "tribit: note: -b/--batch-size is ignored (prompts run in one batch)", file=sys.stderr
        )
    t0 = time.perf_counter()
    model = tribit.load(
        path,
        n_threads=args.threads,
        n_ctx=args.ctx_size,
        kv_type=args.kv_type,
        head_type=getattr(args, "head_type", None),
    )
    model.tokenize("a")  # the tokenizer is built lazily: count it as loading
    return model, time.perf_counter() - t0


def generation_options(args: argparse.Namespace, temp_default: float, n_default: int) -> dict:
    """max_tokens, stop and the SamplerParams of the parsed flags (built once, here)."""
    from tribit import SamplerParams

    sampling = SamplerParams(
        temperature=temp_default if args.temp is None else args.temp,
        top_k=args.top_k,
        top_p=args.top_p,
        min_p=args.min_p,
        typical_p=args.typical_p,
        repeat_penalty=args.repeat_penalty,
        repeat_last_n=args.repeat_last_n,
        presence_penalty=args.presence_penalty,
        frequency_penalty=args.frequency_penalty,
        seed=args.seed,
    )
    sampling.validate()
    return {
        "max_tokens": n_default if args.n_predict is None else args.n_predict,
        "stop": [s if args.no_escape else process_escapes(s) for s in args.stop or []],
        "sampling": sampling,
    }


def print_perf(load_s: float | None, chunk, wall_s: float) -> None:
    """llama.cpp-style timings (llama_perf_context_print) on stderr."""
    err = sys.stderr
    if load_s is not None:
        print(f"tribit:        load time = {load_s * 1e3:10.2f} ms", file=err)
    if chunk is None:
        return
    n_p = chunk.prompt_tokens - chunk.prompt_cached_tokens
    t_p = chunk.prompt_time_s
    n_g = max(chunk.generation_tokens - 1, 0)  # the first token comes with the prompt
    t_g = chunk.generation_time_s

    def rate(n: int, t: float) -> str:
        per = t * 1e3 / n if n else 0.0
        tps = n / t if t > 0 else 0.0
        return f"({per:8.2f} ms per token, {tps:8.2f} tokens per second)"

    cached = f", {chunk.prompt_cached_tokens} cached" if chunk.prompt_cached_tokens else ""
    print(
        f"tribit: prompt eval time = {t_p * 1e3:10.2f} ms / {n_p:5d} tokens "
        f"{rate(n_p, t_p)}{cached}",
        file=err,
    )
    print(
        f"tribit:        eval time = {t_g * 1e3:10.2f} ms / {n_g:5d} runs   {rate(n_g, t_g)}",
        file=err,
    )
    print(
        f"tribit:       total time = {wall_s * 1e3:10.2f} ms / "
        f"{n_p + chunk.generation_tokens:5d} tokens",
        file=err,
    )


def stream_to_stdout(chunks) -> object:
    """Print chunk texts as they come; return the last chunk (None if there was none).
    Ctrl-C stops the stream and returns what was reached."""
    last = None
    try:
        for chunk in chunks:
            last = chunk
            if chunk.text:
                sys.stdout.write(chunk.text)
                sys.stdout.flush()
    except KeyboardInterrupt:
        sys.stdout.write("\n")
    finally:
        close = getattr(chunks, "close", None)
        if close:
            close()
    return last


def run(args: argparse.Namespace) -> int:
    if args.conversation:
        from tribit.cli.chat import run_repl

        return run_repl(args, system=_prompt(args))
    from tribit import TribitError, stream_generate

    prompt = _prompt(args)
    if prompt is None:
        raise TribitError("no prompt: give -p PROMPT (or -f FILE, or -cnv for a chat)")
    model, load_s = load_model(args)
    t0 = time.perf_counter()
    chunks = stream_generate(model, prompt, **generation_options(args, RUN_TEMP, 128))
    if args.echo:
        sys.stdout.write(prompt)
    last = stream_to_stdout(chunks)
    sys.stdout.write("\n")
    sys.stdout.flush()
    if not args.no_perf:
        print(file=sys.stderr)
        print_perf(load_s, last, time.perf_counter() - t0)
    return 0


def _prompt(args: argparse.Namespace) -> str | None:
    if args.file is not None:
        from tribit.cli.util import read_text_file

        return read_text_file(args.file, "prompt file")
    if args.prompt is None:
        return None
    return args.prompt if args.no_escape else process_escapes(args.prompt)
