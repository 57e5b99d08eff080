"""Tests for rlhf/tasks: splits, gold judges (hand-worked values and games), demonstrations, annotator, keys."""
import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rlhf.tasks import ANNOTATOR_DEFAULTS, get_task, is_eval_prompt, preference_probability
from rlhf.tasks.story import CONTENT_WEIGHTS, FEELINGS, VOCAB, parses, split_sentences

P = "write a happy story about mia and a red kite ."
GOOD = ("one day mia went to the park . mia found a shiny red kite . mia felt glad because the red kite was big . "
        "mia and leo played with the kite . at the end , mia was happy .")


@pytest.fixture(scope="module")
def story():
    return get_task("story")


@pytest.fixture(scope="module")
def algo():
    return get_task("algo")


# errors -------------------------------------------------------------------------------------------
def test_unknown_task():
    with pytest.raises(ValueError, match=r"^unknown task 'x'; choose one of: algo, story$"):
        get_task("x")


@pytest.mark.parametrize("kwargs, msg", [
    ({"temperature": 1.0}, r"unknown annotator setting 'temperature'; allowed: flip_rate, length_bias, noisy_flip_rate, noisy_kind, noisy_share, tau"),
    ({"noisy_kind": "swap"}, r"noisy_kind must be one of: flip, misread \(got 'swap'\)"),
    ({"noisy_share": 1.5}, r"noisy_share must be in \[0, 1\]"),
    ({"tau": 0.0}, r"tau must be > 0"),
    ({"tau": -1}, r"tau must be > 0"),
    ({"tau": float("nan")}, r"tau must be a finite number"),
    ({"flip_rate": 0.6}, r"flip_rate must be in \[0, 0.5\]"),
    ({"flip_rate": -0.1}, r"flip_rate must be in \[0, 0.5\]"),
    ({"length_bias": float("inf")}, r"length_bias must be a finite number"),
    ({"length_bias": "big"}, r"length_bias must be a finite number"),
])
def test_bad_annotator_settings(kwargs, msg):
    with pytest.raises(ValueError, match=msg):
        get_task("story", **kwargs)


def test_annotator_settings_defaults_and_overrides():
    assert get_task("story").annotator_settings() == ANNOTATOR_DEFAULTS == {"tau": 0.1, "flip_rate": 0.1,
                                                                            "length_bias": 0.25}
    assert get_task("algo", tau=0.5, length_bias=-1).annotator_settings() == {"tau": 0.5, "flip_rate": 0.1,
                                                                             "length_bias": -1.0}


@pytest.mark.parametrize("name", ["story", "algo"])
def test_bad_prompt_requests(name):
    t = get_task(name)
    with pytest.raises(ValueError, match=r"unknown split 'test'; choose one of: sft, rl, unlabelled, eval"):
        t.prompts("test", 3)
    for n in (0, -1):
        with pytest.raises(ValueError, match="n must be a positive int"):
            t.prompts("sft", n)
    pool = len(t._pools()[1])
    assert len(set(t.prompts("eval", pool))) == pool  # the whole eval pool, distinct
    with pytest.raises(ValueError, match=rf"asked for {pool + 1} eval prompts but the {name} eval pool holds only {pool}"):
        t.prompts("eval", pool + 1)
    # a prompt outside the grammar (a user's own): no gold judgement, never an exception from the judge
    for prompt in ("hello .", "", "write a happy story about", "reverse : .", "\x00\ufffd", "<|eos|>"):
        assert not t.knows(prompt) and math.isnan(t.gold(prompt, "x .")), prompt
    assert t.knows(t.prompts("eval", 1)[0])
    with pytest.raises(ValueError, match=f"not an? {name} prompt"):
        t.reference("hello .")
    with pytest.raises(ValueError, match=f"the {name} task's annotator cannot label a pair for a prompt outside its grammar"):
        t.annotate("hello .", "a .", "b .", random.Random(0))


