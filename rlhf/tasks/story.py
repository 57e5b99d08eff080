"""story: a small synthetic story world with a known grammar and a gold judge that cannot be gamed.

Prompt (12 words):  "write a happy story about mia and a red kite ."   (verb write | tell, a mood, a name,
                    a colour and an object; 2 x 4 x 24 x 10 x 24 = 46,080 prompts, 10% kept for eval)
Response:           3-6 sentences, each one of the 9 templates below, e.g.
                    "one day mia went to the park . mia found a shiny red kite . mia felt glad because
                     the red kite was big . mia and leo played with the kite . at the end , mia was happy ."

Mood is lexically local on purpose: it is carried by the characters' feelings, 4 feeling words per mood
(FEELINGS), one per feeling sentence, and the judge counts sentences. A prototype that spread mood over a
sentiment lexicon left a small reward model at chance on mood (docs/reward_model.md); here the RM only
has to match the prompt's mood word against a handful of feeling words.

Gold (all parts in [0, 1]; only sentences that parse count towards the content parts):
    terminated  1 if the last word is "." else 0
    parse       fraction of sentences that parse in the grammar
    distinct    distinct sentences / sentences
    length      1 for 3-6 sentences, n/3 below, 1 - (n - 6)/4 above (0 from 10 sentences on)
    name        the requested name appears
    object      the requested object appears
    colour      "<colour> <object>" appears and the object never has another colour
    mood        clip((n_match - 2 * n_other) / 2, 0, 1): n_match = sentences with a feeling word of the
                requested mood, n_other = sentences with a feeling word of another mood (hedging costs)
    content     = 0.25 name + 0.25 object + 0.15 colour + 0.35 mood
    gold        = terminated * parse * distinct * length * (0.1 + 0.9 * content)
The multiplicative form makes every failure of form fatal (word salad, repetition, run-on answers)
while the 0.1 floor still ranks a well-formed story above garbage. Mood carries the largest weight
because it is the attribute a reward model finds hardest to learn; colour the smallest because it
only counts when the object is there.
"""
from __future__ import annotations

import functools
from collections import Counter
import random
import re

from . import Task

NAMES = ("mia", "leo", "sam", "ava", "noah", "lily", "max", "zoe", "ben", "ella",
         "tom", "ruby", "finn", "nora", "jack", "ivy", "owen", "emma", "luke", "anna",
         "kai", "rosa", "hugo", "lena")
OBJECTS = ("kite", "ball", "boat", "hat", "box", "cup", "book", "drum", "lamp", "key",
           "bike", "doll", "bell", "shell", "train", "robot", "car", "sock", "spoon", "balloon",
           "flag", "coat", "basket", "whistle")
COLOURS = ("red", "blue", "green", "yellow", "pink", "black", "white", "purple", "orange", "brown")
PLACES = ("park", "garden", "beach", "forest", "river", "school", "town", "farm", "hill", "kitchen",
          "library", "market", "lake", "zoo", "castle", "village")
FEELINGS = {  # mood named in the prompt -> the feeling words that express it
    "happy": ("happy", "glad", "cheerful", "joyful"),
    "sad": ("sad", "gloomy", "lonely", "unhappy"),
    "scary": ("scared", "afraid", "nervous", "frightened"),
    "calm": ("calm", "peaceful", "relaxed", "sleepy"),
}
MOODS = tuple(FEELINGS)
MOOD_OF = {w: m for m, ws in FEELINGS.items() for w in ws}
ADJECTIVES = ("big", "small", "old", "new", "shiny", "soft", "heavy", "tiny", "round", "little", "warm",
              "strange")
VERBS = ("found", "saw", "held", "carried", "dropped", "painted", "lost", "fixed", "bought", "made")
MOVES = ("walked", "ran", "hurried", "went", "raced")
PREPS = ("in", "at", "near")
PROMPT_VERBS = ("write", "tell")
CONTENT_WEIGHTS = {"name": 0.25, "object": 0.25, "colour": 0.15, "mood": 0.35}
MIN_SENTENCES, MAX_SENTENCES = 3, 6

