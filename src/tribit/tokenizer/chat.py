"""Chat templates: Jinja rendered in a sandbox, as Hugging Face `apply_chat_template` does.

A GGUF chat template is untrusted input (CVE-2024-34359: template injection -> code execution
in llama-cpp-python). Templates run in jinja2's `ImmutableSandboxedEnvironment` (no dunder or
internal attributes, no mutation of passed-in objects, `range` capped), with HF's options
(`trim_blocks`, `lstrip_blocks`, loop controls) and helpers (`raise_exception`,
`strftime_now`, a `tojson` that does not HTML-escape, `namespace` without underscore
attributes). On top of that, `*`/`**` that would build huge strings or numbers are refused and
the output is capped. Any failure is a TribitError saying what the template did wrong.

Built-in templates: "bitnet-2b4t" (Hugging Face's template of microsoft/bitnet-b1.58-2B-4T:
`Role: content<|eot_id|>` per message, then `Assistant: `; BOS is the tokenizer's job),
"llama3" and "chatml". `template=None`, or a GGUF template containing "BITNET" (the
placeholder bitnet.cpp's converter writes and never renders), selects "bitnet-2b4t".
"""

from __future__ import annotations

import json
import operator
from collections.abc import Mapping, Sequence
from datetime import datetime
from functools import lru_cache
from typing import Any

from ..errors import TribitError

BUILTIN_TEMPLATES: dict[str, str] = {
    "bitnet-2b4t": (
        "{% for message in messages %}"
        "{{ message['role'] | capitalize + ': ' + message['content'] | trim + '<|eot_id|>' }}"
        "{% endfor %}"
        "{% if add_generation_prompt %}{{ 'Assistant: ' }}{% endif %}"
    ),
    # Meta-Llama-3-Instruct's template
    "llama3": (
        "{% set loop_messages = messages %}{% for message in loop_messages %}"
        "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'"
        " + message['content'] | trim + '<|eot_id|>' %}"
        "{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}"
        "{{ content }}{% endfor %}"
        "{% if add_generation_prompt %}"
        "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
    ),
    "chatml": (
        "{% for message in messages %}"
        "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
        "{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
    ),
}
ALIASES = {"bitnet": "bitnet-2b4t", "bitnet-b1.58": "bitnet-2b4t", "llama-3": "llama3"}
DEFAULT_TEMPLATE = "bitnet-2b4t"
MAX_OUTPUT_CHARS = 4_000_000  # a rendered prompt longer than any context
MAX_SEQUENCE_LEN = 1_000_000  # longest string/list `*` may build
MAX_POWER_BITS = 4096  # largest integer `**` may build


def builtin_name(template: str | None) -> str | None:
    """The built-in template a template argument selects, or None for Jinja source: None or
    blank -> the default; a built-in name or alias; a template containing "BITNET" (the
    placeholder bitnet.cpp's converter writes and never renders) -> "bitnet-2b4t"."""
    if template is None or not template.strip():
        return DEFAULT_TEMPLATE
    name = ALIASES.get(template.strip(), template.strip())
    if name in BUILTIN_TEMPLATES:
        return name
    return DEFAULT_TEMPLATE if "BITNET" in template else None


def resolve_template(template: str | None) -> str:
    """The Jinja source for a template argument (see builtin_name)."""
    name = builtin_name(template)
    return BUILTIN_TEMPLATES[name] if name is not None else template


def _raise_exception(message: object) -> None:
    from jinja2.exceptions import TemplateError

    raise TemplateError(str(message))


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(str(fmt))


def _tojson(
    x: Any,
    ensure_ascii: bool = False,
    indent: int | None = None,
    separators: Any = None,
    sort_keys: bool = False,
) -> str:
    return json.dumps(
        x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
    )