# splits ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["story", "algo"])
def test_determinism(name):
    a, b, c = get_task(name, seed=0), get_task(name, seed=0), get_task(name, seed=1)
    for split in ("sft", "rl", "unlabelled", "eval"):
        assert a.prompts(split, 50) == b.prompts(split, 50)
        assert a.prompts(split, 50) != c.prompts(split, 50)
    assert a.prompts("sft", 50) != a.prompts("rl", 50)
    ps = a.prompts("sft", 20)
    demos = lambda task, seed: [task.demonstration(p, r) for r in [random.Random(seed)] for p in ps]  # noqa: E731
    assert demos(a, 3) == demos(b, 3) != demos(a, 4)


@pytest.mark.parametrize("name", ["story", "algo"])
def test_eval_disjoint(name):
    t = get_task(name, seed=7)
    ev = t.prompts("eval", 2000)
    assert len(set(ev)) == 2000 and all(is_eval_prompt(p, t.eval_percent) for p in ev)
    for split in ("sft", "rl", "unlabelled"):
        others = t.prompts(split, 5000)
        assert not set(ev) & set(others)
        assert not any(is_eval_prompt(p, t.eval_percent) for p in others)
    assert len(t._pools()[1]) >= 4000  # a held-out set of thousands of distinct prompts exists


def test_non_eval_split_repeats_only_past_the_pool(story):
    pool = len(story._pools()[0])
    ps = story.prompts("unlabelled", pool + 10)
    assert len(set(ps[:pool])) == pool and len(set(ps)) == pool


@pytest.mark.parametrize("name", ["story", "algo"])
def test_sizes(name):
    t = get_task(name)
    for p in t.prompts("eval", 200):
        assert len(p.split()) <= 16
        assert len(t.reference(p).split()) <= t.max_response_words * 2 // 3


# gold: hand-worked values ------------------------------------------------------------------------------
def test_algo_gold_by_hand(algo):
    p = "reverse : c a d b ."
    assert algo.reference(p) == "b d a c ."
    assert algo.reference("sort : c a d b .") == "a b c d ."
    assert algo.reference("rotate : c a d b .") == "a d b c ."
    assert algo.reference("copy : c a d b .") == "c a d b ."
    assert algo.gold(p, "b d a c .") == 1.0
    assert algo.gold(p, "b d c a .") == 0.5          # 2 of 4 right
    assert algo.gold(p, "b d a c") == 0.5            # exact letters, no " .": halved
    assert algo.gold(p, "b d a c . x") == 0.5        # words after the " .": halved
    assert algo.gold(p, "b d a c a .") == 0.8        # 4 right / max(5, 4)
    assert algo.gold(p, "b d a .") == 0.75           # 3 right / 4
    assert algo.gold(p, "") == algo.gold(p, "   ") == algo.gold(p, "zz qq .") == 0.0
    assert algo.gold_components(p, "b d a c a .") == {"accuracy": 1.0, "length": 0.8, "terminated": 1.0}


def test_story_gold_by_hand(story):
    assert story.gold(P, GOOD) == 1.0
    c = story.gold_components(P, GOOD.replace("shiny red kite", "kite").replace("red kite", "kite"))
    assert c["colour"] == 0.0 and c["object"] == 1.0
    # no colour: content = 0.25 + 0.25 + 0.35 = 0.85; gold = 0.1 + 0.9 * 0.85 = 0.865
    assert story.gold(P, GOOD.replace("red ", "")) == pytest.approx(0.865)
    # one sentence of another mood (sad): n_match 2, n_other 1 -> mood = (2 - 2) / 2 = 0; gold = 0.1 + 0.9 * 0.65
    assert story.gold(P, GOOD + " mia felt sad .") == pytest.approx(0.685)
    # one feeling sentence: mood 0.5; 6 sentences, all parse: gold = 0.1 + 0.9 * (0.65 + 0.175) = 0.8425
    assert story.gold(P, GOOD.replace(" at the end , mia was happy .", "")) == pytest.approx(0.8425)
    # 8 sentences: length 1 - 2/4 = 0.5
    long = GOOD + " mia felt joyful . mia gave the kite to leo . leo felt cheerful ."
    assert story.gold_components(P, long)["length"] == 0.5 and story.gold(P, long) == 0.5
    # one broken sentence of 5: parse 4/5
    assert story.gold(P, GOOD.replace("went to the", "went the")) == pytest.approx(0.8)