# The grammar: {slot} is one word of its class, [ ... ] is optional (dropped when a slot in it is None).
TEMPLATES = (
    "one day {name} went to the {place} .",                                         # 0 intro
    "{name} {verb} a [{size} ][{colour} ]{object}[ {prep} the {place}] .",           # 1 the object
    "{name} felt {feel} .",                                                         # 2 feeling
    "{name} felt {feel} because the [{colour} ]{object} was {adj} .",               # 3 feeling
    "the [{colour} ]{object} made {name} feel {feel} .",                            # 4 feeling
    "{name} and {name2} played with the [{colour} ]{object}[ {prep} the {place}] .",  # 5 plot
    "{name} {move} to the {place} with the [{colour} ]{object} .",                  # 6 plot
    "at the end , {name} was {feel} .",                                             # 7 ending feeling
    "{name} gave the [{colour} ]{object} to {name2} .",                             # 8 plot
)
_SLOT_WORDS = {"name": NAMES, "name2": NAMES, "object": OBJECTS, "colour": COLOURS, "place": PLACES,
               "feel": tuple(MOOD_OF), "adj": ADJECTIVES, "size": ADJECTIVES, "verb": VERBS,
               "move": MOVES, "prep": PREPS}
_PROMPT_RE = re.compile(r"^(\w+) a (\w+) story about (\w+) and a (\w+) (\w+) \.$")


def _template_regex(t: str) -> re.Pattern:
    out = []
    for part in re.split(r"(\{\w+\}|\[|\])", t):
        if part == "[":
            out.append("(?:")
        elif part == "]":
            out.append(")?")
        elif part.startswith("{"):
            out.append("(?:" + "|".join(_SLOT_WORDS[part[1:-1]]) + ")")
        else:
            out.append(re.escape(part))
    return re.compile("".join(out))


_TEMPLATE_RES = tuple(_template_regex(t) for t in TEMPLATES)
VOCAB = sorted({w for ws in _SLOT_WORDS.values() for w in ws}
               | {w for t in TEMPLATES for w in re.sub(r"\{\w+\}|\[|\]", " ", t).split()}
               | set(MOODS) | set(PROMPT_VERBS) | {"a", "story", "about", "and"})


def render(template: str, **slots) -> str:
    """Fill a template; an optional [ ... ] group is kept only when all its slots are not None."""
    def group(m: re.Match) -> str:
        names = re.findall(r"\{(\w+)\}", m.group(1))
        return m.group(1) if all(slots.get(n) is not None for n in names) else ""
    return re.sub(r"\[([^\]]*)\]", group, template).format(**slots)


def parses(sentence: str) -> bool:
    """True when the sentence (words joined by single spaces, ending in '.') is one of the templates."""
    return any(r.fullmatch(sentence) for r in _TEMPLATE_RES)


def split_sentences(response: str) -> list[str]:
    """Sentences as single-spaced strings; an unterminated tail counts as a (broken) sentence."""
    sentences, cur = [], []
    for w in response.split():
        cur.append(w)
        if w == ".":
            sentences.append(" ".join(cur))
            cur = []
    if cur:
        sentences.append(" ".join(cur))
    return sentences


@functools.lru_cache(maxsize=65536)
def parse_prompt(prompt: str) -> tuple[str, str, str, str]:
    """(mood, name, colour, object) of a story prompt; ValueError when it is not one."""
    m = _PROMPT_RE.match(prompt.strip())
    if (m is None or m.group(1) not in PROMPT_VERBS or m.group(2) not in FEELINGS or m.group(3) not in NAMES
            or m.group(4) not in COLOURS or m.group(5) not in OBJECTS):
        raise ValueError(f"not a story prompt (expected e.g. 'write a happy story about mia and a red kite .'): "
                         f"{prompt!r}")
    return m.group(2), m.group(3), m.group(4), m.group(5)


