"""`tribit chat` (also `tribit run -cnv`): an interactive chat in the terminal.

Each answer streams as it is generated and ends at the model's end-of-turn token; the
conversation stays in the KV cache, so a turn only computes its new tokens. Type `/exit`
(or end the input) to quit, `/reset` to start over, `/help` for the commands. Ctrl-C stops
the current answer, not the program. A line ending in `\\` continues on the next line.
"""

from __future__ import annotations

import argparse
import sys
import time

HELP = "chat with a model in the terminal (like llama-cli -cnv)"

COMMANDS_HELP = """commands:
  /exit, /quit   leave (also Ctrl-D)
  /reset         forget the conversation (keeps the system prompt)
  /help          this list
  Ctrl-C stops the current answer; a line ending in \\ continues on the next line."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    from tribit.cli.run import CHAT_TEMP, add_model_arguments, add_sampling_arguments

    p.add_argument(
        "-p",
        "-sys",
        "--system",
        "--prompt",
        dest="system",
        default=None,
        help="system prompt (\\n means a newline)",
    )
    add_model_arguments(p)
    add_sampling_arguments(p, CHAT_TEMP)


def run(args: argparse.Namespace) -> int:
    from tribit.cli.run import process_escapes

    system = args.system
    if system is not None and not args.no_escape:
        system = process_escapes(system)
    return run_repl(args, system)


def _read_message(interactive: bool) -> str | None:
    """One user message (None at end of input); `\\` at the end of a line continues it."""
    lines = []
    while True:
        if interactive:
            line = input("> " if not lines else "... ")
        else:
            line = sys.stdin.readline()
            if not line:
                raise EOFError
            line = line.rstrip("\n")
        if line.endswith("\\"):
            lines.append(line[:-1])
            continue
        lines.append(line)
        return "\n".join(lines)


def run_repl(args: argparse.Namespace, system: str | None) -> int:
    """The chat loop shared by `tribit chat` and `tribit run -cnv`."""
    from tribit import ChatSession, ContextLengthError
    from tribit.cli.run import CHAT_TEMP, generation_options, load_model, print_perf

    model, load_s = load_model(args)
    kwargs = generation_options(args, CHAT_TEMP, -1)
    session = ChatSession(model, system=system, **kwargs)
    interactive = sys.stdin.isatty()
    if interactive:
        print(
            f"tribit: chatting with {model.path.name}; /help for commands, /exit to quit",
            file=sys.stderr,
        )
        try:
            import readline  # noqa: F401  (line editing and history for input())
        except ImportError:  # pragma: no cover - Windows
            pass
    if not args.no_perf:
        print_perf(load_s, None, 0.0)
    while True:
        try:
            msg = _read_message(interactive)
        except (EOFError, KeyboardInterrupt):
            if interactive:
                print(file=sys.stderr)
            return 0
        cmd = msg.strip()
        if not cmd:
            continue  # an empty line is not a message
        if cmd in ("/exit", "/quit", "/bye"):
            return 0
        if cmd == "/help":
            print(COMMANDS_HELP, file=sys.stderr)
            continue
        if cmd == "/reset":
            session.reset(system)
            print("tribit: conversation cleared", file=sys.stderr)
            continue
        n_before = len(session.messages)
        try:
            chunks = session.stream(msg)
        except ContextLengthError as e:
            print(f"tribit: {e}", file=sys.stderr)
            continue
        if len(session.messages) < n_before + 1:
            print("tribit: note: the oldest turns were dropped to fit the context", file=sys.stderr)
        t0 = time.perf_counter()
        last = _stream_answer(chunks)
        if not args.no_perf and last is not None:
            print(turn_stats(last, time.perf_counter() - t0), file=sys.stderr)


def turn_stats(chunk, wall_s: float) -> str:
    """One line of timings for a chat turn."""
    n_p = chunk.prompt_tokens - chunk.prompt_cached_tokens
    return (
        f"[prompt {n_p} tokens ({chunk.prompt_cached_tokens} reused), "
        f"{chunk.prompt_tps:.1f} tok/s; answer {chunk.generation_tokens} tokens, "
        f"{chunk.generation_tps:.1f} tok/s; {wall_s:.2f} s]"
    )


def _stream_answer(chunks):
    last, started = None, False
    try:
        for chunk in chunks:
            last = chunk
            # without the reply's leading blank, as the API sends it (tribit.protocol)
            text = chunk.text if started else chunk.text.removeprefix(" ")
            started = started or bool(chunk.text)
            if text:
                sys.stdout.write(text)
                sys.stdout.flush()
    except KeyboardInterrupt:
        print("\ntribit: (answer stopped)", file=sys.stderr)
    finally:
        chunks.close()
    sys.stdout.write("\n")
    sys.stdout.flush()
    return last