@pytest.mark.parametrize("name", ["story", "algo"])
def test_components_recombine_to_gold(name):
    t = get_task(name)
    rng = random.Random(0)
    for p in t.prompts("rl", 200):
        r = t.demonstration(p, rng)
        c = t.gold_components(p, r)
        assert all(0.0 <= v <= 1.0 for v in c.values())
        if name == "story":
            assert set(c) == {"terminated", "parse", "distinct", "length", "name", "object", "colour", "mood"}
            content = 0.25 * c["name"] + 0.25 * c["object"] + 0.15 * c["colour"] + 0.35 * c["mood"]
            want = c["terminated"] * c["parse"] * c["distinct"] * c["length"] * (0.1 + 0.9 * content)
        else:
            assert set(c) == {"accuracy", "length", "terminated"}
            want = c["accuracy"] * c["length"] * (0.5 + 0.5 * c["terminated"])
        assert t.gold(p, r) == pytest.approx(want)
    assert CONTENT_WEIGHTS == {"name": 0.25, "object": 0.25, "colour": 0.15, "mood": 0.35}


@pytest.mark.parametrize("name", ["story", "algo"])
def test_reference_is_best(name):
    t = get_task(name)
    scores = [t.gold(p, t.reference(p)) for p in t.prompts("eval", 300)]
    assert min(scores) >= (0.95 if name == "story" else 1.0)


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=400))
def test_gold_never_raises_on_any_text(text):
    for name, p in (("story", P), ("algo", "sort : c a d b .")):
        t = get_task(name)
        g = t.gold(p, text)
        assert isinstance(g, float) and 0.0 <= g <= 1.0
        assert isinstance(t.key(p, text), str)


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=200), st.text(max_size=200))
def test_gold_never_raises_on_any_prompt(prompt, text):
    for name in ("story", "algo"):
        g = get_task(name).gold(prompt, text)
        assert isinstance(g, float) and (math.isnan(g) or 0.0 <= g <= 1.0)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.sampled_from(VOCAB + [".", ".", ","]), max_size=120))
def test_story_gold_in_range_on_vocabulary_salad(words):
    g = get_task("story").gold(P, " ".join(words))
    assert 0.0 <= g <= 1.0


# gold: not gameable -------------------------------------------------------------------------------------
def test_story_not_gameable(story):
    good = story.gold(P, GOOD)
    assert good == 1.0
    rng = random.Random(0)
    many = [s + " ." for s in GOOD.split(" .") if s.strip()]
    games = {
        "mood-word salad": (" ".join(FEELINGS["happy"] * 3) + " .", 0.0),
        "salad with full stops": ("happy mia . red kite glad . joyful cheerful kite mia .", 0.0),
        "one sentence x5": (" ".join(["mia felt glad because the red kite was big ."] * 5), 0.2),
        "well-formed, ignores the prompt": ("one day leo went to the beach . leo found a blue boat . "
                                            "leo and sam played with the boat . at the end , leo was calm .", 0.1),
        "empty": ("", 0.0),
        "only spaces": ("   \n ", 0.0),
        "20 sentences": (" ".join(rng.sample(many * 4, 20)), 0.0),
        "300 words": (" ".join([GOOD] * 9), 0.0),
        "unterminated": (GOOD[:-2], 0.0),
    }
    for what, (text, want) in games.items():
        g = story.gold(P, text)
        assert g == pytest.approx(want), what
        assert g <= 0.3 and g <= good - 0.7, what


