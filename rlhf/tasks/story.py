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

from . import Task, is_eval_prompt

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
# noisy_kind "misread": the mood a noisy mood's annotator reads in its place (a fixed pairing, each mood's opposite)
MISREAD = {"happy": "sad", "sad": "happy", "scary": "calm", "calm": "scary"}
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
# Prompt forms by the number of requested attributes (the name always; then the mood, the object, its colour).
# The default world asks for all four; prepare_data.py --attributes 1-4 mixes the four forms (StoryTask.prompts).
_PROMPT_RES = {4: re.compile(r"^(\w+) a (?P<mood>\w+) story about (?P<name>\w+) and a (?P<colour>\w+) (?P<object>\w+) \.$"),
               3: re.compile(r"^(\w+) a (?P<mood>\w+) story about (?P<name>\w+) and a (?P<object>\w+) \.$"),
               2: re.compile(r"^(\w+) a (?P<mood>\w+) story about (?P<name>\w+) \.$"),
               1: re.compile(r"^(\w+) a story about (?P<name>\w+) \.$")}
ATTRIBUTES = ("4", "1-4")  # the prompt forms a world draws from


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
def parse_prompt(prompt: str) -> tuple[str | None, str, str | None, str | None]:
    """(mood, name, colour, object) of a story prompt, None for an attribute it does not request (the forms of
    _PROMPT_RES: "write a happy story about mia and a red kite ." requests all four, "tell a story about mia ." the
    name only); ValueError when it is not one."""
    text = prompt.strip()
    for m in (r.match(text) for r in _PROMPT_RES.values()):
        if m is None:
            continue
        d = m.groupdict()
        if (m.group(1) in PROMPT_VERBS and d["name"] in NAMES and d.get("mood", "happy") in FEELINGS
                and d.get("colour", "red") in COLOURS and d.get("object", "kite") in OBJECTS):
            return d.get("mood"), d["name"], d.get("colour"), d.get("object")
    raise ValueError(f"not a story prompt (expected e.g. 'write a happy story about mia and a red kite .'): {prompt!r}")


