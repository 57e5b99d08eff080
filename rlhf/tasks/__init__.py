"""Built-in tasks: prompts, SFT demonstrations, a programmatic gold judge, a simulated annotator.

Nothing is downloaded: every task is generated in code, deterministically from a seed. Two tasks:

    story  (the default)  a small story world with a known grammar; rlhf/tasks/story.py
    algo   (the smoke test) reverse / sort / copy / rotate a few letters; rlhf/tasks/algo.py

The contract every task keeps (scripts and tests call these names):

    task = get_task(name, seed=0, tau=..., flip_rate=..., length_bias=..., noisy_share=..., attributes=...)
    task.prompts(split, n)                 -> list[str]   split in sft | rl | unlabelled | eval
    task.demonstration(prompt, rng)        -> str         mediocre on purpose (headroom for RLHF)
    task.reference(prompt)                 -> str         a best-achievable answer, gold 1.0
    task.gold(prompt, response)            -> float       in [0, 1], pure, never raises on a string;
                                                          NaN for a prompt outside the task's grammar
    task.knows(prompt)                     -> bool        whether the prompt is in the task's grammar
    task.gold_components(prompt, response) -> dict        the named parts gold is built from
    task.annotate(prompt, a, b, rng)       -> int         0 if a preferred, 1 if b (ValueError for an unknown prompt)
    task.annotator_settings()              -> dict        recorded in the data's metadata
    task.key(prompt, response)             -> str         equivalence key for RLP-SPG clustering
    task.max_response_words                -> int

Splits: the prompt space of each task is partitioned by a stable hash (md5) of the prompt string, so
"eval" prompts never appear in sft / rl / unlabelled for any seed. Text is a word-level world:
lowercase words separated by single spaces, punctuation as separate tokens (" ." ends a sentence).
"""
from __future__ import annotations

import hashlib
import math
import random
from typing import Callable

SPLITS = ("sft", "rl", "unlabelled", "eval")
TASKS = ("algo", "story")
ANNOTATOR_DEFAULTS = {"tau": 0.1, "flip_rate": 0.1, "length_bias": 0.25}
# prompt-dependent annotator noise (off by default): a share of the task's prompt families, the same for every seed,
# whose annotator is noisy (Task.noisy) in one of two ways, noisy_kind:
#   "flip"     the families are the requested objects (story) or operations (algo); labels flip at noisy_flip_rate
#              instead of flip_rate there
#   "misread"  (story) the families are the requested moods; on a noisy mood's prompts the annotator judges every
#              response as if the prompt had asked for the partner mood (MISREAD in story.py: happy <-> sad,
#              scary <-> calm), a consistent error an RM learns as confidently as the right mood (docs/tasks.md)
NOISY_DEFAULTS = {"noisy_share": 0.0, "noisy_flip_rate": 0.45, "noisy_kind": "flip"}
NOISY_KINDS = ("flip", "misread")


def len_words(text: str) -> int:
    """Number of whitespace-separated words (punctuation tokens count as words)."""
    return len(text.split())


def is_eval_prompt(prompt: str, eval_percent: int) -> bool:
    """True when the prompt falls in the eval share of the prompt space.

    Stable across processes and machines (md5, never Python's salted hash()); independent of the seed,
    so no seed ever trains on another seed's eval prompts.
    """
    h = int.from_bytes(hashlib.md5(prompt.encode("utf-8")).digest()[:4], "big")
    return h % 100 < eval_percent


def preference_probability(gold_a: float, gold_b: float, len_a: int, len_b: int,
                           tau: float, length_bias: float) -> float:
    """P(a > b) before label flips.

    P(a > b) = sigmoid((gold(a) - gold(b)) / tau + length_bias * (len_words(a) - len_words(b)) / 10)

    A Bradley-Terry annotator whose utility is gold / tau, plus a documented bias for longer answers
    (length_bias per 10 words). The logit is clamped to [-50, 50] so exp never overflows.
    """
    z = (gold_a - gold_b) / tau + length_bias * (len_a - len_b) / 10.0
    z = max(-50.0, min(50.0, z))
    return 1.0 / (1.0 + math.exp(-z))


