"""generate with and without dropping finished rows (rlhf.model.generate's compact), interleaved, on a trained policy:
seconds for sampling held-out prompts as evaluate.py does (temperature 0.7, 64 prompts a call), and whether the texts
are the same.

    python3 experiments/compaction_ab.py --policy runs/reproduce/s0/sft/ckpt --prompts runs/reproduce/s0/data/prompts_eval.jsonl

Prints each arm's seconds per repeat, the ratio of the medians and whether every repeat gave the same texts.
"""
from __future__ import annotations

import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rlhf.config import answer_help, arg, parse_args  # noqa: E402


@dataclass
class Args:
    policy: str = arg("runs/reproduce/s0/sft/ckpt", "policy checkpoint", reads=True)
    prompts: str = arg("runs/reproduce/s0/data/prompts_eval.jsonl", "prompts JSONL", reads=True)
    n: int = arg(384, "prompts sampled per arm and repeat", ge=1, le=10**6)
    repeats: int = arg(3, "interleaved repeats of both arms", ge=1, le=1000)
    max_new_tokens: int = arg(96, "longest response", ge=1, le=65536)
    threads: int = arg(1, "torch CPU threads", ge=1, le=4096)


answer_help(__name__, Args, description=__doc__.split("\n")[0])

import torch  # noqa: E402

from rlhf import model as model_module, sampling  # noqa: E402
from rlhf.checkpoint import load_model  # noqa: E402
from rlhf.data import read_jsonl  # noqa: E402
from rlhf.run import run_cli  # noqa: E402


def main(argv=None):
    a = parse_args(Args, argv, description=__doc__.split("\n")[0])
    torch.set_num_threads(a.threads)
    policy, tok, _ = load_model(a.policy, "policy")
    policy.eval()
    prompts = [r["prompt"] for r in read_jsonl(a.prompts, "prompts")][:a.n]
    times, same = {False: [], True: []}, True
    real = model_module.generate
    try:
        for rep in range(a.repeats):
            texts = {}
            for compact in (False, True):
                sampling.generate = lambda *x, compact=compact, **k: real(*x, compact=compact, **k)
                t = time.perf_counter()
                texts[compact] = sampling.sample(policy, tok, prompts, a.max_new_tokens, temperature=0.7, batch_size=64,
                                                 generator=torch.Generator().manual_seed(rep)).texts
                times[compact].append(time.perf_counter() - t)
            same &= texts[False] == texts[True]
    finally:
        sampling.generate = real
    print(f"{len(prompts)} prompts, {a.threads} thread(s): compact=False {[round(x, 2) for x in times[False]]} s, "
          f"compact=True {[round(x, 2) for x in times[True]]} s; ratio of medians "
          f"{statistics.median(times[False]) / statistics.median(times[True]):.2f}x; same texts: {same}")


if __name__ == "__main__":
    run_cli(main)