@lru_cache(maxsize=32)
def _compile(source: str):
    """Compile a template in the hardened sandbox (cached by source)."""
    import jinja2.ext
    import jinja2.utils
    from jinja2.exceptions import SecurityError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class Namespace(jinja2.utils.Namespace):
        """`namespace()` that refuses underscore attributes (no route to internals)."""

        def __init__(*args: Any, **kwargs: Any) -> None:
            self, args = args[0], args[1:]
            attrs = dict(*args, **kwargs)
            for name in attrs:
                Namespace._check(name)
            jinja2.utils.Namespace.__init__(self, attrs)

        def __setitem__(self, name: str, value: Any) -> None:
            Namespace._check(name)
            jinja2.utils.Namespace.__setitem__(self, name, value)

        @staticmethod
        def _check(name: object) -> None:
            if isinstance(name, str) and name.startswith("_"):
                raise SecurityError(f"namespace attribute {name!r} starts with an underscore")

    class Env(ImmutableSandboxedEnvironment):
        intercepted_binops = frozenset({"*", "**"})

        def unsafe_undefined(self, obj: Any, attribute: str) -> Any:
            # jinja2 returns an Undefined that prints as "": refuse at once instead
            raise SecurityError(
                f"access to attribute {attribute!r} of a "
                f"{type(obj).__name__!r} object is not allowed"
            )

        def call_binop(self, context: Any, op: str, left: Any, right: Any) -> Any:
            if op == "*":
                for seq, n in ((left, right), (right, left)):
                    if isinstance(seq, (str, list, tuple)) and isinstance(n, int):
                        if len(seq) * max(n, 0) > MAX_SEQUENCE_LEN:
                            raise SecurityError(
                                f"the template builds a sequence longer than {MAX_SEQUENCE_LEN}"
                            )
                return operator.mul(left, right)
            if op == "**":
                if isinstance(left, int) and isinstance(right, int) and right > 0:
                    if abs(left) > 1 and right * max(abs(left).bit_length(), 1) > MAX_POWER_BITS:
                        raise SecurityError("the template computes a power too large")
                return operator.pow(left, right)
            return super().call_binop(context, op, left, right)

    env = Env(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    env.globals["namespace"] = Namespace
    return env.from_string(source)


ROLES = ("system", "developer", "user", "assistant", "tool")


def normalize_messages(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, str]]:
    """Check OpenAI-style messages and return plain {"role", "content"} dicts: the one
    message normaliser of the library, the CLI and the server.

    role: one of ROLES; "developer" (OpenAI's newer name for the system turn) becomes
    "system", the role every template knows. content: a string, None (empty) or a list of
    {"type": "text", "text": ...} parts, which are joined. Raises TribitError naming the
    bad message.
    """
    if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence):
        raise TribitError("messages must be a list of {'role': ..., 'content': ...} objects")
    if not messages:
        raise TribitError("messages is empty: give at least one message")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, Mapping):
            raise TribitError(f"messages[{i}] must be an object, got {type(m).__name__}")
        role = m.get("role")
        if role not in ROLES:
            raise TribitError(f"messages[{i}].role must be one of {ROLES}, got {role!r}")
        content = m.get("content")
        if content is None:
            content = ""
        elif isinstance(content, list):
            parts = []
            for j, part in enumerate(content):
                if not (
                    isinstance(part, Mapping)
                    and part.get("type") == "text"
                    and isinstance(part.get("text"), str)
                ):
                    raise TribitError(
                        f"messages[{i}].content[{j}] must be {{'type': 'text', 'text': str}}"
                    )
                parts.append(part["text"])
            content = "".join(parts)
        elif not isinstance(content, str):
            raise TribitError(f"messages[{i}].content must be a string or a list of text parts")
        out.append({"role": "system" if role == "developer" else role, "content": content})
    return out


def render_chat(
    messages: Sequence[Mapping[str, Any]],
    template: str | None = None,
    add_generation_prompt: bool = True,
    bos_token: str = "",
    eos_token: str = "",
    isolated: bool | None = None,
    **extra: Any,
) -> str:
    """Render a conversation to prompt text with a chat template (see module doc).

    template: None (built-in "bitnet-2b4t"), a built-in name, or Jinja source (e.g. the GGUF
    `tokenizer.chat_template`). bos_token/eos_token are the texts templates may print; keep
    bos_token "" when the tokenizer adds BOS itself. `extra` goes to the template (tools, ...).
    isolated: render in the budgeted worker process (template_worker: time and memory caps
    that a template cannot escape); None (default): for every template but the built-ins.
    Raises TribitError for bad messages or a template that fails, breaks the sandbox or runs
    past its budget (TemplateBudgetError).
    """
    source = resolve_template(template)
    plain = normalize_messages(messages)
    ctx = dict(
        extra,
        messages=plain,
        add_generation_prompt=bool(add_generation_prompt),
        bos_token=bos_token,
        eos_token=eos_token,
    )
    if isolated is None:
        isolated = not is_builtin(source)
    if isolated:
        from .template_worker import default_runner

        return default_runner().render(source, ctx)
    return _render_source(source, ctx)


def is_builtin(source: str) -> bool:
    """True when `source` is one of tribit's own templates (trusted: rendered in-process)."""
    return source in BUILTIN_TEMPLATES.values()