# demonstrations ---------------------------------------------------------------------------------------
def test_story_demonstrations_are_mediocre_but_parse(story):
    rng = random.Random(0)
    ps = story.prompts("sft", 300)
    demos = [story.demonstration(p, rng) for p in ps]
    mean = sum(story.gold(p, d) for p, d in zip(ps, demos)) / len(ps)
    assert 0.45 <= mean <= 0.7  # measured 0.58 over 2000 prompts
    sentences = [s for d in demos for s in split_sentences(d)]
    assert sum(map(parses, sentences)) / len(sentences) >= 0.9  # measured 0.97
    comps = [story.gold_components(p, d) for p, d in zip(ps, demos)]
    for k in ("name", "object", "colour", "mood"):  # every attribute both hit and missed in the data
        hit = sum(c[k] == 1.0 for c in comps) / len(comps)
        assert 0.25 <= hit <= 0.95, k


def test_algo_demonstrations_are_mediocre(algo):
    rng = random.Random(0)
    ps = algo.prompts("sft", 300)
    golds = [algo.gold(p, algo.demonstration(p, rng)) for p in ps]
    assert 0.55 <= sum(golds) / len(golds) <= 0.85  # measured 0.71
    assert 0.1 <= sum(g == 1.0 for g in golds) / len(golds) <= 0.45


# annotator --------------------------------------------------------------------------------------------
def test_preference_probability_by_hand():
    assert preference_probability(0.5, 0.5, 10, 10, 0.1, 0.25) == 0.5
    # (0.6 - 0.5) / 0.1 = 1 -> sigmoid(1) = 0.7310586
    assert preference_probability(0.6, 0.5, 10, 10, 0.1, 0.0) == pytest.approx(0.7310586)
    # 0.25 * (30 - 10) / 10 = 0.5 -> sigmoid(0.5) = 0.6224593
    assert preference_probability(0.0, 0.0, 30, 10, 0.1, 0.25) == pytest.approx(0.6224593)
    assert preference_probability(1.0, 0.0, 0, 0, 1e-9, 0.0) == 1.0  # clamped logit, no overflow


def _win_rate(task, prompt, a, b, n=3000, seed=0):
    rng = random.Random(seed)
    return sum(task.annotate(prompt, a, b, rng) == 0 for _ in range(n)) / n


def test_annotator_follows_gold():
    t = get_task("story", tau=0.01, flip_rate=0.0, length_bias=0.0)
    rng = random.Random(0)
    agree = n = 0
    for p in t.prompts("eval", 300):
        a, b = t.reference(p), t.demonstration(p, rng)
        if abs(t.gold(p, a) - t.gold(p, b)) >= 0.05:
            n += 1
            agree += t.annotate(p, b, a, rng) == 1
    assert n >= 150 and agree / n >= 0.98


def test_annotator_flips_and_length_bias():
    p, long, short = P, " ".join(["x"] * 40), "x"  # both gold 0: only the length term speaks
    assert abs(_win_rate(get_task("story", flip_rate=0.5), p, GOOD, "") - 0.5) < 0.04
    assert abs(_win_rate(get_task("story", length_bias=0.0, flip_rate=0.0), p, long, short) - 0.5) < 0.04
    # 0.25 * 39 / 10 = 0.975 -> sigmoid = 0.726
    assert abs(_win_rate(get_task("story", length_bias=0.25, flip_rate=0.0), p, long, short) - 0.726) < 0.04
    # with the default flips: 0.726 * 0.9 + 0.274 * 0.1 = 0.681
    assert abs(_win_rate(get_task("story"), p, long, short) - 0.681) < 0.04
    t = get_task("story")
    assert [t.annotate(p, GOOD, long, random.Random(5)) for _ in range(3)] == [t.annotate(p, GOOD, long, random.Random(5))] * 3


