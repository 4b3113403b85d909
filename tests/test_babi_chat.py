"""The embedded bAbI model in chat: its file's chat template renders a conversation as the
model was trained (`<story> <question>\\nAnswer:`), so `tribit chat` and the server's
`/v1/chat/completions` answer a story's question with the one sentence and stop there;
a follow-up question is asked about the same story. The web page: test_server_web.py."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tribit.data import babi, default_model_path
from tribit.formats.gguf_reader import GGUFReader
from tribit.server.card import model_card
from tribit.tokenizer.chat import render_chat

STORY = "Daniel went to the garden. Mary travelled to the kitchen."
ASK = STORY + " Where is Mary?"


def _user(*texts: str) -> list[dict]:
    """A conversation of these user turns, each answered with a placeholder."""
    out: list[dict] = []
    for t in texts:
        out += [{"role": "user", "content": t}, {"role": "assistant", "content": " x."}]
    return out[:-1]


def test_template_renders_the_trained_prompt_and_keeps_the_story():
    def render(messages, **kw):  # in the budgeted worker, as a file's template is rendered
        return render_chat(messages, babi.CHAT_TEMPLATE, isolated=True, **kw)

    assert render(_user(ASK)) == ASK + "\nAnswer:"
    assert render(_user(babi.SEED_PROMPT[: -len("\nAnswer:")])) == babi.SEED_PROMPT
    assert render(_user(ASK), add_generation_prompt=False) == ASK
    # history: the story of earlier turns, the last turn's question; answers and system
    # messages are left out, blanks and newlines tidied
    assert render(_user(ASK, "Where is Daniel?")) == STORY + " Where is Daniel?\nAnswer:"
    sysmsg = [{"role": "system", "content": "Be brief."}]
    assert render(sysmsg + _user(ASK, " Where is Daniel? \n")) == render(
        _user(ASK, "Where is Daniel?")
    )
    assert render(_user(ASK, "Mary went to the hallway.", "Where is Mary?")) == (
        STORY + " Mary went to the hallway. Where is Mary?\nAnswer:"
    )
    assert render(_user(ASK, "Mary ran to the cellar. Where is Mary?")) == (
        STORY + " Mary ran to the cellar. Where is Mary?\nAnswer:"
    )
    assert render(_user("Mary went to the park.\nWhere is Mary?")) == (
        "Mary went to the park. Where is Mary?\nAnswer:"
    )
    assert render(_user("Where is Mary?")) == "Where is Mary?\nAnswer:"


def _embedded():
    path = default_model_path()
    if path is None:
        pytest.skip("no embedded model in this installation")
    return path


def test_embedded_file_carries_the_chat_metadata():
    with GGUFReader(_embedded()) as r:
        md = dict(r.metadata)
    assert md["tokenizer.chat_template"] == babi.CHAT_TEMPLATE
    card = model_card(md)
    assert card["description"].startswith("A tiny demo model")
    assert "bAbI location questions" in card["description"]
    assert card["examples"][0] == ASK and card["temperature"] == 0.0


def test_model_card_ignores_what_is_not_there_or_malformed():
    assert model_card({"general.name": "x", "tokenizer.chat_template": "{{ 1 }}"}) == {}
    bad = {
        "general.description": 3,
        "tribit.chat.examples": "one string",
        "general.sampling.temp": True,
    }
    assert model_card(bad) == {}
    card = model_card(
        {
            "general.description": " d ",
            "tribit.chat.examples": [1, " a ", ""] * 9,
            "general.sampling.temp": 9.0,
        }
    )
    assert card == {"description": "d", "examples": ["a"] * 4}


def test_tribit_chat_answers_and_stops():
    turns = f"{ASK}\nWhere is Daniel?\n/exit\n"
    r = subprocess.run(
        [sys.executable, "-m", "tribit", "chat", "-m", str(_embedded()), "-t", "1", "--temp", "0"],
        input=turns,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    # each answer is the one sentence (after the blank that follows "Answer:"), then the
    # model's end of generation: nothing more
    assert r.stdout.splitlines() == ["Mary is in the kitchen.", "Daniel is in the garden."]


@pytest.fixture(scope="module")
def server():
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    from server_process import serving

    with serving(_embedded(), "-t", "1") as base:
        yield base


def _chat(base: str, messages: list[dict], **kw) -> dict:
    import httpx

    r = httpx.post(base + "/v1/chat/completions", timeout=60, json={"messages": messages, **kw})
    assert r.status_code == 200, r.text
    return r.json()["choices"][0]


@pytest.mark.parametrize("temperature", [0, 0.8])
def test_chat_completions_answer_the_question_and_stop(server, temperature):
    c = _chat(server, _user(ASK), temperature=temperature, seed=1)
    assert c["message"]["content"] == "Mary is in the kitchen." and c["finish_reason"] == "stop"
    follow = _user(ASK, "Where is Daniel?")
    follow[1]["content"] = c["message"]["content"]
    c = _chat(server, follow, temperature=temperature, seed=1)
    assert c["message"]["content"] == "Daniel is in the garden." and c["finish_reason"] == "stop"


def test_models_route_describes_the_embedded_model(server):
    import httpx

    meta = httpx.get(server + "/v1/models", timeout=30).json()["data"][0]["meta"]
    assert "bAbI location questions" in meta["description"]
    assert meta["examples"] == list(babi.CHAT_EXAMPLES) and meta["temperature"] == 0.0