def _render_source(source: str, ctx: dict[str, Any]) -> str:
    """Compile (cached) and render in this process, with the sandbox and the output cap."""
    from jinja2.exceptions import SecurityError, TemplateError

    try:
        compiled = _compile(source)
    except TemplateError as e:
        raise TribitError(f"invalid chat template: {e}") from None
    except Exception as e:  # jinja2's lexer lets ast's SyntaxError out (found by fuzzing:
        # a float literal with a non-ASCII digit, `{{ 1.\u07c2 }}`); RecursionError, ...
        raise TribitError(f"invalid chat template: {type(e).__name__}: {e}") from None
    parts: list[str] = []
    size = 0
    try:
        for chunk in compiled.generate(**ctx):
            size += len(chunk)
            if size > MAX_OUTPUT_CHARS:
                raise TribitError(f"the chat template output exceeds {MAX_OUTPUT_CHARS} characters")
            parts.append(chunk)
    except TribitError:
        raise
    except SecurityError as e:
        raise TribitError(f"the chat template was refused by the sandbox: {e}") from None
    except TemplateError as e:
        raise TribitError(f"the chat template failed: {e}") from None
    except (RecursionError, MemoryError, OverflowError) as e:
        raise TribitError(
            f"the chat template exhausted resources: {type(e).__name__}: {e}"
        ) from None
    except Exception as e:  # template code errors (TypeError, KeyError, ...) are input errors
        raise TribitError(f"the chat template failed: {type(e).__name__}: {e}") from None
    return "".join(parts)


# Placeholders for special-token texts inside message contents: one private-use character
# per distinct protected text, from the first of these planes that neither the template nor
# any control token uses (see encode_chat).
_PLACEHOLDER_PLANES = ((0xF0000, 0xFFFFE), (0x100000, 0x10FFFE))


def encode_chat(
    tokenizer: Any,
    messages: Sequence[Mapping[str, Any]],
    template: str | None = None,
    add_generation_prompt: bool = True,
    bos_token: str = "",
    eos_token: str = "",
    add_bos: bool | None = None,
    isolated: bool | None = None,
    **extra: Any,
) -> list[int]:
    """Token ids of a conversation rendered with a chat template, where only the template's
    own text can become control tokens: message contents are plain text.

    Rendering the template and encoding the result with `special=True` let a user write
    `<|eot_id|>Assistant: ...` and fake turns. Here every control-token text (and every
    placeholder-range character) inside a content is swapped for a private-use placeholder
    before rendering; the rendered text is split at control tokens as usual, and the raw
    fragments get their placeholders back as text. Template filters keep working (trim,
    upper, ... leave placeholders alone); adjacent template and content text still merge
    into one fragment, so ordinary prompts encode exactly as before.
    add_bos: None -> the tokenizer's setting, except when the rendered text already starts
    with `bos_token`. isolated: as in `render_chat`.
    """
    source = resolve_template(template)
    plain = normalize_messages(messages)
    lo, hi = _placeholder_plane(tokenizer, source)
    protected = tokenizer.control_texts
    table: dict[str, str] = {}  # protected text -> placeholder

    def escape(text: str) -> str:
        present = [t for t in protected if t in text]
        in_range = {c for c in text if lo <= ord(c) < hi}
        if not present and not in_range:
            return text
        import re

        alts = [re.escape(t) for t in present] + [re.escape(c) for c in sorted(in_range)]
        pattern = re.compile("|".join(alts))  # present is longest first: so is the match

        def sub(m: Any) -> str:
            t = m.group(0)
            if t not in table:
                if len(table) >= hi - lo:
                    raise TribitError("the messages hold too many distinct special-token texts")
                table[t] = chr(lo + len(table))
            return table[t]

        return pattern.sub(sub, text)

    for msg in plain:
        if isinstance(msg.get("content"), str):
            msg["content"] = escape(msg["content"])
    text = render_chat(
        plain, source, add_generation_prompt, bos_token, eos_token, isolated=isolated, **extra
    )
    if add_bos is None:
        add_bos = bool(tokenizer.add_bos) and not (bos_token and text.startswith(bos_token))
    restore = {ord(ph): t for t, ph in table.items()}
    return tokenizer._encode(text, add_bos, True, False, restore)


def _placeholder_plane(tokenizer: Any, source: str) -> tuple[int, int]:
    for lo, hi in _PLACEHOLDER_PLANES:
        used = any(lo <= ord(c) < hi for t in [source, *tokenizer.control_texts] for c in t)
        if not used:
            return lo, hi
    raise TribitError(
        "the chat template or the vocabulary uses private-use characters of "
        "both supplementary planes; tribit cannot keep message text apart"
    )
