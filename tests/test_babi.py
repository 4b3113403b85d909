"""The bAbI-style data (tribit.data.babi), its evaluation (babi_eval) and the
embedded default model answering held-out questions and the seed prompt."""

from __future__ import annotations

import re

import pytest

from tribit.data import babi, babi_eval, default_model_path

MOVE_RE = re.compile(r"^(\w+) (?:{}) (?:the )+(\w+)$".format("|".join(babi.MOVES)))
GRAB_RE = re.compile(r"^(\w+) (?:{}) the (\w+)(?: there)?$".format("|".join(babi.GRABS)))
DROP_RE = re.compile(r"^(\w+) (?:{}) the (\w+)$".format("|".join(babi.DROPS)))


def solve(prompt: str) -> str:
    """An independent reader of the stories: replays every sentence and answers."""
    assert prompt.endswith("\nAnswer:")
    *story, question = re.split(r"(?<=[.?]) ", prompt[: -len("\nAnswer:")])
    where: dict[str, str] = {}
    holder: dict[str, str] = {}
    obj_at: dict[str, str] = {}
    trail: dict[str, list[str]] = {}

    def visit(o: str, place: str) -> None:
        if not trail.get(o) or trail[o][-1] != place:
            trail.setdefault(o, []).append(place)

    for s in story:
        s = s.rstrip(".")
        if m := MOVE_RE.match(s):
            who, place = m.groups()
            where[who] = place
            for o, h in holder.items():
                if h == who:
                    visit(o, place)
        elif m := GRAB_RE.match(s):
            who, o = m.groups()
            holder[o] = who
            obj_at.pop(o, None)
            visit(o, where[who])
        elif m := DROP_RE.match(s):
            who, o = m.groups()
            assert holder.pop(o) == who
            obj_at[o] = where[who]
        else:
            raise AssertionError(f"unparsed sentence {s!r}")
    if m := re.fullmatch(r"Where is (\w+)\?", question):
        return f" {m[1]} is in the {where[m[1]]}."
    if m := re.fullmatch(r"Is (\w+) in the (\w+)\?", question):
        return " Yes." if where[m[1]] == m[2] else " No."
    if m := re.fullmatch(r"Where is the (\w+)\?", question):
        o = m[1]
        return f" The {o} is in the {where[holder[o]] if o in holder else obj_at[o]}."
    if m := re.fullmatch(r"Where was the (\w+) before the (\w+)\?", question):
        t = trail[m[1]]
        assert t.count(m[2]) == 1
        return f" The {m[1]} was in the {t[t.index(m[2]) - 1]}."
    raise AssertionError(f"unparsed question {question!r}")


def words(examples: list[babi.Example]) -> tuple[set[str], set[str]]:
    """(names, places) mentioned in the examples."""
    names, places = set(), set()
    for ex in examples:
        for s in re.split(r"(?<=[.?]) ", ex.prompt[: -len("\nAnswer:")]):
            if m := MOVE_RE.match(s.rstrip(".")):
                names.add(m[1])
                places.add(m[2])
            elif not s.startswith(("Where", "Is")):
                names.add(s.split()[0])
    return names, places


@pytest.mark.parametrize("split", babi.SPLITS)
def test_answers_are_right(split):
    for ex in babi.generate(400, split, seed=3):
        assert ex.prompt.endswith("\nAnswer:") and "\n" not in ex.prompt[: -len("\nAnswer:")]
        assert ex.answer.startswith(" ") and ex.answer.endswith(".")
        assert solve(ex.prompt) == ex.answer, ex


def test_tasks_round_robin_and_deterministic():
    a = babi.generate(40, "train", seed=5)
    assert [e.task for e in a[:8]] == [1, 2, 3, 6, 1, 2, 3, 6]
    assert a == babi.generate(40, "train", seed=5)
    assert a != babi.generate(40, "train", seed=6)
    assert {e.task for e in babi.generate(10, "heldout", tasks=(6,))} == {6}
    yes = sum(e.answer == " Yes." for e in babi.generate(400, "train", tasks=(6,)))
    assert 140 < yes < 260
    with pytest.raises(ValueError, match="split"):
        babi.generate(1, "test")
    with pytest.raises(ValueError, match="task"):
        babi.generate(1, "train", tasks=(4,))


