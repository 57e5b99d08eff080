"""Where a reward model disagrees with the gold judge, on pairs of two SFT samples (the README's RM error analysis).

    python3 experiments/rm_errors.py --rm runs/rm/ckpt                       # after the main job and the RM
    python3 experiments/rm_errors.py --rm runs/rm_content/ckpt --show 5

The pairs are the ones `train_rm.py` reports as `sft_pairs/*`: two samples per held-out prompt from the
SFT policy at temperature 1.0, with the same seed and the same number of threads. Pairs that gold ties are
dropped; a tied RM score counts 1/2, as in train_rm.py. It prints the RM's gold accuracy by gold gap, and by each gold component that differs between the
two answers (any pair where it differs, not only one-component pairs). Then it prints the worst mistakes:
the largest gold gaps the RM got backwards.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from rlhf.checkpoint import load_model  # noqa: E402
from rlhf.data import read_jsonl  # noqa: E402
from rlhf.reward import policy_sample_pairs, score_texts  # noqa: E402
from rlhf.tasks import get_task  # noqa: E402

GAPS = ((0.0, 0.05), (0.05, 0.1), (0.1, 0.2), (0.2, 0.4), (0.4, 1.01))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rm", required=True, help="reward-model checkpoint")
    ap.add_argument("--sft", default="runs/sft/ckpt", help="SFT policy that writes the pairs")
    ap.add_argument("--data", default="data/story", help="data directory with prompts_eval.jsonl")
    ap.add_argument("--task", default="story", choices=["story", "algo"])
    ap.add_argument("--n", type=int, default=400, help="held-out prompts (one pair each)")
    ap.add_argument("--seed", type=int, default=0, help="sampling seed (train_rm.py uses its --seed)")
    ap.add_argument("--show", type=int, default=8, help="worst mistakes to print")
    args = ap.parse_args()
    if args.n < 1:
        ap.error(f"--n must be >= 1, got {args.n}")

    torch.manual_seed(args.seed)
    policy, tok, _ = load_model(args.sft, "policy")
    rm, _, _ = load_model(args.rm, "rm")
    policy.eval()
    rm.eval()
    task = get_task(args.task)
    prompts = [r["prompt"] for r in read_jsonl(Path(args.data) / "prompts_eval.jsonl", "prompts")][:args.n]
    p, c, r = policy_sample_pairs(policy, tok, task, prompts, temperature=1.0, seed=args.seed)
    s = score_texts(rm, tok, p + p, c + r)

    rows = []
    for i, prompt in enumerate(p):
        gc, gr = task.gold(prompt, c[i]), task.gold(prompt, r[i])
        if gc == gr:
            continue
        (b, sb), (w, sw) = ((c[i], s[i]), (r[i], s[len(p) + i])) if gc > gr else ((r[i], s[len(p) + i]), (c[i], s[i]))
        cb, cw = task.gold_components(prompt, b), task.gold_components(prompt, w)
        rows.append({"ok": 1.0 if sb > sw else 0.5 if sb == sw else 0.0, "gap": abs(gc - gr), "cb": cb, "cw": cw, "prompt": prompt,
                     "better": b, "worse": w, "sb": float(sb), "sw": float(sw)})
    if not rows:
        sys.exit("no pair with a gold difference; nothing to analyse")
    acc = lambda sel: sum(x["ok"] for x in sel) / len(sel)  # noqa: E731
    print(f"{len(rows)} pairs with a gold difference (of {len(p)} sampled); RM gold accuracy {acc(rows):.3f}")
    print("\nby gold gap |gold(a) - gold(b)|:")
    for lo, hi in GAPS:
        sel = [x for x in rows if lo <= x["gap"] < hi]
        if sel:
            print(f"  [{lo:.2f}, {min(hi, 1.0):.2f})  n={len(sel):4d}  accuracy {acc(sel):.3f}")
    print("\nby component that differs (pairs may differ in several):")
    for k in rows[0]["cb"]:
        sel = [x for x in rows if x["cb"][k] != x["cw"][k]]
        if sel:
            print(f"  {k:10s}  n={len(sel):4d}  accuracy {acc(sel):.3f}")
    worst = sorted((x for x in rows if x["ok"] < 1), key=lambda x: -x["gap"])[:args.show]
    for x in worst:
        diff = [k for k in x["cb"] if x["cb"][k] != x["cw"][k]]
        print(f"\ngold gap {x['gap']:.3f}, differs in {', '.join(diff)}; RM scores better {x['sb']:.2f}, "
              f"worse {x['sw']:.2f}\n  prompt: {x['prompt']}\n  better: {x['better']}\n  worse:  {x['worse']}")


if __name__ == "__main__":
    main()