def _story(rng: random.Random, name: str, obj: str, colour: str | None, feels: list[str], n_sent: int,
           colour_p: float = 0.5) -> list[str]:
    """Sentences of a story: intro, the object, feeling and plot sentences, a feeling ending.

    One sentence per word in `feels`; colour None leaves the object uncoloured; later object mentions
    carry the colour with probability colour_p. Plot sentences fill up to n_sent; extra ones are cut.
    """
    friend = rng.choice([x for x in NAMES if x != name])
    col = lambda: colour if rng.random() < colour_p else None  # noqa: E731
    maybe = lambda xs: rng.choice(xs) if rng.random() < 0.5 else None  # noqa: E731
    head = [render(TEMPLATES[0], name=name, place=rng.choice(PLACES)),
            render(TEMPLATES[1], name=name, verb=rng.choice(VERBS), size=maybe(ADJECTIVES), colour=colour,
                   object=obj, prep=maybe(PREPS), place=rng.choice(PLACES))]
    middle = []
    for f in feels[:-1] if len(feels) > 1 else []:
        t = rng.choice((2, 3, 4))
        middle.append(render(TEMPLATES[t], name=name, feel=f, colour=col(), object=obj,
                             adj=rng.choice(ADJECTIVES)))
    plots = [5, 6, 8]
    rng.shuffle(plots)
    for t in plots * 3:
        if len(head) + len(middle) + 1 >= n_sent:
            break
        middle.append(render(TEMPLATES[t], name=name, name2=friend, colour=col(), object=obj,
                             move=rng.choice(MOVES), place=rng.choice(PLACES), prep=maybe(PREPS)))
    rng.shuffle(middle)
    if feels:
        tail = [render(TEMPLATES[7], name=name, feel=feels[-1])]
    else:
        tail = [render(TEMPLATES[6], name=name, move=rng.choice(MOVES), place=rng.choice(PLACES),
                       colour=col(), object=obj)]
    out = head + middle + tail
    while len(out) > n_sent:  # too many: cut sentences at random (may lose an attribute; mediocre)
        out.pop(rng.randrange(len(out)))
    return out


def _analyse(response: str) -> dict:
    """Sentences, parsed sentences and the words the content checks look at."""
    words = response.split()
    sentences = split_sentences(response)
    parsed = [s.split() for s in sentences if parses(s)]
    pwords = [w for s in parsed for w in s]
    bigrams = [(a, b) for s in parsed for a, b in zip(s, s[1:])]
    moods = [{MOOD_OF[w] for w in s if w in MOOD_OF} for s in parsed]  # moods each parsed sentence expresses
    return {"words": words, "sentences": sentences, "parsed": parsed, "pwords": pwords,
            "bigrams": bigrams, "moods": moods}


