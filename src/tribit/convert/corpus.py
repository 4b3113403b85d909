"""A small, fixed English corpus for training the byte-level BPE tokenizer of dummy models.

Dummy models have random weights, but they carry a real tokenizer so that `tribit run`, chat and
the server work on them end to end. The text is varied (prose, dialogue, numbers, code,
punctuation) so the merges cover common English pieces; it is constant, so the tokenizer of a
dummy model is deterministic.
"""

from __future__ import annotations

CORPUS: tuple[str, ...] = (
    "The quick brown fox jumps over the lazy dog. A journey of a thousand miles begins with a "
    "single step. All that glitters is not gold.",
    "Once upon a time, in a small village by the sea, there lived an old fisherman and his wife. "
    "Every morning he rowed his boat out past the rocks, and every evening he came home with "
    "whatever the water had given him.",
    "Mary went to the kitchen. John picked up the apple. Where is the apple? The apple is in the "
    "kitchen. Daniel travelled to the office. Sandra moved to the garden. Where is Sandra? She "
    "is in the garden.",
    "User: What is the capital of France?\nAssistant: The capital of France is Paris.\n"
    "User: And of Italy?\nAssistant: Rome is the capital of Italy.",
    "Hello! How are you today? I'm fine, thank you. It's a beautiful day, isn't it? Yes, the sun "
    "is shining and the birds are singing.",
    "Numbers: 0 1 2 3 4 5 6 7 8 9 10 12 25 42 100 256 1024 2048 4096 65536. In 2024 the price "
    "rose by 3.5% to $19.99, while 1/3 of the users paid 7.25 euros.",
    "def fibonacci(n):\n    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n"
    "    return a\n\nprint(fibonacci(10))  # 55",
    "for (int i = 0; i < n; ++i) { sum += x[i] * w[i]; }\nreturn sum;",
    "Science is the systematic study of the natural world through observation and experiment. "
    "Physics describes matter and energy; chemistry studies how substances combine; biology "
    "explores living things, from single cells to whole ecosystems.",
    "The weather forecast for tomorrow: cloudy in the morning with a chance of rain in the "
    "afternoon, temperatures between 12 and 18 degrees, and a light wind from the west.",
    'She said, "We should leave before it gets dark." He replied, "Not yet; the train doesn\'t '
    "arrive until seven o'clock.\" They waited on the platform, watching the clock.",
    "To make bread, mix flour, water, salt and yeast. Knead the dough for ten minutes, let it "
    "rise for an hour, shape it, and bake it in a hot oven until the crust is golden brown.",
    "History remembers kings and battles, but most of the past was lived by ordinary people: "
    "farmers, weavers, sailors, teachers, mothers and fathers who worked, talked and hoped.",
    "Questions and answers. Why is the sky blue? Because air scatters blue light more than red "
    "light. Why do leaves change colour in autumn? Because the green chlorophyll breaks down.",
    "Machine learning models learn patterns from data. A language model predicts the next word "
    "in a sentence; with enough text and computation it can write, translate and summarize.",
    "Monday, Tuesday, Wednesday, Thursday, Friday, Saturday, Sunday. January, February, March, "
    "April, May, June, July, August, September, October, November, December.",
    "red, orange, yellow, green, blue, indigo, violet; north, south, east, west; one, two, "
    "three, four, five, six, seven, eight, nine, ten; first, second, third, last.",
    "The library opens at nine and closes at five. Please return your books on time, keep your "
    "voice down, and do not eat or drink near the computers.",
    "In the end, the little robot understood that being helpful did not mean knowing every "
    "answer. It meant listening carefully, saying what it knew, and admitting what it did not.",
    "Email: alice@example.com; web: https://example.org/docs/index.html; path: /usr/local/bin; "
    'version 1.2.3-beta; key=value; [list, of, items]; {"json": true}.',
    "It was the best of times, it was the worst of times, it was the age of wisdom, it was the "
    "age of foolishness. Ask not what your country can do for you.",
    "Please summarize the following text in one sentence. Translate this phrase into English. "
    "Write a short poem about the sea. Explain the answer step by step.",
)


def corpus_texts() -> list[str]:
    """The corpus as a list of documents (a new list each call)."""
    return list(CORPUS)
