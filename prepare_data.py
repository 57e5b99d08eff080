"""Write a built-in task's data as JSONL: SFT demonstrations, labelled preference pairs, prompts.

Usage:
    python prepare_data.py --task story --out data/story
    python prepare_data.py --task algo --out data/algo --n-sft 4000 --n-pairs 2000

Writes into --out:
    sft.jsonl                 {prompt, response}            demonstrations (mediocre on purpose)
    preferences.jsonl         {prompt, chosen, rejected}    two demonstrations per prompt, labelled by
                                                            the task's simulated annotator
    prompts_rl.jsonl          {prompt, id}                  prompts for PPO
    prompts_unlabelled.jsonl  {prompt, id}                  prompts for RLP's policy samples
    prompts_eval.jsonl        {prompt, id}                  held out: disjoint from every prompt above
    meta.json                 task, seed, annotator settings, sizes, and label quality figures
Everything is generated in code from --seed; nothing is downloaded.
"""
from __future__ import annotations

import random
import sys
from dataclasses import dataclass
from pathlib import Path

from rlhf.config import answer_help, arg, config_to_dict, parse_args, print_config


@dataclass
class Args:
    task: str = arg("story", "built-in task", choices=["story", "algo"])
    out: str = arg("data/story", "output directory")
    seed: int = arg(0, "fixes every prompt, demonstration and label", ge=0, le=2**32 - 1)
    n_sft: int = arg(20000, "SFT demonstrations", ge=1, le=10**8)
    n_pairs: int = arg(10000, "labelled preference pairs", ge=1, le=10**8)
    n_rl: int = arg(2000, "RL prompts", ge=1, le=10**8)
    n_unlabelled: int = arg(1000, "unlabelled prompts (RLP policy samples)", ge=1, le=10**8)
    n_eval: int = arg(400, "held-out evaluation prompts", ge=1, le=10**7)
    tau: float | None = arg(None, "annotator noise temperature (task default when unset)", gt=0.0)
    flip_rate: float | None = arg(None, "annotator label-flip rate in [0, 0.5] (task default when unset)", ge=0.0, le=0.5)
    length_bias: float | None = arg(None, "annotator preference for length, logits per 10 words (task default when unset)")
    attributes: str = arg("4", "story: the attributes each prompt requests: all 4 (name, mood, coloured object), or 1 to 4, a "
                          "quarter each where the pools allow (varied difficulty)", choices=["4", "1-4"])
    noisy_share: float = arg(0.0, "prompt-dependent annotator noise: the share of prompt families, the same for every seed, "
                             "whose annotator is noisy as --noisy-kind says (0: off)", ge=0.0, le=1.0)
    noisy_kind: str = arg("flip", "flip: the families are the requested objects (story) or operations (algo), and their labels "
                          "flip at --noisy-flip-rate; misread (story): the families are the requested moods, and a noisy "
                          "mood's annotator judges every answer as if the partner mood had been asked for (happy <-> sad, "
                          "scary <-> calm)", choices=["flip", "misread"])
    noisy_flip_rate: float = arg(0.45, "--noisy-kind flip: the label-flip rate in the noisy families (above 0.5: mostly "
                                 "inverted)", ge=0.0, le=1.0)
    unlabelled_ratio: float | None = arg(None, "|U| = this x the labelled pairs (RLP's paper: 2, 20k prompts for 10k pairs); "
                                         "overrides --n-unlabelled (None: --n-unlabelled)", gt=0.0, le=1000.0)
    overwrite: bool = arg(False, "replace an existing data directory")

# `--help` answers here, from Args alone: the imports below load torch and take seconds
answer_help(__name__, Args, description=__doc__.split("\n")[0])

from rlhf import tasks
from rlhf.run import run_cli
from rlhf.data import write_json, write_jsonl


def label_pairs(task, prompts: list[str], rng: random.Random) -> tuple[list[dict], dict]:
    """Two different demonstrations per prompt, ordered by the simulated annotator."""
    rows, agree, decided = [], 0, 0
    for p in prompts:
        a = task.demonstration(p, rng)
        b = task.demonstration(p, rng)
        for _ in range(10):  # two equal answers make no pair
            if b != a:
                break
            b = task.demonstration(p, rng)
        if a == b:
            continue
        chosen, rejected = (a, b) if task.annotate(p, a, b, rng) == 0 else (b, a)
        rows.append({"prompt": p, "chosen": chosen, "rejected": rejected})
        gc, gr = task.gold(p, chosen), task.gold(p, rejected)
        if gc != gr:
            decided += 1
            agree += gc > gr
    stats = {"pairs": len(rows), "label_gold_agreement": agree / max(1, decided),
             "pairs_with_gold_tie": len(rows) - decided}
    if task.annotator["noisy_share"]:  # the same agreement, on the noisy families' pairs and on the others'
        for name, want in (("noisy", True), ("clean", False)):
            g = [(task.gold(r["prompt"], r["chosen"]), task.gold(r["prompt"], r["rejected"])) for r in rows
                 if task.noisy(r["prompt"]) == want]
            d = [a > b for a, b in g if a != b]
            stats[f"{name}_pairs"] = len(g)
            stats[f"{name}_label_gold_agreement"] = sum(d) / max(1, len(d))
    return rows, stats