def test_splits_use_disjoint_names_and_places():
    tr_names, tr_places = words(babi.generate(3000, "train", seed=1))
    ho_names, ho_places = words(babi.generate(1000, "heldout", seed=1))
    assert not tr_names & ho_names and not tr_places & ho_places
    held = babi.HELDOUT_NAMES + babi.HELDOUT_PLACES + babi.SHAPE_NAMES + babi.SHAPE_PLACES
    assert not {w.lower() for w in tr_names | tr_places} & {w.lower() for w in held}
    listed = {
        w.lower()
        for w in babi.TRAIN_NAMES + babi.TRAIN_PLACES + babi.HELDOUT_NAMES + babi.HELDOUT_PLACES
    }
    assert not listed & {w.lower() for w in babi.SHAPE_NAMES + babi.SHAPE_PLACES}
    assert ho_names <= set(babi.HELDOUT_NAMES) and ho_places <= set(babi.HELDOUT_PLACES)
    assert len(ho_names) > 20 and len(ho_places) > 10
    # the seed prompt's people and places belong to the train split
    assert {"Daniel", "Mary", "Sandra", "John"} <= set(babi.TRAIN_NAMES)
    assert {"garden", "kitchen", "hallway", "bedroom"} <= set(babi.TRAIN_PLACES)


def _stats(split: str, n: int = 1000) -> dict:
    exs = babi.generate(n, split, seed=5, tasks=(1,))
    sentences = [ex.prompt.count(". ") for ex in exs]  # the story's, before the question
    people = [
        len(
            {
                m[1]
                for s in re.split(r"(?<=[.?]) ", ex.prompt)
                if (m := MOVE_RE.match(s.rstrip(".")))
            }
        )
        for ex in exs
    ]
    names, places = words(exs)
    return {
        "sentences": (min(sentences), max(sentences)),
        "people": (min(people), max(people)),
        "names": names,
        "places": places,
    }


def test_shapes_split_holds_words_of_other_shapes_in_longer_stories():
    """The "shapes" split's words differ from the train and heldout lists in shape, not
    only in spelling: longer (more pieces), rare letters; its stories are longer and
    about more people; every answer is right."""
    for ex in babi.generate(400, "shapes", seed=3):
        assert solve(ex.prompt) == ex.answer, ex
    sh, ho = _stats("shapes"), _stats("heldout")
    assert sh["names"] <= set(babi.SHAPE_NAMES) and sh["places"] <= set(babi.SHAPE_PLACES)
    assert len(sh["names"]) > 30 and len(sh["places"]) > 30
    assert 4 <= sh["sentences"][0] and sh["sentences"][1] == 8 and ho["sentences"][0] == 2
    assert sh["people"][1] == 5 and ho["people"][1] == 4

    def mean_len(ws):
        return sum(map(len, ws)) / len(ws)

    lists = babi.TRAIN_NAMES + babi.TRAIN_PLACES + babi.HELDOUT_NAMES + babi.HELDOUT_PLACES
    assert mean_len(babi.SHAPE_NAMES) > mean_len(babi.TRAIN_NAMES + babi.HELDOUT_NAMES) + 3
    assert mean_len(babi.SHAPE_PLACES) > mean_len(babi.TRAIN_PLACES + babi.HELDOUT_PLACES) + 2
    assert max(map(len, babi.SHAPE_NAMES + babi.SHAPE_PLACES)) > max(map(len, lists))
    rare = set("jkqvwxz")
    share = [
        sum(bool(rare & set(w.lower())) for w in ws) / len(ws)
        for ws in (babi.SHAPE_NAMES + babi.SHAPE_PLACES, lists)
    ]
    assert share[0] > 2 * share[1], share


