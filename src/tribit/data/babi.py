"""bAbI-style stories and questions (Weston et al., 2015), generated.

Tasks (numbered as in bAbI):

- 1 single supporting fact: "Mary went back to the garden. ... Where is Mary?"
- 2 two supporting facts: "John picked up the apple. John went to the office. Where is the apple?"
- 3 three supporting facts: "... Where was the apple before the office?"
- 6 yes/no questions: "Is Mary in the garden?"

Prompts look exactly like the seed prompt every bitnet.cpp tutorial runs,
``<story sentences> <question>\\nAnswer:``, quirks included (several verbs of
motion, distractor sentences about other people, the occasional "the the the");
answers are one sentence with a leading space: `` Mary is in the garden.``,
`` The apple is in the office.``, `` Yes.`` / `` No.``.

The "train" and "heldout" splits use disjoint sets of names and places, so a
held-out score measures reading, not memorization. The "shapes" split is held out
too, with words of other shapes than the train lists' (long names of many pieces,
rare letters and clusters, places of none of the lists) in longer stories about
more people (4-8 sentences, 3-5 people). The seed prompt's names and
places (Daniel, Mary, Sandra, John; garden, kitchen, hallway, bedroom) are in the
train split. Besides its word lists, the train split mostly makes up names and
places, from syllables or random letters (never a held-out word), which teaches a
model to copy words it has never seen. Pure Python and deterministic for a seed.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

TRAIN_NAMES = (
    "Mary",
    "John",
    "Daniel",
    "Sandra",
    "Bill",
    "Fred",
    "Jeff",
    "Julie",
    "Emily",
    "Lily",
    "Greg",
    "Brian",
    "Bernhard",
    "Yann",
    "Jason",
    "Antoine",
    "Sumit",
    "Winona",
    "Gertrude",
    "Jessica",
    "Alice",
    "Bob",
    "Carol",
    "David",
    "Ethan",
    "Fiona",
    "George",
    "Hannah",
    "Ian",
    "Jack",
    "Karen",
    "Laura",
    "Mark",
    "Nina",
    "Oscar",
    "Paul",
    "Rachel",
    "Steve",
    "Tina",
    "Victor",
    "Wendy",
    "Xavier",
    "Zoe",
    "Adam",
    "Bella",
    "Chris",
    "Diana",
    "Edward",
    "Grace",
    "Henry",
    "Isabel",
    "James",
    "Kevin",
    "Linda",
    "Michael",
    "Olivia",
    "Peter",
    "Quinn",
    "Ruth",
    "Sarah",
    "Thomas",
    "Uma",
    "Vera",
    "William",
    "Yusuf",
    "Amy",
    "Ben",
    "Chloe",
    "Dan",
    "Eva",
    "Frank",
    "Gina",
    "Harry",
    "Ivy",
    "Joe",
    "Kim",
    "Lucy",
    "Max",
    "Nora",
    "Owen",
    "Rita",
    "Sam",
    "Ted",
    "Ada",
    "Boris",
    "Clara",
    "Derek",
    "Elsa",
    "Felix",
    "Helen",
    "Igor",
    "Jane",
)
HELDOUT_NAMES = (
    "Kate",
    "Leo",
    "Maya",
    "Noah",
    "Omar",
    "Pia",
    "Raj",
    "Sofia",
    "Tom",
    "Ursula",
    "Vince",
    "Alan",
    "Beth",
    "Carl",
    "Dora",
    "Eli",
    "Fay",
    "Gus",
    "Hugo",
    "Iris",
    "Lena",
    "Nico",
    "Olga",
    "Rosa",
    "Simon",
    "Tara",
    "Wanda",
    "Yara",
    "Zack",
    "Anna",
)
TRAIN_PLACES = (
    "garden",
    "kitchen",
    "hallway",
    "bedroom",
    "bathroom",
    "office",
    "cellar",
    "attic",
    "garage",
    "library",
    "park",
    "school",
    "cinema",
    "station",
    "bakery",
    "theater",
    "museum",
    "market",
    "beach",
    "forest",
    "harbor",
    "church",
    "hospital",
    "barn",
    "lobby",
    "studio",
    "pantry",
    "porch",
    "balcony",
    "basement",
    "bank",
    "cafe",
    "castle",
    "farm",
    "hotel",
    "lake",
    "mall",
    "pool",
    "river",
    "shop",
    "square",
    "tower",
    "villa",
    "yard",
)
HELDOUT_PLACES = (
    "playground",
    "stadium",
    "airport",
    "temple",
    "zoo",
    "laundry",
    "gym",
    "shed",
    "island",
    "garret",
    "chapel",
    "bridge",
    "dungeon",
    "meadow",
    "canyon",
    "wharf",
)
# held-out words of other shapes than the train and heldout lists' short, common ones:
# long names of many pieces, rare letters and letter clusters ("Krzysztof", "Xiomara",
# "Nkechi"), places that are long, compound or spelled unusually ("planetarium", "fjord")
SHAPE_NAMES = (
    "Bartholomew",
    "Maximiliano",
    "Oluwaseun",
    "Krzysztof",
    "Xiomara",
    "Zephyrine",
    "Jacqueline",
    "Evangeline",
    "Wilhelmina",
    "Konstantin",
    "Anastasia",
    "Guinevere",
    "Fitzgerald",
    "Svetlana",
    "Ignatius",
    "Ximena",
    "Zbigniew",
    "Kazimierz",
    "Yevgeny",
    "Quentin",
    "Thelonious",
    "Persephone",
    "Montgomery",
    "Seraphina",
    "Ekaterina",
    "Hyacinth",
    "Quirinus",
    "Xanthippe",
    "Zachariah",
    "Jedediah",
    "Cassiopeia",
    "Wojciech",
    "Kwabena",
    "Tshepiso",
    "Nkechi",
    "Hrothgar",
    "Bjorn",
    "Dagny",
    "Oyelaran",
    "Vercingetorix",
)
SHAPE_PLACES = (
    "observatory",
    "greenhouse",
    "lighthouse",
    "planetarium",
    "conservatory",
    "amphitheater",
    "laboratory",
    "vineyard",
    "boathouse",
    "quarry",
    "jacuzzi",
    "ziggurat",
    "gazebo",
    "pavilion",
    "mezzanine",
    "vestibule",
    "scriptorium",
    "orangery",
    "fjord",
    "bazaar",
    "kiosk",
    "oasis",
    "monastery",
    "aquarium",
    "crypt",
    "sauna",
    "workshop",
    "courtyard",
    "treehouse",
    "igloo",
    "junkyard",
    "skatepark",
    "waxworks",
    "cloakroom",
    "dormitory",
    "wigwam",
    "yurt",
)
OBJECTS = (
    "apple",
    "football",
    "milk",
    "book",
    "key",
    "box",
    "ball",
    "cup",
    "hat",
    "pen",
    "bag",
    "phone",
    "bottle",
    "lamp",
    "coin",
)
MOVES = (
    "went to",
    "went back to",
    "travelled to",
    "journeyed to",
    "moved to",
    "ran to",
    "walked to",
)
GRABS = ("picked up", "got", "grabbed", "took")
DROPS = ("dropped", "put down", "discarded", "left")
TASKS = (1, 2, 3, 6)
TASK_NAMES = {
    1: "single supporting fact",
    2: "two supporting facts",
    3: "three supporting facts",
    6: "yes/no questions",
}
SPLITS = ("train", "heldout", "shapes")

SEED_PROMPT = (
    "Daniel went back to the the the garden. Mary travelled to the kitchen. Sandra journeyed "
    "to the kitchen. Sandra went to the hallway. John went to the bedroom. Mary went back to "
    "the garden. Where is Mary?\nAnswer:"
)
SEED_ANSWER = " Mary is in the garden."

# every letter shows up in made-up words, so that no piece of a held-out word is
# one the model has rarely had to copy
_ONSETS = (
    "b",
    "c",
    "d",
    "f",
    "g",
    "h",
    "j",
    "k",
    "l",
    "m",
    "n",
    "p",
    "qu",
    "r",
    "s",
    "t",
    "v",
    "w",
    "y",
    "z",
    "br",
    "dr",
    "st",
    "tr",
    "sh",
    "ch",
    "th",
    "pl",
    "gr",
    "wh",
    "sc",
)
_VOWELS = ("a", "e", "i", "o", "u", "y", "ai", "ou", "ea", "oo")
_CODAS = ("", "", "", "n", "l", "r", "s", "m", "x", "ck", "rd", "th", "nd", "t")
_LETTERS = "abcdefghijklmnopqrstuvwxyz"
_MADE_UP_RATE = 0.7  # share of train-split names/places made up (syllables or letters)
# letters that English words use least: made-up letter strings draw them as often as the
# others, and a share of made-up words is forced to hold one ("Xiomara", "fjord")
_RARE = "jkqvwxz"


@dataclass(frozen=True)
class Example:
    """One question: `prompt` ends with "\\nAnswer:", `answer` is the expected
    continuation (a leading space, one sentence)."""

    task: int
    prompt: str
    answer: str


SEED = Example(1, SEED_PROMPT, SEED_ANSWER)


def _made_up(rng: random.Random, capital: bool, exclude: set[str]) -> str:
    """A made-up word that is none of `exclude` (held-out and story words), of one of
    three kinds: syllables (sometimes vowel-first, like "airport" or "Omar"), random
    letters, or a blend of 2-4 pieces cut from the train lists' words (`_blend`), so
    that the model learns to copy any sequence of pieces, not only the pieces and
    pairs of pieces that the word lists and syllables have; some begin like a word of
    the sentences (`_WORD_START_RATE`). Lengths run from 2 letters to long words of
    many pieces (`_LONG_RATE`), and some hold a rare letter (`_RARE`)."""
    while True:
        start = ""
        if rng.random() < _WORD_START_RATE:
            word = rng.choice(_SENTENCE_WORDS)
            start = word[: rng.randint(2, min(4, len(word)))]
        long = rng.random() < _LONG_RATE
        kind = rng.random()
        if kind < 0.35:
            w = rng.choice(_VOWELS) if rng.random() < 0.25 else ""
            w += "".join(
                rng.choice(_ONSETS) + rng.choice(_VOWELS)
                for _ in range(rng.randint(3, 4) if long else rng.randint(1, 2))
            )
            w += rng.choice(_CODAS)
        elif kind < 0.7:
            n = rng.randint(9, 14) if long else rng.randint(2, 8)
            w = "".join(rng.choice(_LETTERS) for _ in range(n))
        else:
            w = _blend(rng, rng.randint(3, 4) if long else 2)
        if rng.random() < _RARE_RATE:
            i = rng.randrange(len(w) + 1)
            w = w[:i] + rng.choice(_RARE) + w[i:]
        w = start + w
        w = w.capitalize() if capital else w
        if len(w) >= 2 and w.lower() not in exclude:
            return w


def _blend(rng: random.Random, k: int) -> str:
    """`k` pieces of 2-5 letters cut from words of the train text ("cell" + "ney" +
    "ary"): the tokenizer's own pieces, in orders and places where the lists never put
    them (held-out "vineyard" came out as "vippard", "cloakroom" as "cloakine")."""
    out = ""
    for _ in range(k):
        word = rng.choice(_BLEND_WORDS)
        n = rng.randint(2, min(5, len(word)))
        i = rng.randint(0, len(word) - n)
        out += word[i : i + n]
    return out


_SENTENCE_WORDS = tuple(
    sorted(
        {w for phrase in MOVES + GRABS + DROPS for w in phrase.split()}
        | {"the", "where", "is", "in", "was", "before", "answer", "yes", "no", "and"}
    )
)
# made-up words are never held-out words, nor words of the stories' sentences
_NOT_MADE_UP = {
    w.lower() for w in HELDOUT_NAMES + HELDOUT_PLACES + SHAPE_NAMES + SHAPE_PLACES + OBJECTS
} | set(_SENTENCE_WORDS)
# a share of made-up words begin like a word of the sentences (" is", " in", " the",
# " tra", ...), so the model learns to copy them rather than continue the familiar
# word: without them "island" (" is" + "l" + "and") came out as "ishand" or "ishel"
_WORD_START_RATE = 0.15
# shares of made-up words that are long (3-4 syllables or blended pieces, 9-14 letters)
# and that hold a rare letter: the file trained without them read held-out words of
# other shapes worse ("Krzysztof", "vineyard": 77 % of task 1, 95 % on the heldout lists)
_LONG_RATE = 0.35
_RARE_RATE = 0.2
# every word of the train text: the tokenizer's pieces are pieces of these (" phone" gives
# "hone", " journeyed" "ney"; held-out "vineyard" is " v" "i" "ney" "ard"), so blends put
# each piece where a name or place is copied (else "ney" is there once in 3000 stories)
_BLEND_WORDS = tuple(
    sorted({w.lower() for w in TRAIN_NAMES + TRAIN_PLACES + OBJECTS + _SENTENCE_WORDS})
)


class _Vocab:
    """Names and places of one split (the train split mixes in made-up words) and
    its stories' sizes: people in a story, sentences of a task-1 story."""

    def __init__(self, rng: random.Random, split: str):
        self.rng, self.train = rng, split == "train"
        self.names, self.places = {
            "train": (TRAIN_NAMES, TRAIN_PLACES),
            "heldout": (HELDOUT_NAMES, HELDOUT_PLACES),
            "shapes": (SHAPE_NAMES, SHAPE_PLACES),
        }[split]
        # heldout: the sizes its draws were made with; train covers the shapes split's
        self.n_people, self.n_lines = {
            "train": ((2, 5), (2, 8)),
            "heldout": ((2, 4), (2, 8)),
            "shapes": ((3, 5), (4, 8)),
        }[split]

    def people(self, k: int) -> list[str]:
        if self.train and self.rng.random() < _MADE_UP_RATE:
            out: set[str] = set()
            while len(out) < k:
                out.add(_made_up(self.rng, True, _NOT_MADE_UP))
            return sorted(out)
        return self.rng.sample(self.names, k)

    def place_set(self) -> Sequence[str]:
        """The places one story draws from."""
        if self.train and self.rng.random() < _MADE_UP_RATE:
            return sorted({_made_up(self.rng, False, _NOT_MADE_UP) for _ in range(6)})
        return self.places