def _check_annotator(settings: dict) -> dict:
    out = dict(ANNOTATOR_DEFAULTS) | NOISY_DEFAULTS
    for key, value in settings.items():
        if key not in out:
            raise ValueError(f"unknown annotator setting {key!r}; allowed: {', '.join(sorted(out))}")
        if key == "noisy_kind":
            if value not in NOISY_KINDS:
                raise ValueError(f"noisy_kind must be one of: {', '.join(NOISY_KINDS)} (got {value!r})")
            out[key] = value
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"annotator setting {key} must be a finite number, got {value!r}")
        out[key] = float(value)
    if not out["tau"] > 0:
        raise ValueError(f"tau must be > 0 (the annotator's noise temperature), got {out['tau']!r}")
    if not 0.0 <= out["flip_rate"] <= 0.5:
        raise ValueError(f"flip_rate must be in [0, 0.5] (probability a label is flipped), got {out['flip_rate']!r}")
    if not 0.0 <= out["noisy_share"] <= 1.0:
        raise ValueError(f"noisy_share must be in [0, 1] (share of prompt families with a noisy annotator), got {out['noisy_share']!r}")
    if not 0.0 <= out["noisy_flip_rate"] <= 1.0:
        raise ValueError(f"noisy_flip_rate must be in [0, 1] (above 0.5 the noisy families' labels are mostly inverted), "
                         f"got {out['noisy_flip_rate']!r}")
    return out


def noisy_families(families: tuple[str, ...], share: float) -> frozenset[str]:
    """The round(share * len(families)) families with the smallest md5 of "noisy:<family>": exactly that share, the same
    for every seed and machine, nested (a larger share keeps the smaller share's families)."""
    order = sorted(families, key=lambda f: hashlib.md5(f"noisy:{f}".encode("utf-8")).digest())
    return frozenset(order[:round(share * len(families))])