# keys -------------------------------------------------------------------------------------------------
def test_story_key(story):
    same = ("mia found a red kite . mia felt joyful . the red kite made mia feel cheerful . "
            "mia gave the kite to ben .")
    assert story.key(P, GOOD) == story.key(P, same) == "name=mia object=kite colour=red mood=happy"
    assert story.key(P, GOOD.replace("happy", "sad")) == "name=mia object=kite colour=red mood=mixed"
    assert story.key(P, GOOD.replace("glad", "sad").replace("happy", "lonely")).endswith("mood=sad")
    assert story.key(P, GOOD.replace("red", "blue")) == "name=mia object=kite colour=blue mood=happy"
    assert story.key(P, GOOD.replace("mia", "zoe")).startswith("name=zoe ")
    assert story.key(P, "") == story.key(P, "happy kite .") == "name=none object=none colour=none mood=none"


def test_algo_key(algo):
    p = "reverse : c a d b ."
    assert algo.key(p, "b d a c .") == algo.key(p, " b  d a c  . ") == algo.key(p, "b d a c") == "b d a c"
    assert algo.key(p, "b d c a .") != algo.key(p, "b d a c .")
    assert algo.key(p, "") == ""


def test_noisy_families_are_an_exact_stable_nested_share():
    from rlhf.tasks import noisy_families
    from rlhf.tasks.story import OBJECTS
    quarter, half = noisy_families(OBJECTS, 0.25), noisy_families(OBJECTS, 0.5)
    assert len(quarter) == 6 and len(half) == 12 and quarter < half  # round(0.25 * 24); a larger share keeps the smaller's
    assert noisy_families(OBJECTS, 0.0) == frozenset() and noisy_families(OBJECTS, 1.0) == frozenset(OBJECTS)
    for seed in (0, 7):  # the same families for every seed: paired comparisons across seeds see one world
        t = get_task("story", seed=seed, noisy_share=0.25)
        assert {o for o in OBJECTS if t.noisy(f"write a happy story about mia and a red {o} .")} == quarter
    assert not get_task("story").noisy("write a happy story about mia and a red kite .")  # off by default


def test_noisy_family_labels_flip_at_their_own_rate():
    """Hand example: an annotator with a tiny tau always prefers the better story before flips; with flip_rate 0 and
    noisy_flip_rate 1 it is always right on clean families and always wrong on noisy ones."""
    import random
    t = get_task("story", tau=1e-3, flip_rate=0.0, length_bias=0.0, noisy_share=0.5, noisy_flip_rate=1.0)
    rng = random.Random(0)
    for o in ("kite", "ball", "boat", "hat", "box", "cup"):
        p = f"write a happy story about mia and a red {o} ."
        good, bad = t.reference(p), "mia ."
        assert t.gold(p, good) > t.gold(p, bad)
        assert t.annotate(p, good, bad, rng) == (1 if t.noisy(p) else 0)
    assert get_task("story", noisy_share=0.5).annotator_settings()["noisy_flip_rate"] == 0.45
    assert "noisy_share" not in get_task("story").annotator_settings()  # a default meta.json reads as before
    with pytest.raises(ValueError, match="noisy_flip_rate must be in"):
        get_task("story", noisy_flip_rate=1.5)


