"""The web chat page at `/`, driven in real headless Chromium against a real server process.

Needs Debian's `chromium` and the Python `playwright` package (its own browser downloads are
never used: the system Chromium is launched through `executable_path`). Skips cleanly without.
"""

from __future__ import annotations

import json
import shutil

import pytest

from server_process import serving, wait_idle
from tiny_models import tiny_model
from tribit.data import babi, default_model_path

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is missing")

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium executable on PATH")

N_CTX = 16384  # long enough that a stream cannot end before the Stop button is clicked
GREEDY = {"temperature": 0, "max_tokens": 24}
KEY = "web-test-key"
TIMEOUT_MS = 60_000  # the CI machine may be heavily loaded


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return tiny_model(tmp_path_factory.mktemp("web") / "m.gguf", n_vocab=300, ctx=N_CTX)


def _serving(model, *extra: str):
    return serving(model, "--parallel", "2", "-c", str(N_CTX), "-t", "1", *extra)


@pytest.fixture(scope="module")
def server(model):
    with _serving(model) as base:
        yield base


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            yield b
        finally:
            b.close()


class Page:
    """A fresh page on `base` that records its requests, page errors and chat request bodies."""

    def __init__(self, browser, base: str, overrides: dict | None = None):
        self.ctx = browser.new_context()
        self.page = self.ctx.new_page()
        self.page.set_default_timeout(TIMEOUT_MS)
        self.urls: list[str] = []
        self.errors: list[str] = []
        self.bodies: list[dict] = []
        self.page.on("request", lambda r: self.urls.append(r.url))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))

        def chat_route(route):
            body = json.loads(route.request.post_data or "{}")
            self.bodies.append(body)
            # deterministic answers on a random model by default; everything else as sent
            body.update(GREEDY if overrides is None else overrides)
            route.continue_(post_data=json.dumps(body))

        self.page.route("**/v1/chat/completions", chat_route)
        self.page.goto(base + "/")

    def send(self, text: str) -> None:
        box = self.page.locator("#input")
        box.fill(text)
        box.press("Enter")

    def idle(self) -> None:
        """Wait until the current answer has finished streaming (Stop is disabled again)."""
        self.page.wait_for_function("document.getElementById('stop').disabled", timeout=TIMEOUT_MS)

    def close(self) -> None:
        self.ctx.close()


def _expected_answer(base: str, messages: list[dict]) -> str:
    """The API's answer, as the page shows it."""
    r = httpx.post(base + "/v1/chat/completions", timeout=60, json={"messages": messages, **GREEDY})
    assert r.status_code == 200, r.text
    return r.json()["choices"][0]["message"]["content"]


def test_page_streams_an_answer(server, browser):
    p = Page(browser, server)
    try:
        page = p.page
        assert page.title() == "tribit chat"
        p.send("Hello there")
        user = page.locator(".msg.user")
        sync_api.expect(user).to_have_text("Hello there")
        bubble = page.locator(".msg.assistant").first
        # text arrives while streaming; the tokens/s label appears once two pieces came in
        page.wait_for_function(
            "document.querySelector('.msg.assistant') &&"
            " document.querySelector('.msg.assistant').textContent.length > 0"
        )
        sync_api.expect(page.locator("#speed")).to_contain_text("tokens/s", timeout=TIMEOUT_MS)
        p.idle()
        answer = bubble.text_content()
        assert answer == _expected_answer(server, [{"role": "user", "content": "Hello there"}])
        speed = page.locator("#speed").text_content()
        assert float(speed.split()[0]) > 0
        assert page.locator(".msg.error").count() == 0
        # the page asked for a stream of the conversation and loaded the model name
        assert p.bodies[0]["stream"] is True
        assert p.bodies[0]["messages"] == [{"role": "user", "content": "Hello there"}]
        sync_api.expect(page.locator("#model")).to_have_text("m")
        # a file without a description or example prompts: nothing more on the page
        sync_api.expect(page.locator("#about")).to_be_hidden()
        assert page.locator(".example").count() == 0
        # everything came from the server itself: no CDN, no other origin
        assert p.urls and all(u.startswith(server + "/") for u in p.urls), p.urls
        assert p.errors == []
    finally:
        p.close()