def _move(rng: random.Random, who: str, place: str) -> str:
    art = "the the the " if rng.random() < 0.04 else "the "  # the seed prompt's typo
    return f"{who} {rng.choice(MOVES)} {art}{place}."


def _task1_story(rng: random.Random, v: _Vocab) -> tuple[list[str], dict[str, str]]:
    people = v.people(rng.randint(*v.n_people))
    places = v.place_set()
    where: dict[str, str] = {}
    lines = []
    for _ in range(rng.randint(*v.n_lines)):
        who, place = rng.choice(people), rng.choice(places)
        lines.append(_move(rng, who, place))
        where[who] = place
    return lines, where


def _where(where: dict[str, str], who: str, story: str) -> Example:
    return Example(1, f"{story} Where is {who}?\nAnswer:", f" {who} is in the {where[who]}.")


def _yes_no(rng: random.Random, v: _Vocab, where: dict[str, str], who: str, story: str) -> Example:
    yes = rng.random() < 0.5
    seen = sorted(set(where.values()) - {where[who]})
    if yes:
        asked = where[who]
    elif seen and rng.random() < 0.7:  # mostly a place from the story: a real distractor
        asked = rng.choice(seen)
    else:
        asked = rng.choice([p for p in v.place_set() if p != where[who]])
    return Example(6, f"{story} Is {who} in the {asked}?\nAnswer:", " Yes." if yes else " No.")