def test_misreading_annotator_judges_the_partner_mood_on_noisy_moods():
    """noisy_kind "misread": the families are the requested moods; on the noisy mood (scary at a quarter) the annotator
    takes gold against the partner mood (calm), with the usual tau, flip rate and length bias; elsewhere it is the
    default annotator. Hand example: a calm story against a scary one, for a scary and a happy prompt."""
    import random
    from rlhf.tasks.story import MISREAD, MOODS
    t = get_task("story", tau=1e-3, flip_rate=0.0, length_bias=0.0, noisy_share=0.25, noisy_kind="misread")
    assert t.families == MOODS and {m for m in MOODS if t.noisy_family(m)} == {"scary"}
    assert {MISREAD[MISREAD[m]] for m in MOODS} == set(MOODS) and all(MISREAD[m] != m for m in MOODS)
    scary, calm = "write a scary story about mia and a red kite .", "write a calm story about mia and a red kite ."
    assert t.noisy(scary) and t.family(scary) == "scary" and t.misread(scary) == calm
    scary_story, calm_story = t.reference(scary), t.reference(calm)  # each gold 1 for its own prompt
    assert t.gold(scary, scary_story) > t.gold(scary, calm_story) and t.gold(calm, calm_story) > t.gold(calm, scary_story)
    rng = random.Random(0)
    assert all(t.annotate(scary, scary_story, calm_story, rng) == 1 for _ in range(20))  # consistently wrong
    assert all(t.annotate(calm, scary_story, calm_story, rng) == 1 for _ in range(20))  # right: calm is not noisy
    # the same tau, flip rate and length bias as every other prompt: P(a > b) from the misread gold
    t2 = get_task("story", noisy_share=0.25, noisy_kind="misread")
    from rlhf.tasks import len_words, preference_probability
    want = preference_probability(t2.gold(calm, scary_story), t2.gold(calm, calm_story), len_words(scary_story),
                                  len_words(calm_story), 0.1, 0.25) * 0.9 + (1 - preference_probability(
                                      t2.gold(calm, scary_story), t2.gold(calm, calm_story), len_words(scary_story),
                                      len_words(calm_story), 0.1, 0.25)) * 0.1
    rng = random.Random(1)
    got = sum(t2.annotate(scary, scary_story, calm_story, rng) == 0 for _ in range(4000)) / 4000
    assert abs(got - want) < 0.03
    # a prompt that requests no mood is never misread; the flip kind keeps objects as families and its meta.json keys
    assert get_task("story", attributes="1-4", noisy_share=0.25, noisy_kind="misread").misread("tell a story about mia .") \
        == "tell a story about mia ."
    assert t.annotator_settings()["noisy_kind"] == "misread" and "noisy_flip_rate" not in t.annotator_settings()
    assert "noisy_kind" not in get_task("story", noisy_share=0.25).annotator_settings()
    with pytest.raises(ValueError, match="only the story task has a requested mood"):
        get_task("algo", noisy_share=0.25, noisy_kind="misread")


def test_rm_diagnostics_split_noisy_and_clean_families():
    """Per-family gold accuracy: an RM right on every clean pair and wrong on every noisy one."""
    from rlhf.reward import rm_diagnostics
    t = get_task("story", noisy_share=0.25)
    prompts = [f"write a happy story about mia and a red {o} ." for o in ("kite", "ball") for _ in range(10)]
    noisy = [t.noisy(p) for p in prompts]
    assert noisy[0] != noisy[10]  # kite is a noisy family and ball is not (noisy_families of 0.25)
    good = [t.reference(p) for p in prompts]
    d = rm_diagnostics(prompts, good, ["mia ."] * 20, [0.0 if n else 1.0 for n in noisy], [1.0 if n else 0.0 for n in noisy], t)
    assert d["rm/gold_accuracy_noisy"] == 0.0 and d["rm/gold_accuracy_clean"] == 1.0 and d["rm/gold_accuracy"] == 0.5
    assert d["rm/family_gold_accuracy_std"] == pytest.approx(2 ** -0.5)  # stdev of (0, 1)


def test_rm_diagnostics_split_one_component_pairs_of_a_misreading_annotator():
    """A misreading annotator errs in the mood only: pairs that differ in the mood alone (the reference story for the
    prompt against the one for its partner mood) split into the noisy mood's and the others', with their counts."""
    from rlhf.reward import rm_diagnostics
    t = get_task("story", noisy_share=0.25, noisy_kind="misread")
    prompts = [f"write a {m} story about mia and a red kite ." for m in ("scary", "happy") for _ in range(10)]
    chosen, rejected = [t.reference(p) for p in prompts], [t.reference(t.misread(p)) for p in prompts]
    a, b = t.gold_components(prompts[0], chosen[0]), t.gold_components(prompts[0], rejected[0])
    assert [k for k in a if a[k] != b[k]] == ["mood"]
    noisy = [t.noisy(p) for p in prompts]  # an RM that learned the misreading: wrong on scary, right on happy
    d = rm_diagnostics(prompts, chosen, rejected, [0.0 if n else 1.0 for n in noisy], [1.0 if n else 0.0 for n in noisy], t)
    assert d["rm/component/mood"] == 0.5 and d["rm/component/mood/n"] == 20
    assert d["rm/component/mood_noisy"] == 0.0 and d["rm/component/mood_clean"] == 1.0
    assert d["rm/component/mood_noisy/n"] == d["rm/component/mood_clean/n"] == 10
    assert "rm/component/mood_noisy" not in rm_diagnostics(prompts, chosen, rejected, [1.0] * 20, [0.0] * 20, get_task("story"))


