"""What the web page may tell a user about the loaded model, from its file's metadata:
`general.description`, example prompts (`tribit.chat.examples`, tribit's own key) and the
temperature the model's makers recommend (`general.sampling.temp`, llama.cpp's key). A
file without these keys (any real chat model) gives an empty card and the page shows
nothing more than before. Values of the wrong type are ignored; texts are capped."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..formats.keys import General, Tribit

MAX_TEXT = 1000  # characters of a description or an example prompt
MAX_EXAMPLES = 4


def model_card(md: Mapping[str, Any]) -> dict[str, Any]:
    """`{"description": str, "examples": [str], "temperature": float}`, each key only when
    the file has it (and it has the right type)."""
    card: dict[str, Any] = {}
    desc = md.get(General.DESCRIPTION)
    if isinstance(desc, str) and desc.strip():
        card["description"] = desc.strip()[:MAX_TEXT]
    ex = md.get(Tribit.CHAT_EXAMPLES)
    if isinstance(ex, (list, tuple)):
        texts = [x.strip()[:MAX_TEXT] for x in ex if isinstance(x, str) and x.strip()]
        if texts:
            card["examples"] = texts[:MAX_EXAMPLES]
    temp = md.get(General.SAMPLING_TEMP)
    if isinstance(temp, (int, float)) and not isinstance(temp, bool) and 0 <= temp <= 2:
        card["temperature"] = float(temp)
    return card