def main(argv=None):
    args = parse_args(Args, argv, description=__doc__.split("\n")[0])
    print_config(args)
    out = Path(args.out)
    if out.exists() and any(out.iterdir()) and not args.overwrite:
        sys.exit(f"error: {out} already holds files; pass --overwrite to replace them")
    annotator = {k: getattr(args, k) for k in ("tau", "flip_rate", "length_bias") if getattr(args, k) is not None}
    if args.noisy_kind == "misread" and args.task != "story":
        sys.exit("error: --noisy-kind misread: only the story task has a requested mood to misread (use --task story)")
    if args.noisy_kind == "misread" and args.noisy_flip_rate != Args.noisy_flip_rate:
        sys.exit(f"error: --noisy-flip-rate {args.noisy_flip_rate} goes with --noisy-kind flip; a misreading annotator flips "
                 f"labels at --flip-rate like the others")
    if args.noisy_kind != "flip" and not args.noisy_share:
        sys.exit(f"error: --noisy-kind {args.noisy_kind} needs --noisy-share above 0 (the share of families it applies to)")
    if args.noisy_share:
        annotator |= {"noisy_share": args.noisy_share, "noisy_flip_rate": args.noisy_flip_rate, "noisy_kind": args.noisy_kind}
    n_unlabelled = args.n_unlabelled if args.unlabelled_ratio is None else max(1, round(args.unlabelled_ratio * args.n_pairs))
    if args.attributes != "4" and args.task != "story":
        sys.exit(f"error: --attributes {args.attributes}: only the story task has prompts of varied attributes (use --task story)")
    task = tasks.get_task(args.task, seed=args.seed, attributes=args.attributes, **annotator)
    rng = random.Random(args.seed)

    sft_prompts = task.prompts("sft", args.n_sft + args.n_pairs)
    demos = [{"prompt": p, "response": task.demonstration(p, rng)} for p in sft_prompts[:args.n_sft]]
    pairs, pair_stats = label_pairs(task, sft_prompts[args.n_sft:], rng)
    splits = {name: task.prompts(name, n) for name, n in
              (("rl", args.n_rl), ("unlabelled", n_unlabelled), ("eval", args.n_eval))}

    out.mkdir(parents=True, exist_ok=True)
    write_jsonl(out / "sft.jsonl", demos, kind="sft")
    write_jsonl(out / "preferences.jsonl", pairs, kind="preferences")
    for name, prompts in splits.items():
        write_jsonl(out / f"prompts_{name}.jsonl", [{"prompt": p, "id": i} for i, p in enumerate(prompts)], kind="prompts")

    eval_prompts = splits["eval"]
    demo_gold = sum(task.gold(p, task.demonstration(p, random.Random(i))) for i, p in enumerate(eval_prompts)) / len(eval_prompts)
    ref_gold = sum(task.gold(p, task.reference(p)) for p in eval_prompts) / len(eval_prompts)
    meta = {"task": args.task, "seed": args.seed, **({"world": task.world_settings()} if task.world_settings() else {}),
            "annotator": task.annotator_settings(),
            "sizes": {"sft": len(demos), "preferences": len(pairs), **{k: len(v) for k, v in splits.items()}},
            "pairs": pair_stats, **({"noisy_families": sorted(f for f in task.families if task.noisy_family(f))} if args.noisy_share else {}),
            "eval_gold": {"demonstration": demo_gold, "reference": ref_gold},
            "args": config_to_dict(args)}
    write_json(out / "meta.json", meta)
    print(f"wrote {out}: {len(demos)} demonstrations, {len(pairs)} pairs "
          f"(labels agree with gold on {pair_stats['label_gold_agreement']:.1%} of decided pairs), "
          + ", ".join(f"{len(v)} {k} prompts" for k, v in splits.items()))
    print(f"eval prompts: demonstration gold {demo_gold:.3f}, reference gold {ref_gold:.3f}")


if __name__ == "__main__":
    run_cli(main)