def test_second_turn_sends_the_whole_conversation(server, browser):
    p = Page(browser, server)
    try:
        p.send("first")
        p.idle()
        first = p.page.locator(".msg.assistant").nth(0).text_content()
        p.send("second")
        p.idle()
        assert p.page.locator(".msg.assistant").count() == 2
        want = [
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": first},
            {"role": "user", "content": "second"},
        ]
        assert p.bodies[1]["messages"] == want
        assert p.page.locator(".msg.assistant").nth(1).text_content() == _expected_answer(
            server, want
        )
        assert p.errors == []
    finally:
        p.close()


def test_server_errors_are_shown_and_not_kept_in_history(server, browser):
    p = Page(browser, server)
    try:
        p.send("x" * (2 * N_CTX))  # one token per byte: longer than the context
        err = p.page.locator(".msg.error")
        sync_api.expect(err).to_contain_text("context", timeout=TIMEOUT_MS)
        p.idle()
        # the failed turn is not resent: the next request holds only the new message
        p.send("short")
        p.idle()
        assert p.bodies[-1]["messages"] == [{"role": "user", "content": "short"}]
        assert p.page.locator(".msg.assistant:not(.error)").count() == 1
        assert p.errors == []
    finally:
        p.close()


def test_stop_button_cancels_the_stream(server, browser):
    # an answer that runs to the end of the context: the end-of-generation tokens are banned
    ban = {"256": -100, "257": -100, "258": -100}
    no_end = {"max_tokens": 100000, "seed": 3, "logit_bias": ban}
    p = Page(browser, server, overrides=no_end)
    try:
        p.send("go on and on")
        p.page.wait_for_function(
            "document.querySelector('.msg.assistant') &&"
            " document.querySelector('.msg.assistant').textContent.length > 0"
        )
        p.page.locator("#stop").click()
        p.idle()
        assert p.page.locator(".msg.error").count() == 0
        # the server frees the slot of the stream the page abandoned
        assert wait_idle(server) == 0
        assert p.errors == []
    finally:
        p.close()


def test_page_asks_for_the_api_key(model, browser):
    with _serving(model, "--api-key", KEY) as base:
        p = Page(browser, base)
        try:
            p.send("hi")
            key = p.page.locator("#key")
            sync_api.expect(key).to_be_visible(timeout=TIMEOUT_MS)
            sync_api.expect(p.page.locator(".msg.error")).to_contain_text("API key")
            p.idle()
            key.fill(KEY)
            p.send("hi")
            p.idle()
            answer = p.page.locator(".msg.assistant:not(.error)")
            sync_api.expect(answer).to_have_count(1)
            assert answer.text_content() == _expected_answer_with_key(base)
            assert p.errors == []
        finally:
            p.close()


def _expected_answer_with_key(base: str) -> str:
    r = httpx.post(
        base + "/v1/chat/completions",
        timeout=60,
        headers={"Authorization": f"Bearer {KEY}"},
        json={"messages": [{"role": "user", "content": "hi"}], **GREEDY},
    )
    assert r.status_code == 200, r.text
    return r.json()["choices"][0]["message"]["content"]


def test_page_presents_the_embedded_demo_model(browser):
    """The embedded bAbI model: the page says what it is (the file's description), offers
    its example prompts, and a click on one gets the one-sentence answer; a follow-up
    question is about the same story. The page's own request (the file's recommended
    temperature, 0), not the test's greedy override."""
    path = default_model_path()
    if path is None:
        pytest.skip("no embedded model in this installation")
    with serving(path, "-t", "1") as base:
        p = Page(browser, base, overrides={})
        try:
            page = p.page
            about = page.locator("#about")
            sync_api.expect(about).to_be_visible()
            sync_api.expect(about).to_contain_text("tiny demo model that answers bAbI location")
            examples = page.locator(".example")
            sync_api.expect(examples).to_have_count(len(babi.CHAT_EXAMPLES))
            assert examples.all_text_contents() == list(babi.CHAT_EXAMPLES)
            examples.first.click()
            p.idle()
            sync_api.expect(page.locator(".msg.user")).to_have_text(babi.CHAT_EXAMPLES[0])
            answers = page.locator(".msg.assistant")
            sync_api.expect(answers).to_have_text(["Mary is in the kitchen."])
            p.send("Where is Daniel?")
            p.idle()
            sync_api.expect(answers).to_have_text(
                ["Mary is in the kitchen.", "Daniel is in the garden."]
            )
            assert [b["temperature"] for b in p.bodies] == [0, 0]
            assert p.bodies[1]["messages"][1] == {
                "role": "assistant",
                "content": "Mary is in the kitchen.",
            }
            assert page.locator(".msg.error").count() == 0 and p.errors == []
        finally:
            p.close()