def _task1(rng: random.Random, v: _Vocab) -> Example:
    lines, where = _task1_story(rng, v)
    return _where(where, rng.choice(sorted(where)), " ".join(lines))


def _task6(rng: random.Random, v: _Vocab) -> Example:
    lines, where = _task1_story(rng, v)
    return _yes_no(rng, v, where, rng.choice(sorted(where)), " ".join(lines))


def _objects_story(rng: random.Random, v: _Vocab):
    """People moving, picking up and dropping objects. Returns the sentences, each
    object's final place (None if unknown) and the places it has been, in order."""
    people = v.people(rng.randint(2, 3))
    places = v.place_set()
    objects = rng.sample(OBJECTS, rng.randint(1, 2))
    where = {p: rng.choice(places) for p in people}
    lines = [_move(rng, p, where[p]) for p in people]
    holder: dict[str, str | None] = {o: None for o in objects}
    obj_at: dict[str, str | None] = {o: None for o in objects}
    history: dict[str, list[str]] = {o: [] for o in objects}

    def visit(o: str, place: str) -> None:
        if not history[o] or history[o][-1] != place:
            history[o].append(place)

    for _ in range(rng.randint(3, 8)):
        r, p = rng.random(), rng.choice(people)
        here = [o for o in objects if holder[o] is None and obj_at[o] in (None, where[p])]
        held = [o for o in objects if holder[o] == p]
        if r < 0.35 and here:
            o = rng.choice(here)
            holder[o], obj_at[o] = p, None
            there = " there" if rng.random() < 0.2 else ""
            lines.append(f"{p} {rng.choice(GRABS)} the {o}{there}.")
            visit(o, where[p])
        elif r < 0.5 and held:
            o = rng.choice(held)
            holder[o], obj_at[o] = None, where[p]
            lines.append(f"{p} {rng.choice(DROPS)} the {o}.")
        else:
            where[p] = rng.choice([x for x in places if x != where[p]])
            lines.append(_move(rng, p, where[p]))
            for o in held:
                visit(o, where[p])
    final = {o: (where[h] if (h := holder[o]) else obj_at[o]) for o in objects}
    return lines, final, history


