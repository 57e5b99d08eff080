"""algo: the smoke task. Tiny models learn it in seconds, so a broken pipeline shows at once.

Prompt:   "<op> : <letters> ."      op in copy | reverse | sort | rotate, 3-5 letters from a-h
Response: "<answer letters> ."      e.g. "reverse : c a d b ."  ->  "b d a c ."

    copy     the letters unchanged
    reverse  the letters in reverse order
    sort     the letters in alphabetical order
    rotate   the first letter moved to the end ("c a d b" -> "a d b c")

Prompt space: 4 ops x (8^3 + 8^4 + 8^5) = 149,504 prompts; 10% (about 15k) reserved for eval by md5.

Gold (graded exact scoring; 1.0 only for the exact answer, 0 for empty or garbage):
    answer     = the words before the first " ." (all words when there is none)
    accuracy   = #{i : answer[i] == target[i]} / len(target)     positions right, in place
    length     = len(target) / max(len(answer), len(target))      1 unless the answer is too long
    terminated = 1 if the response is exactly answer + " ." else 0
    gold       = accuracy * length * (0.5 + 0.5 * terminated)
so gold = (#right / max(len(answer), len(target))) halved when the answer does not end cleanly.
Key: the extracted answer, words joined by single spaces.
"""
from __future__ import annotations

import itertools
import random
import re

from . import Task

LETTERS = "abcdefgh"
OPS = ("copy", "reverse", "sort", "rotate")
MIN_LEN, MAX_LEN = 3, 5
_PROMPT_RE = re.compile(r"^(copy|reverse|sort|rotate) : ([a-z](?: [a-z])*) \.$")


def apply_op(op: str, letters: list[str]) -> list[str]:
    """The answer to `op` on `letters`."""
    if op == "copy":
        return list(letters)
    if op == "reverse":
        return letters[::-1]
    if op == "sort":
        return sorted(letters)
    if op == "rotate":
        return letters[1:] + letters[:1]
    raise ValueError(f"unknown op {op!r}; choose one of: {', '.join(OPS)}")


def parse_prompt(prompt: str) -> tuple[str, list[str]]:
    """(op, letters) of an algo prompt; ValueError when it is not one."""
    m = _PROMPT_RE.match(prompt.strip())
    if m is None:
        raise ValueError(f"not an algo prompt (expected e.g. 'reverse : c a d b .'): {prompt!r}")
    return m.group(1), m.group(2).split()


def extract_answer(response: str) -> tuple[list[str], bool]:
    """(answer words before the first '.', whether the response is exactly answer + ' .')."""
    words = response.split()
    if "." in words:
        i = words.index(".")
        return words[:i], i == len(words) - 1
    return words, False


class AlgoTask(Task):
    name = "algo"
    parse_prompt = staticmethod(parse_prompt)
    max_response_words = 16
    eval_percent = 10

    def _prompt_space(self) -> list[str]:
        return [f"{op} : {' '.join(s)} ."
                for op in OPS
                for k in range(MIN_LEN, MAX_LEN + 1)
                for s in itertools.product(LETTERS, repeat=k)]

    def target(self, prompt: str) -> list[str]:
        op, letters = parse_prompt(prompt)
        return apply_op(op, letters)

    def reference(self, prompt: str) -> str:
        return " ".join(self.target(prompt)) + " ."

    def demonstration(self, prompt: str, rng: random.Random) -> str:
        """Mediocre on purpose: exact 25% of the time, else one or two letters wrong, the answer of
        another op, or one letter dropped / doubled."""
        op, letters = parse_prompt(prompt)
        ans = apply_op(op, letters)
        u = rng.random()
        if u < 0.25:
            pass
        elif u < 0.60:                                   # one position wrong
            ans = _substitute(ans, 1, rng)
        elif u < 0.78:                                   # two positions wrong
            ans = _substitute(ans, 2, rng)
        elif u < 0.90:                                   # confuses the op
            ans = apply_op(rng.choice([o for o in OPS if o != op]), letters)
        else:                                            # wrong length
            i = rng.randrange(len(ans))
            ans = ans[:i] + ans[i + 1:] if rng.random() < 0.5 else ans[:i] + [ans[i]] + ans[i:]
        return " ".join(ans) + " ."

    def gold_components(self, prompt: str, response: str) -> dict[str, float]:
        target = self.target(prompt)
        answer, clean = extract_answer(response)
        right = sum(a == t for a, t in zip(answer, target))
        return {
            "accuracy": right / len(target),
            "length": len(target) / max(len(answer), len(target)),
            "terminated": 1.0 if clean else 0.0,
        }

    def _combine(self, c: dict[str, float]) -> float:
        return c["accuracy"] * c["length"] * (0.5 + 0.5 * c["terminated"])

    families = OPS

    def family(self, prompt: str) -> str:
        """The operation asked for."""
        return parse_prompt(prompt)[0]

    def key(self, prompt: str, response: str) -> str:
        return " ".join(extract_answer(response)[0])


def _substitute(ans: list[str], k: int, rng: random.Random) -> list[str]:
    out = list(ans)
    for i in rng.sample(range(len(out)), min(k, len(out))):
        out[i] = rng.choice([c for c in LETTERS if c != out[i]])
    return out