def test_made_up_words_cover_the_shapes():
    """Train stories have as many people and sentences as the shapes split's, and made-up
    words as long as its longest and with its rare letters (what the model must copy)."""
    tr = _stats("train")
    assert tr["sentences"] == (2, 8) and tr["people"][1] == 5
    listed = {w.lower() for w in babi.TRAIN_NAMES + babi.TRAIN_PLACES}
    made = {w.lower() for w in tr["names"] | tr["places"]} - listed
    assert sum(len(w) >= 12 for w in made) > 100 and sum(len(w) <= 3 for w in made) > 30
    assert sum(bool(set("jkqvwxz") & set(w)) for w in made) > len(made) / 4


def test_made_up_words_are_varied_and_never_held_out_or_story_words():
    names, places = words(babi.generate(3000, "train", seed=1))
    listed = {w.lower() for w in babi.TRAIN_NAMES + babi.TRAIN_PLACES}
    made = {w.lower() for w in names | places} - listed
    assert len(made) > 2000
    # vowel-first words (like "airport", "Omar") and letter strings no syllable makes
    assert sum(w[0] in "aeiou" for w in made) > 100
    assert sum(bool(re.search(r"[^aeiouy]{4}", w)) for w in made) > 100
    # and words that begin like a word of the sentences (" is" + ..., like "island")
    assert sum(w.startswith(("is", "in", "the", "tra")) for w in made) > 200  # 90 without
    story_words = {
        w.lower() for s in (babi.MOVES + babi.GRABS + babi.DROPS + babi.OBJECTS) for w in s.split()
    } | {"the", "where", "is", "in", "was", "before", "answer"}
    assert not made & story_words


def test_stories_have_the_seed_prompts_quirks():
    text = " ".join(e.prompt for e in babi.generate(2000, "train", seed=2))
    for verb in ("went back to", "travelled to", "journeyed to", "went to", "moved to"):
        assert f" {verb} the " in text
    assert "the the the" in text
    assert solve(babi.SEED_PROMPT) == babi.SEED_ANSWER == " Mary is in the garden."


def test_parse_tasks():
    assert babi.parse_tasks("1,1,6") == (1, 1, 6) and babi.parse_tasks("3") == (3,)
    for bad in ("1,4", "one", "", "1,,2"):
        with pytest.raises(ValueError):
            babi.parse_tasks(bad)


def _last_place(prompt: str) -> str:
    *story, _ = re.split(r"(?<=[.?]) ", prompt[: -len("\nAnswer:")])
    return MOVE_RE.match(story[-1].rstrip(".")).group(2)


def test_story_questions_share_the_story_and_can_defeat_recency():
    plain, hard = [], []
    for seed in range(250):
        for p, out in ((0.0, plain), (1.0, hard)):
            exs = babi.story_questions("train", seed, k=3, p_not_last=p)
            story = exs[0].prompt[: exs[0].prompt.rindex(". ") + 1]
            assert all(e.prompt.startswith(story) and solve(e.prompt) == e.answer for e in exs)
            who = [re.search(r"(?:Where is|Is) (\w+)", e.prompt).group(1) for e in exs]
            assert len(set(who)) == len(who) <= 3
            out += [(e, _last_place(e.prompt)) for e in exs if e.task == 1]
    recency = [
        sum(e.answer == f" {e.answer.split()[0]} is in the {last}." for e, last in xs) / len(xs)
        for xs in (plain, hard)
    ]
    # "the place named last" answers ~half of the plain questions; p_not_last=1 leaves
    # it only the stories where everyone who moved is there (one person, often)
    assert 0.35 < recency[0] < 0.65 and recency[1] < 0.2, recency