def _task2(rng: random.Random, v: _Vocab) -> Example:
    while True:
        lines, final, history = _objects_story(rng, v)
        # ask only about objects that were carried somewhere (two facts needed)
        cands = sorted(o for o, p in final.items() if p and history[o])
        if cands:
            o = rng.choice(cands)
            return Example(
                2,
                " ".join(lines) + f" Where is the {o}?\nAnswer:",
                f" The {o} is in the {final[o]}.",
            )


def _task3(rng: random.Random, v: _Vocab) -> Example:
    while True:
        lines, _, history = _objects_story(rng, v)
        cands = [(o, h) for o, h in sorted(history.items()) if len(h) >= 2]
        if not cands:
            continue
        o, h = rng.choice(cands)
        i = rng.randrange(1, len(h))
        if h.count(h[i]) == 1:  # "before the X" must name one visit
            return Example(
                3,
                " ".join(lines) + f" Where was the {o} before the {h[i]}?\nAnswer:",
                f" The {o} was in the {h[i - 1]}.",
            )


_MAKERS = {1: _task1, 2: _task2, 3: _task3, 6: _task6}


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")


def _check_tasks(tasks: Sequence[int]) -> None:
    bad = [t for t in tasks if t not in _MAKERS]
    if bad or not tasks:
        raise ValueError(f"unknown bAbI task(s) {bad}; available: {sorted(_MAKERS)}")