class Task:
    """Base class: splits, the simulated annotator, gold from its components. Subclasses supply the world.

    Subclasses set `name`, `max_response_words`, `eval_percent` and implement `_prompt_space()` (every
    prompt of the task, in a fixed order), `demonstration`, `reference`, `gold_components`,
    `_combine` (gold from its components) and `key`.

    Annotator defaults (tau 0.1, flip_rate 0.1, length_bias 0.25): a gold gap of 0.1 gives the better
    answer 73% before flips, a gap of 0.3 gives 95%; 10% of labels are flipped at random; ten extra words
    add 0.25 to the logit (a 40-word gap alone gives 73%), a bias an RM can pick up but which explains
    well under 60% of labels on demonstration pairs. A prototype with length_bias 1.0 produced an RM that
    learned length and little else (docs/reward_model.md), hence the smaller default.
    """

    name = "task"
    max_response_words = 90
    eval_percent = 10
    _pool_cache: dict = {}

    def __init__(self, seed: int = 0, **annotator):
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"seed must be an int, got {seed!r}")
        self.seed = seed
        self.annotator = _check_annotator(annotator)

    # prompts ------------------------------------------------------------------------------------
    def _prompt_space(self) -> list[str]:
        raise NotImplementedError

    def _pools(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """(train pool, eval pool), computed once per task class and process."""
        cls = type(self)
        if cls not in Task._pool_cache:
            train, ev = [], []
            for p in self._prompt_space():
                (ev if is_eval_prompt(p, self.eval_percent) else train).append(p)
            Task._pool_cache[cls] = (tuple(train), tuple(ev))
        return Task._pool_cache[cls]

    def prompts(self, split: str, n: int) -> list[str]:
        """n prompts of a split, deterministic in (task, seed, split, n).

        Non-eval splits draw without replacement from the non-eval pool and start another pass (so
        repeat prompts) only when n exceeds it; they are drawn independently, so sft, rl and unlabelled
        may overlap. "eval" returns n distinct prompts from the eval pool, disjoint from the rest.
        """
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; choose one of: {', '.join(SPLITS)}")
        if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
            raise ValueError(f"n must be a positive int, got {n!r}")
        train, ev = self._pools()
        pool = ev if split == "eval" else train
        if split == "eval" and n > len(pool):
            raise ValueError(f"asked for {n} eval prompts but the {self.name} eval pool holds only {len(pool)}")
        rng = random.Random(f"{self.name}:{self.seed}:{split}")  # str seeds hash with sha512: stable
        out: list[str] = []
        while len(out) < n:
            out += rng.sample(pool, min(n - len(out), len(pool)))
        return out

    # the world (subclasses) -----------------------------------------------------------------------
    def demonstration(self, prompt: str, rng: random.Random) -> str:
        raise NotImplementedError

    def reference(self, prompt: str) -> str:
        raise NotImplementedError

    def gold_components(self, prompt: str, response: str) -> dict[str, float]:
        raise NotImplementedError

    def _combine(self, c: dict[str, float]) -> float:
        raise NotImplementedError

    def key(self, prompt: str, response: str) -> str:
        raise NotImplementedError

    families: tuple[str, ...] = ()  # the task's prompt families (story: the requested object, or mood under misread;
    # algo: the operation)

    def family(self, prompt: str) -> str:
        """The family a prompt of this task belongs to (one of `families`)."""
        raise NotImplementedError

    def noisy(self, prompt: str) -> bool:
        """Whether the annotator is noisy on this prompt: its family is one of the noisy_share of families
        (noisy_families); always False with noisy_share 0, the default."""
        return bool(self.annotator["noisy_share"]) and self.noisy_family(self.family(prompt))

    def noisy_family(self, family: str) -> bool:
        if not hasattr(self, "_noisy"):
            self._noisy = noisy_families(self.families, self.annotator["noisy_share"])
        return family in self._noisy

    def misread(self, prompt: str) -> str:
        """noisy_kind "misread": the prompt as the noisy annotator reads it (story: the partner mood). Tasks without a
        misreading refuse noisy_kind "misread" when built (get_task)."""
        raise NotImplementedError

    @staticmethod
    def parse_prompt(prompt: str):
        raise NotImplementedError

    def knows(self, prompt: str) -> bool:
        """True when `prompt` is in this task's grammar: only such a prompt has a gold judgement."""
        try:
            self.parse_prompt(prompt)
        except ValueError:
            return False
        return True

    def gold(self, prompt: str, response: str) -> float:
        """The gold judge: the task's formula over `gold_components`, clipped to [0, 1]. Never raises on a
        string: a prompt outside the task's grammar (a user's own data) has no gold judgement and gets NaN,
        which every gold figure leaves out (known_rows; rlhf.evaluation, rlhf.reward.rm_diagnostics)."""
        if not self.knows(prompt):
            return float("nan")
        return min(1.0, max(0.0, self._combine(self.gold_components(prompt, response))))

    # the simulated annotator --------------------------------------------------------------------
    def annotate(self, prompt: str, a: str, b: str, rng: random.Random) -> int:
        """0 if a is preferred, 1 if b. Draws exactly two numbers from rng per call.

        P(a > b) = sigmoid((gold(a) - gold(b)) / tau + length_bias * (len_words(a) - len_words(b)) / 10),
        then the label is flipped with probability flip_rate. On a prompt of a noisy family (self.noisy(prompt)):
        noisy_kind "flip" flips at noisy_flip_rate instead (above 0.5 the labels there are mostly inverted);
        noisy_kind "misread" takes gold against self.misread(prompt) in place of the prompt (the same tau, flip
        rate and length bias), so the labels there are consistent, and consistently wrong where the two readings differ.
        """
        if not self.knows(prompt):
            raise ValueError(f"the {self.name} task's annotator cannot label a pair for a prompt outside its grammar: "
                             f"{prompt[:80]!r}")
        s = self.annotator
        noisy = self.noisy(prompt)
        misread = noisy and s["noisy_kind"] == "misread"
        judged = self.misread(prompt) if misread else prompt
        p = preference_probability(self.gold(judged, a), self.gold(judged, b), len_words(a), len_words(b),
                                   s["tau"], s["length_bias"])
        a_wins = rng.random() < p
        if rng.random() < (s["noisy_flip_rate"] if noisy and not misread else s["flip_rate"]):
            a_wins = not a_wins
        return 0 if a_wins else 1

    def difficulty(self, prompt: str) -> int | None:
        """A prompt's difficulty level where the world varies it (story --attributes 1-4: the attributes requested),
        else None; the RM diagnostics and the evaluations then report per level."""
        return None

    def world_settings(self) -> dict:
        """What besides the seed and the annotator builds this task's world, for meta.json ({}: the default world)."""
        return {}

    def annotator_settings(self) -> dict:
        """The annotator's settings, for the data's meta.json (the noisy-family ones only when noisy_share > 0, so a
        default data directory's meta.json reads as before)."""
        keep = ANNOTATOR_DEFAULTS.keys() | (NOISY_DEFAULTS.keys() if self.annotator["noisy_share"] else set())
        # the setting a noisy_kind leaves unused is left out: "flip" data's meta.json reads as before
        keep = keep - ({"noisy_kind"} if self.annotator["noisy_kind"] == "flip" else {"noisy_flip_rate"})
        return {k: v for k, v in self.annotator.items() if k in keep}


def known_rows(task: Task, prompts: list[str], where: Callable[[int], str]) -> list[int]:
    """Indices of the prompts in the task's grammar (the only ones with a gold judgement). When some are not, one
    warning says how many and names the first (`where(i)` gives a place, e.g. "file:line", for prompt i)."""
    known = [i for i, p in enumerate(prompts) if task.knows(p)]
    if len(known) < len(prompts):
        first = next(i for i in range(len(prompts)) if not task.knows(prompts[i]))
        print(f"warning: {len(prompts) - len(known)} of {len(prompts)} prompts are outside the {task.name} task's grammar "
              f"(first: {where(first)}: {prompts[first][:60]!r}); the gold judge leaves them out")
    return known


def get_task(name: str, seed: int = 0, attributes: str = "4", **annotator) -> Task:
    """The built-in task `name` ("story" or "algo"); annotator settings: tau, flip_rate, length_bias, noisy_share,
    noisy_flip_rate, noisy_kind; attributes (story only): "4" or "1-4", the prompt forms its world draws from (StoryTask)."""
    if annotator.get("noisy_kind", "flip") != "flip" and name != "story":
        raise ValueError(f"noisy_kind {annotator['noisy_kind']!r}: only the story task has a requested mood to misread")
    if name == "story":
        from .story import StoryTask
        return StoryTask(seed, attributes=attributes, **annotator)
    if name == "algo":
        if attributes != "4":
            raise ValueError(f"attributes {attributes!r}: only the story task has prompts of varied attributes")
        from .algo import AlgoTask
        return AlgoTask(seed, **annotator)
    raise ValueError(f"unknown task {name!r}; choose one of: {', '.join(TASKS)}")


def task_from_meta(meta: dict | None) -> Task | None:
    """The task a data directory's meta.json names, with the annotator settings it was labelled with (so that
    labels drawn later, e.g. train_rm.py --sft-pairs, follow the same annotator); None without a meta.json."""
    if not meta:
        return None
    return get_task(meta["task"], seed=meta["seed"], **meta.get("world", {}), **meta.get("annotator", {}))