def test_story_prompts_of_varied_attributes():
    """--attributes 1-4: prompts request 1 to 4 attributes; gold averages the requested ones; the default world is
    untouched (every prompt requests all four)."""
    import random
    from collections import Counter

    from rlhf.tasks import task_from_meta
    from rlhf.tasks.story import n_attributes
    assert {n_attributes(p) for p in get_task("story").prompts("rl", 300)} == {4}
    t = get_task("story", attributes="1-4")
    ev = t.prompts("eval", 400)
    assert len(set(ev)) == 400 and Counter(map(t.difficulty, ev)) == {1: 4, 2: 27, 3: 184, 4: 185}  # distinct: small pools cap
    assert not set(ev) & set(t.prompts("sft", 3000))  # the md5 split holds for every form
    rl = Counter(map(t.difficulty, t.prompts("rl", 4000)))
    assert set(rl) == {1, 2, 3, 4} and all(800 < v < 1200 for v in rl.values())  # a quarter each
    p = "tell a story about mia ."
    assert t.parse_prompt(p) == (None, "mia", None, None) and t.family(p) == "-" and t.difficulty(p) == 1
    assert t.gold(p, t.reference(p)) == 1.0
    c = t.gold_components(p, "one day leo went to the park . leo felt sad . at the end , leo was sad .")
    assert set(c) == {"terminated", "parse", "distinct", "length", "name"} and c["name"] == 0.0
    assert t.gold(p, "one day leo went to the park . leo felt sad . at the end , leo was sad .") == pytest.approx(0.1)
    # three attributes: content averages name, object and mood by their weights (0.25, 0.25, 0.35) / 0.85
    p3 = "write a happy story about mia and a kite ."
    story = "one day mia went to the park . mia found a kite . at the end , mia was sad ."
    c3 = t.gold_components(p3, story)
    assert "colour" not in c3 and c3["name"] == c3["object"] == 1.0 and c3["mood"] == 0.0
    assert t.gold(p3, story) == pytest.approx(0.1 + 0.9 * 0.5 / 0.85)
    assert get_task("story").gold(p3, story) == t.gold(p3, story)  # the grammar is one; the world picks the forms
    rng = random.Random(0)
    assert sum(t.gold(q, t.demonstration(q, rng)) > 0 for q in ev) > 300  # every form has its demonstrations
    assert task_from_meta({"task": "story", "seed": 0, "world": t.world_settings()}).attributes == "1-4"
    assert get_task("story").world_settings() == {} and get_task("story").difficulty(p) is None
    with pytest.raises(ValueError, match="only the story task"):
        get_task("algo", attributes="1-4")


def test_rm_diagnostics_per_difficulty_level():
    from rlhf.reward import rm_diagnostics
    t = get_task("story", attributes="1-4")
    prompts = ["tell a story about mia ."] * 3 + ["write a happy story about leo and a red kite ."] * 3
    good = [t.reference(p) for p in prompts]
    d = rm_diagnostics(prompts, good, ["mia ."] * 6, [1, 1, 0, 1, 1, 1], [0, 0, 1, 0, 0, 0], t)
    assert d["rm/gold_accuracy_difficulty_1"] == pytest.approx(2 / 3) and d["rm/gold_accuracy_difficulty_4"] == 1.0
    assert not any("difficulty" in k for k in rm_diagnostics(prompts[3:], good[3:], ["mia ."] * 3, [1] * 3, [0] * 3,
                                                             get_task("story")))