def parse_tasks(text: str) -> tuple[int, ...]:
    """A command line's task list, "1,1,6" -> (1, 1, 6); ValueError if it is not one."""
    try:
        tasks = tuple(int(t) for t in text.split(","))
    except ValueError:
        raise ValueError(f"comma-separated task numbers, e.g. 1,2,3,6; got {text!r}") from None
    _check_tasks(tasks)
    return tasks


def iter_examples(
    split: str = "train", seed: int = 0, tasks: Sequence[int] = TASKS
) -> Iterator[Example]:
    """An endless, deterministic stream of examples, cycling through `tasks`
    (a task listed twice comes twice as often)."""
    _check_split(split)
    _check_tasks(tasks)
    rng = random.Random(f"babi-{split}-{seed}")
    v = _Vocab(rng, split)
    i = 0
    while True:
        yield _MAKERS[tasks[i % len(tasks)]](rng, v)
        i += 1


def generate(
    n: int, split: str = "train", seed: int = 0, tasks: Sequence[int] = TASKS
) -> list[Example]:
    """`n` examples of `tasks`, round robin, deterministic for (split, seed, tasks)."""
    it = iter_examples(split, seed, tasks)
    return [next(it) for _ in range(n)]


def story_questions(
    split: str, seed: int, k: int, p_where: float = 0.75, p_not_last: float = 0.0
) -> list[Example]:
    """Up to `k` questions (task 1 with probability `p_where`, else task 6) about
    different people of one task-1 story: the examples share the story text, so a
    trainer can read the story once and branch into the questions.

    With probability `p_not_last` the questions leave out the people who are in
    the place the story mentions last (when anyone else is left): "the last place
    mentioned" answers half of the usual task-1 questions, so a model trained on
    these must find the person's own last move instead.
    """
    _check_split(split)
    rng = random.Random(f"babi-story-{split}-{seed}")
    v = _Vocab(rng, split)
    lines, where = _task1_story(rng, v)
    story = " ".join(lines)
    if p_not_last > 0:
        people = rng.sample(sorted(where), len(where))
        if rng.random() < p_not_last:
            last = lines[-1].rstrip(".").rsplit(" ", 1)[1]
            people = [who for who in people if where[who] != last] or people
        people = people[:k]
    else:  # the draws of the earlier trainings, so they can be reproduced
        people = rng.sample(sorted(where), min(k, len(where)))
    return [
        _where(where, who, story) if rng.random() < p_where else _yes_no(rng, v, where, who, story)
        for who in people
    ]


