"""Chat templates: exact renders of the built-ins, HF-compatible Jinja options, and a sandbox
that refuses escapes with a TribitError."""

import re

import pytest

from tribit.errors import TribitError
from tribit.tokenizer.chat import BUILTIN_TEMPLATES, render_chat, resolve_template

CONVO = [
    {"role": "system", "content": "  You are terse. "},
    {"role": "user", "content": "Hi\n"},
    {"role": "assistant", "content": "Hello!"},
    {"role": "user", "content": "2+2?"},
]

# Meta-Llama-3-8B-Instruct tokenizer_config.json chat_template, verbatim
LLAMA3_HF = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
    "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | "
    "trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}"
    "{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ "
    "'<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)


def test_bitnet_2b4t_single_message():
    msgs = [{"role": "user", "content": "Hey, are you conscious?"}]
    assert render_chat(msgs) == "User: Hey, are you conscious?<|eot_id|>Assistant: "
    assert render_chat(msgs, "bitnet-2b4t", add_generation_prompt=False) == (
        "User: Hey, are you conscious?<|eot_id|>"
    )


def test_bitnet_2b4t_multi_turn_with_system():
    assert render_chat(CONVO) == (
        "System: You are terse.<|eot_id|>User: Hi<|eot_id|>Assistant: Hello!<|eot_id|>"
        "User: 2+2?<|eot_id|>Assistant: "
    )


def test_bitnet_placeholder_and_names_select_builtin():
    placeholder = (
        "{% for message in messages %}Human: {{ message['content'] }}BITNETAssistant: "
        "{{ eos_token }}{% endfor %}"
    )
    want = render_chat(CONVO)
    for t in (None, "", placeholder, "bitnet", "bitnet-2b4t"):
        assert render_chat(CONVO, t) == want
    assert resolve_template("chatml") == BUILTIN_TEMPLATES["chatml"]


def test_llama3_and_chatml():
    msgs = CONVO[:2]
    want = (
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are terse."
        "<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    )
    assert render_chat(msgs, LLAMA3_HF, bos_token="<|begin_of_text|>") == want
    assert render_chat(msgs, "llama3", bos_token="<|begin_of_text|>") == want
    assert render_chat(msgs, "llama3").startswith("<|start_header_id|>system")  # BOS left out
    assert render_chat(msgs, "chatml") == (
        "<|im_start|>system\n  You are terse. <|im_end|>\n<|im_start|>user\nHi\n<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_hf_jinja_features():
    tmpl = (
        "{% if messages[0]['role'] != 'system' %}{{ raise_exception('need a system turn') }}"
        "{% endif %}\n"
        "{% set ns = namespace(n=0) %}\n"
        "{% for m in messages %}\n"
        "    {% if m.role == 'system' %}{% continue %}{% endif %}\n"
        "    {% set ns.n = ns.n + 1 %}\n"
        "[{{ ns.n }}] {{ m.content | trim }}\n"
        "    {% if ns.n == 2 %}{% break %}{% endif %}\n"
        "{% endfor %}\n"
        "{{ tools | tojson }}|{{ strftime_now('%Y') }}"
    )
    out = render_chat(CONVO, tmpl, tools=[{"name": "é<tag>"}])
    year = out.rsplit("|", 1)[1]
    assert re.fullmatch(r"\d{4}", year)
    # trim_blocks + lstrip_blocks: block lines leave no blank lines or indentation
    assert out == f'[1] Hi\n[2] Hello!\n[{{"name": "é<tag>"}}]|{year}'
    with pytest.raises(TribitError, match="need a system turn"):
        render_chat(CONVO[1:], tmpl)


def test_message_normalisation():
    msgs = [
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
        {"role": "assistant", "content": None},
    ]
    assert render_chat(msgs, add_generation_prompt=False) == (
        "User: ab<|eot_id|>Assistant: <|eot_id|>"
    )
    for bad in ("hello", [{"content": "x"}], [42]):
        with pytest.raises(TribitError):
            render_chat(bad)  # type: ignore[arg-type]


ESCAPES = [
    "{{ ''.__class__.__mro__ }}",
    "{{ ''.__class__ }}",
    "{{ cycler.__init__.__globals__ }}",
    "{{ joiner.__init__.__globals__.os }}",
    "{{ lipsum.__globals__['os'].popen('id').read() }}",
    "{{ messages.__class__.__base__.__subclasses__() }}",
    "{{ messages | attr('__class__') }}",
    "{{ messages[0]['__class__'] }}",
    "{{ self.__init__.__globals__ }}",
    "{{ namespace.__init__.__globals__ }}",
    "{{ raise_exception.__globals__ }}",
    "{{ '{0.__class__}'.format(1) }}",
    "{% set ns = namespace(_secret=1) %}",
    "{{ messages.append(1) }}",
    "{{ messages[0].update({'role': 'x'}) }}",
    "{{ 'a' * 100000000 }}",
    "{{ 9 ** 9999999 }}",
    "{% for i in range(1000000) %}{% endfor %}",
    "{% for i in range(99999) %}{{ 'x' * 999 }}{% endfor %}",
]


@pytest.mark.parametrize("tmpl", ESCAPES)
def test_sandbox_refuses_escapes(tmpl):
    msgs = [{"role": "user", "content": "x"}]
    with pytest.raises(TribitError) as err:
        render_chat(msgs, tmpl)
    assert "template" in str(err.value)
    assert msgs == [{"role": "user", "content": "x"}]  # nothing mutated


def test_template_errors_are_tribit_errors():
    with pytest.raises(TribitError, match="invalid chat template"):
        render_chat([{"role": "user", "content": "x"}], "{% for %}")
    with pytest.raises(TribitError, match="failed"):
        render_chat([{"role": "user", "content": "x"}], "{{ messages[5].content }}")
    with pytest.raises(TribitError, match="failed"):
        render_chat([{"role": "user", "content": "x"}], "{{ 1 / 0 }}")