def n_attributes(prompt: str) -> int:
    """How many attributes a story prompt requests: 1 (the name) to 4 (name, mood, object, colour)."""
    return sum(x is not None for x in parse_prompt(prompt))


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

    def __init__(self, seed: int = 0, attributes: str = "4", **annotator):
        """attributes: "4" (every prompt requests name, mood, coloured object: the default world) or "1-4" (prompts
        request 1, 2, 3 or 4 attributes, a quarter each where the pools allow: varied difficulty; prompts())."""
        if attributes not in ATTRIBUTES:
            raise ValueError(f"story attributes must be one of: {', '.join(ATTRIBUTES)} (got {attributes!r})")
        self.attributes = attributes
        super().__init__(seed, **annotator)
        # the prompt families: the requested object, or under noisy_kind "misread" the requested mood ("-": none requested)
        self.families = ((MOODS if self.annotator["noisy_kind"] == "misread" else OBJECTS)
                         + (() if attributes == "4" else ("-",)))

    def _prompt_space(self, count: int = 4) -> list[str]:
        forms = {4: [f"{v} a {m} story about {n} and a {c} {o} ." for v in PROMPT_VERBS for m in MOODS for n in NAMES
                     for c in COLOURS for o in OBJECTS],
                 3: [f"{v} a {m} story about {n} and a {o} ." for v in PROMPT_VERBS for m in MOODS for n in NAMES for o in OBJECTS],
                 2: [f"{v} a {m} story about {n} ." for v in PROMPT_VERBS for m in MOODS for n in NAMES],
                 1: [f"{v} a story about {n} ." for v in PROMPT_VERBS for n in NAMES]}
        return forms[count]

    def prompts(self, split: str, n: int) -> list[str]:
        """attributes "4": the base class's draw. "1-4": each prompt's form (1 to 4 attributes) drawn uniformly, then a
        prompt of that form (without replacement within a pass, as the base class draws). "eval" stays distinct, so its
        n is split evenly over the forms as far as each form's eval pool allows (4 name-only and 27 two-attribute
        eval prompts exist) and the rest goes to the larger forms: 400 eval prompts are 4, 27, 184 and 185."""
        if self.attributes == "4":
            return super().prompts(split, n)
        super().prompts(split, 1)  # the base class's checks of split and n
        if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
            raise ValueError(f"n must be a positive int, got {n!r}")
        pools = {c: self._pools_of(c)[split == "eval"] for c in (1, 2, 3, 4)}
        rng = random.Random(f"{self.name}:{self.seed}:{split}:attributes-1-4")
        if split == "eval":
            if n > sum(len(p) for p in pools.values()):
                raise ValueError(f"asked for {n} eval prompts but the story eval pools hold only {sum(len(p) for p in pools.values())}")
            quota, left = {}, n
            for i, c in enumerate(sorted(pools, key=lambda c: len(pools[c]))):  # smallest pool first; the rest moves up
                quota[c] = min(len(pools[c]), left // (4 - i))
                left -= quota[c]
            out = [p for c in (1, 2, 3, 4) for p in rng.sample(pools[c], quota[c])]
            rng.shuffle(out)
            return out
        counts = [rng.randint(1, 4) for _ in range(n)]
        drawn = {}
        for c in (1, 2, 3, 4):
            k, got = counts.count(c), []
            while len(got) < k:
                got += rng.sample(pools[c], min(k - len(got), len(pools[c])))
            drawn[c] = iter(got)
        return [next(drawn[c]) for c in counts]

    def _pools_of(self, count: int) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """(train pool, eval pool) of one prompt form, by the same md5 split as the base class's pools."""
        key = (type(self), count)
        if key not in Task._pool_cache:
            train, ev = [], []
            for p in self._prompt_space(count):
                (ev if is_eval_prompt(p, self.eval_percent) else train).append(p)
            Task._pool_cache[key] = (tuple(train), tuple(ev))
        return Task._pool_cache[key]

    def difficulty(self, prompt: str) -> int | None:
        """--attributes 1-4: how many attributes the prompt requests (n_attributes); None in the default world."""
        return None if self.attributes == "4" else n_attributes(prompt)

    def world_settings(self) -> dict:
        """What besides the seed and the annotator builds this world, for meta.json ({} for the default world)."""
        return {} if self.attributes == "4" else {"attributes": self.attributes}

    def reference(self, prompt: str) -> str:
        """Five sentences: every attribute, the colour before the object, two distinct feeling words (an attribute the
        prompt does not request is drawn once per prompt, so the reference stays a fixed answer)."""
        mood, name, colour, obj = parse_prompt(prompt)
        rng = random.Random(prompt)
        mood = mood or rng.choice(MOODS)
        obj = obj or rng.choice(OBJECTS)
        return " ".join(_story(rng, name, obj, colour, rng.sample(FEELINGS[mood], 2), 5))

    def demonstration(self, prompt: str, rng: random.Random) -> str:
        """Mediocre on purpose: each attribute is often wrong or missing, the length sometimes leaves
        the window, a sentence is sometimes repeated or broken. Most sentences parse."""
        mood, name, colour, obj = parse_prompt(prompt)
        if mood is None:  # not requested: any mood, any object (drawn only for such prompts, so the default world's
            mood = rng.choice(MOODS)  # demonstrations draw exactly what they drew before)
        if obj is None:
            obj = rng.choice(OBJECTS)
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
        out = {
            "terminated": 1.0 if a["words"] and a["words"][-1] == "." else 0.0,
            "parse": len(a["parsed"]) / n if n else 0.0,
            "distinct": len(set(a["sentences"])) / n if n else 0.0,
            "length": length,
            "name": 1.0 if name in a["pwords"] else 0.0,
            "object": 1.0 if obj in a["pwords"] else 0.0,
            "colour": 1.0 if obj_colours == {colour} else 0.0,
            "mood": min(1.0, max(0.0, (n_match - 2 * n_other) / 2)),
        }
        # an attribute the prompt does not request has no component (content then averages the requested ones)
        return {k: v for k, v in out.items() if not (k == "mood" and mood is None or k == "object" and obj is None
                                                      or k == "colour" and colour is None)}

    def _combine(self, c: dict[str, float]) -> float:
        """content = sum_k w_k c_k over the requested attributes / sum_k w_k over them (the weights sum to 1 when all
        four are requested, and then the division is skipped, so the default world's gold is what it was)."""
        present = [k for k in CONTENT_WEIGHTS if k in c]
        content = sum(CONTENT_WEIGHTS[k] * c[k] for k in present)
        if len(present) < len(CONTENT_WEIGHTS):
            content /= sum(CONTENT_WEIGHTS[k] for k in present)
        return c["terminated"] * c["parse"] * c["distinct"] * c["length"] * (0.1 + 0.9 * content)

    def family(self, prompt: str) -> str:
        """The requested object ("-" when none is requested): the prompts about one object share a family (and, with
        noisy_share, an annotator). Under noisy_kind "misread", the requested mood instead."""
        mood, _, _, obj = parse_prompt(prompt)
        return (mood if self.annotator["noisy_kind"] == "misread" else obj) or "-"

    def misread(self, prompt: str) -> str:
        """The prompt with its requested mood replaced by MISREAD's partner: what the noisy annotator of noisy_kind
        "misread" judges against. "write a scary story about mia and a red kite ." -> "write a calm story about ..."."""
        mood = parse_prompt(prompt)[0]
        if mood is None:
            return prompt
        words = prompt.split(" ")
        words[words.index(mood)] = MISREAD[mood]  # the mood is the prompt's third word; no name or object is a mood word
        return " ".join(words)

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