_MOVE_RE = re.compile(
    r"(?:^|(?<= ))([A-Z][a-z]+) (?:{}) (?:the )+([a-z]+)\.".format("|".join(MOVES))
)
_PERSON_RE = re.compile(r"(?:Where is|Is) ([A-Z][a-z]+)(?:\?| in the [a-z]+\?)\nAnswer:$")


def supporting_place(ex: Example) -> tuple[int, int] | None:
    """The supporting fact of a task-1 or task-6 question, as bAbI labels it: the
    character span `[start, end)` in `ex.prompt` of the place in the asked person's
    last move. None for the other tasks (their answers need several facts)."""
    if ex.task not in (1, 6):
        return None
    m = _PERSON_RE.search(ex.prompt)
    if m is None:
        raise ValueError(f"not a task-{ex.task} question: {ex.prompt[-60:]!r}")
    moves = [f for f in _MOVE_RE.finditer(ex.prompt, 0, m.start()) if f[1] == m[1]]
    if not moves:
        raise ValueError(f"{m[1]} never moves in the story")
    return moves[-1].span(2)


def is_correct(generated: str, ex: Example) -> bool:
    """Exact-answer match: the generated text up to the first newline, with
    trailing blanks removed, must equal the answer."""
    return generated.split("\n", 1)[0].rstrip() == ex.answer


# -- chat ---------------------------------------------------------------------------------
# The chat template written into the model file (`tokenizer.chat_template`): it renders a
# conversation as the one prompt shape the model was trained on, `<story> <question>\nAnswer:`.
# History: the story is every user turn's statements, in order (a turn's text up to its
# last sentence when that sentence is a question, else the whole turn); the question is
# the last user turn's. So "story + question" then "another question" asks the second
# question about the same story, and a turn of new sentences adds to the story. The
# assistant's answers and system messages are left out (the model never saw them).
CHAT_TEMPLATE = (
    "{%- set ns = namespace(story='', question='') -%}"
    "{%- for m in messages if m['role'] == 'user' -%}"
    "{%- set c = m['content'] | replace('\\n', ' ') | trim -%}"
    "{%- set cut = (c.rfind('. ') + 1) if c.endswith('?') else (c | length) -%}"
    "{%- set ns.story = (ns.story ~ ' ' ~ c[:cut]) | trim -%}"
    "{%- set ns.question = c[cut:] | trim -%}"
    "{%- endfor -%}"
    "{{- (ns.story ~ ' ' ~ ns.question) | trim -}}"
    "{%- if add_generation_prompt %}{{ '\\nAnswer:' }}{% endif -%}"
)
DESCRIPTION = (
    "A tiny demo model that answers bAbI location questions (1.8 M ternary "
    "parameters): tell it where people went, in a few short sentences, then ask "
    "where one of them is."
)
CHAT_EXAMPLES = (
    "Daniel went to the garden. Mary travelled to the kitchen. Where is Mary?",
    "Sandra journeyed to the hallway. John went back to the bedroom. Sandra moved to the "
    "office. Where is Sandra?",
)