@pytest.mark.parametrize("split", babi.SPLITS)
def test_supporting_place_is_the_asked_persons_last_move(split):
    exs = babi.generate(300, split, seed=11) + [babi.SEED]
    for ex in exs:
        span = babi.supporting_place(ex)
        if ex.task not in (1, 6):
            assert span is None
            continue
        who = re.search(r"(?:Where is|Is) (\w+)", ex.prompt).group(1)
        story = ex.prompt[: ex.prompt.rindex(". ") + 1]
        start = story.rfind(". ", 0, span[0]) + 2 if ". " in story[: span[0]] else 0
        sentence = story[start : span[1] + 1]
        assert MOVE_RE.match(sentence.rstrip(".")).groups() == (who, ex.prompt[span[0] : span[1]])
        assert not any(s.startswith(who + " ") for s in story[span[1] + 2 :].split(". ")), ex
        if ex.task == 1:  # the place the independent reader answers with
            assert solve(ex.prompt).endswith(f" the {ex.prompt[span[0] : span[1]]}.")
    with pytest.raises(ValueError, match="not a task-1"):
        babi.supporting_place(babi.Example(1, "Mary went to the garden. Who?\nAnswer:", ""))


def test_evaluate_counts_and_agreement():
    exs = babi.generate(12, "heldout", seed=4)
    oracle = {e.prompt: e.answer for e in exs}
    res = babi_eval.evaluate(oracle.__getitem__, exs, lambda p: " No.")
    tot = res.total()
    assert tot.n == 12 and tot.correct == 12
    assert tot.agree == tot.correct_b == sum(e.answer == " No." for e in exs)
    assert set(res.tasks) == {1, 2, 3, 6} and res.tasks[1].accuracy == 1.0
    assert "agree" in babi_eval.format_report(res, "a", "b")
    assert babi.is_correct(" Mary is in the garden.\nMore", babi.SEED)
    assert not babi.is_correct(" Mary is in the kitchen.", babi.SEED)


def _embedded_answerer():
    path = default_model_path()
    if path is None:
        pytest.skip("no embedded model in this installation")
    assert path.stat().st_size <= 10 * 2**20
    import tribit

    model = tribit.load(n_threads=1)  # no path: the embedded model
    return babi_eval.tribit_answerer(model)


def test_embedded_model_answers_the_seed_prompt():
    assert _embedded_answerer()(babi.SEED_PROMPT) == " Mary is in the garden."


def test_embedded_model_meets_the_task_1_target():
    """The issue's target, >= 95 % of held-out task-1 questions (names and places it
    never saw), on 1000 of them: the shipped file gets 975 (97.2-98.0 % on other draws
    of 2000, docs/TRAINING.md); the files before got 954 and 930, a broken runtime or
    an untrained file (close to) none."""
    answer = _embedded_answerer()
    exs = babi_eval.held_out_questions(1000, seed=7, tasks=(1,))
    res = babi_eval.evaluate(answer, exs)
    wrong = [(e.answer, a) for e, a, _ in res.rows if not babi.is_correct(a, e)]
    assert res.total().correct >= 950, wrong


def test_embedded_model_reads_words_of_other_shapes():
    """Held-out task-1 questions with words of other shapes (the "shapes" split: long
    names of many pieces, rare letters, places of no list; 4-8 sentences, 3-5 people).
    The issue's target, 90 %, is not reached yet: the shipped file gets 888 of these 1000,
    the file before 779 (docs/TRAINING.md); this holds the gain."""
    answer = _embedded_answerer()
    exs = babi_eval.held_out_questions(1000, seed=7, tasks=(1,), split="shapes")
    res = babi_eval.evaluate(answer, exs)
    wrong = [(e.answer, a) for e, a, _ in res.rows if not babi.is_correct(a, e)]
    assert res.total().correct >= 870, wrong


def test_embedded_model_answers_held_out_questions():
    """A handful of held-out task-1 questions (the file gets 20 of 20)."""
    answer = _embedded_answerer()
    exs = babi_eval.held_out_questions(20, seed=99, tasks=(1,))
    res = babi_eval.evaluate(answer, exs)
    assert res.total().correct >= 19, [(e.answer, a) for e, a, _ in res.rows]