class StoryTask(Task):
    name = "story"
    parse_prompt = staticmethod(parse_prompt)
    max_response_words = 90
    eval_percent = 10  # ~4,600 eval prompts

    def _prompt_space(self) -> list[str]:
        return [f"{v} a {m} story about {n} and a {c} {o} ."
                for v in PROMPT_VERBS for m in MOODS for n in NAMES for c in COLOURS for o in OBJECTS]

    def reference(self, prompt: str) -> str:
        """Five sentences: every attribute, the colour before the object, two distinct feeling words."""
        mood, name, colour, obj = parse_prompt(prompt)
        rng = random.Random(prompt)
        return " ".join(_story(rng, name, obj, colour, rng.sample(FEELINGS[mood], 2), 5))

    def demonstration(self, prompt: str, rng: random.Random) -> str:
        """Mediocre on purpose: each attribute is often wrong or missing, the length sometimes leaves
        the window, a sentence is sometimes repeated or broken. Most sentences parse."""
        mood, name, colour, obj = parse_prompt(prompt)
        if rng.random() < 0.15:
            name = rng.choice([x for x in NAMES if x != name])
        if rng.random() < 0.15:
            obj = rng.choice([x for x in OBJECTS if x != obj])
        u = rng.random()
        if u < 0.2:
            colour = None
        elif u < 0.35:
            colour = rng.choice([x for x in COLOURS if x != colour])
        other = rng.choice([m for m in MOODS if m != mood])
        u = rng.random()
        if u < 0.40:
            feels = [rng.choice(FEELINGS[mood]) for _ in range(2)]
        elif u < 0.55:
            feels = [rng.choice(FEELINGS[mood])]
        elif u < 0.75:
            feels = []
        elif u < 0.90:
            feels = [rng.choice(FEELINGS[other]) for _ in range(rng.choice((1, 2)))]
        else:
            feels = [rng.choice(FEELINGS[mood]), rng.choice(FEELINGS[other])]
            rng.shuffle(feels)
        u = rng.random()
        n_sent = 2 if u < 0.06 else rng.choice((7, 8)) if u < 0.20 else rng.randint(MIN_SENTENCES, MAX_SENTENCES)
        out = _story(rng, name, obj, colour, feels, n_sent)
        if len(out) > 1 and rng.random() < 0.20:       # one sentence repeated
            i, j = rng.sample(range(len(out)), 2)
            out[j] = out[i]
        if rng.random() < 0.15:                          # one sentence broken (a word dropped)
            i = rng.randrange(len(out))
            ws = out[i].split()
            del ws[rng.randrange(len(ws) - 1)]
            out[i] = " ".join(ws)
        return " ".join(out)

    def gold_components(self, prompt: str, response: str) -> dict[str, float]:
        mood, name, colour, obj = parse_prompt(prompt)
        a = _analyse(response)
        n = len(a["sentences"])
        n_match = sum(mood in ms for ms in a["moods"])
        n_other = sum(bool(ms - {mood}) for ms in a["moods"])
        obj_colours = {c for c, o in a["bigrams"] if o == obj and c in COLOURS}
        if n < MIN_SENTENCES:
            length = n / MIN_SENTENCES
        else:
            length = max(0.0, 1.0 - max(0, n - MAX_SENTENCES) / 4)
        return {
            "terminated": 1.0 if a["words"] and a["words"][-1] == "." else 0.0,
            "parse": len(a["parsed"]) / n if n else 0.0,
            "distinct": len(set(a["sentences"])) / n if n else 0.0,
            "length": length,
            "name": 1.0 if name in a["pwords"] else 0.0,
            "object": 1.0 if obj in a["pwords"] else 0.0,
            "colour": 1.0 if obj_colours == {colour} else 0.0,
            "mood": min(1.0, max(0.0, (n_match - 2 * n_other) / 2)),
        }

    def _combine(self, c: dict[str, float]) -> float:
        content = sum(w * c[k] for k, w in CONTENT_WEIGHTS.items())
        return c["terminated"] * c["parse"] * c["distinct"] * c["length"] * (0.1 + 0.9 * content)

    families = OBJECTS

    def family(self, prompt: str) -> str:
        """The requested object: the prompts about one object share a family (and, with noisy_share, an annotator)."""
        return parse_prompt(prompt)[3]

    def key(self, prompt: str, response: str) -> str:
        """"name=<n> object=<o> colour=<c> mood=<m>" as the parsed sentences express them: the most
        frequent name and object (ties: first seen), the colour before that object, the one mood
        expressed ("mixed" when several); "none" where absent. The prompt is not used."""
        a = _analyse(response)
        top = lambda ws: Counter(ws).most_common(1)[0][0] if ws else "none"  # noqa: E731  (ties: first seen)
        name = top([w for w in a["pwords"] if w in NAMES])
        obj = top([w for w in a["pwords"] if w in OBJECTS])
        colour = top([c for c, o in a["bigrams"] if o == obj and c in COLOURS])
        moods = set().union(*a["moods"])
        mood = moods.pop() if len(moods) == 1 else "mixed" if moods else "none"
        return f"name={name} object={obj} colour={colour} mood={mood}"
