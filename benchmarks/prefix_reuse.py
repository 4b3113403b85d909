"""Time to first token of a chat's second turn, with and without prefix reuse, through
`tribit serve`.

A benchmark, not a test:

    python -m tribit dummy --layout 2B-4T -o /tmp/2b4t.gguf
    python benchmarks/prefix_reuse.py --model /tmp/2b4t.gguf --history-tokens 1000

Method: each round makes a fresh conversation (a system prompt and user/assistant turns of
filler text, about `--history-tokens` tokens, distinct per round so nothing is cached from
an earlier round), sends it with a new question (turn 1, not timed), then sends turn 2:
the same history plus turn 1's answer and a new question, `max_tokens` 1, greedy. Turn 2's
time is the wall time of that request (its prefill plus one token) and the server's own
`timings.prompt_ms`. Rounds alternate `cache_prompt: true` (the server reuses the slot
holding the conversation and computes only the new tail) and `cache_prompt: false` (the
whole prompt is computed again, as before issue 18), so both see the same machine load;
medians and their ratio come from this one run.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve_throughput import eog_ids, start_server, stop_server  # noqa: E402

WORDS = (
    "garden kitchen office hallway bedroom bathroom mary john sandra daniel went moved "
    "travelled journeyed back to the apple football milk picked up dropped left there "
    "where is was before after then"
).split()


def conversation(rng: random.Random, n_turns: int, words_per_turn: int) -> list[dict]:
    msgs = [{"role": "system", "content": "You answer questions about the story."}]
    for i in range(n_turns):
        text = " ".join(rng.choice(WORDS) for _ in range(words_per_turn)) + "."
        msgs.append({"role": "user" if i % 2 == 0 else "assistant", "content": text})
    return msgs


def ask(base: str, messages: list[dict], max_tokens: int, cache: bool, bias: dict) -> dict:
    body = {
        "messages": messages,
        "max_tokens": max_tokens,
        "temperature": 0,
        "cache_prompt": cache,
        "logit_bias": bias,
    }
    t0 = time.perf_counter()
    r = httpx.post(base + "/v1/chat/completions", json=body, timeout=3600)
    r.raise_for_status()
    out = r.json()
    out["wall_s"] = time.perf_counter() - t0
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="GGUF model")
    p.add_argument("-t", "--threads", type=int, default=None)
    p.add_argument("-c", "--ctx-size", type=int, default=2048)
    p.add_argument("--history-tokens", type=int, default=1000)
    p.add_argument("--rounds", type=int, default=3, help="rounds of each kind, alternated")
    args = p.parse_args(argv)
    proc, base = start_server(args.model, 2, args.threads, args.ctx_size)
    bias = {str(t): -100 for t in eog_ids(args.model)}
    try:
        # words per turn so that 12 turns make about --history-tokens tokens
        probe = conversation(random.Random(0), 12, 20)
        n = ask(base, probe, 1, False, bias)["usage"]["prompt_tokens"]
        words = max(4, round(20 * args.history_tokens / n))
        rows: dict[bool, list[dict]] = {True: [], False: []}
        for r in range(2 * args.rounds):
            cache = r % 2 == 0
            msgs = conversation(random.Random(100 + r), 12, words)
            msgs.append({"role": "user", "content": "Where is Mary?"})
            first = ask(base, msgs, 8, True, bias)
            msgs += [
                {"role": "assistant", "content": first["choices"][0]["message"]["content"]},
                {"role": "user", "content": "And where is John?"},
            ]
            second = ask(base, msgs, 1, cache, bias)
            rows[cache].append(
                {
                    "history": first["usage"]["prompt_tokens"],
                    "prompt": second["usage"]["prompt_tokens"],
                    "cached": second["timings"]["cache_n"],
                    "prompt_ms": second["timings"]["prompt_ms"],
                    "wall_ms": second["wall_s"] * 1000,
                }
            )
            print(f"round {r}: cache_prompt={cache} {rows[cache][-1]}", flush=True)
    finally:
        stop_server(proc)

    def med(kind: bool, key: str) -> float:
        return statistics.median(x[key] for x in rows[kind])

    print(
        f"\nsecond turn of a chat with a {med(True, 'history'):.0f}-token history "
        f"({med(True, 'prompt'):.0f}-token prompt), medians of {args.rounds} rounds each:"
    )
    print("| turn 2 | prompt tokens computed | prompt_ms | wall ms (TTFT) |")
    print("|---|---|---|---|")
    for kind, name in ((False, "recomputed (cache_prompt false)"), (True, "prefix reused")):
        computed = med(kind, "prompt") - med(kind, "cached")
        print(
            f"| {name} | {computed:.0f} | {med(kind, 'prompt_ms'):.1f} | "
            f"{med(kind, 'wall_ms'):.1f} |"
        )
    print(f"\nTTFT ratio recomputed / reused: {med(False, 'wall_ms') / med(True, 'wall_ms'):.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
