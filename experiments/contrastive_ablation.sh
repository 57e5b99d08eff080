#!/usr/bin/env bash
# Plain PPO vs PPO + contrastive rewards on the story task (tiny preset): 3 PPO seeds, at the default annotator
# and at a noisier one (label-flip rate 0.25 instead of 0.1). Needs the main job and the RM of the README first
# (data/story, runs/sft, runs/rm). Writes runs/cr/ and prints the table. About an hour on 2 CPU cores.
set -euo pipefail
cd "$(dirname "$0")/.."
P=python3
[ -f runs/baselines.jsonl.done ] || { $P sample_baselines.py --policy runs/sft/ckpt --rm runs/rm/ckpt --prompts data/story/prompts_rl.jsonl --k 4 --out runs/baselines.jsonl; touch runs/baselines.jsonl.done; }
# the noisier annotator: same seed, so the same prompts and demonstrations; only the labels change
[ -d data/story_noisy ] || $P prepare_data.py --task story --out data/story_noisy --flip-rate 0.25
[ -f runs/rm_noisy/diagnostics.json ] || $P train_rm.py --preset tiny --data data/story_noisy --sft runs/sft/ckpt --out runs/rm_noisy --overwrite
[ -f runs/baselines_noisy.jsonl.done ] || { $P sample_baselines.py --policy runs/sft/ckpt --rm runs/rm_noisy/ckpt --prompts data/story/prompts_rl.jsonl --k 4 --out runs/baselines_noisy.jsonl; touch runs/baselines_noisy.jsonl.done; }
mkdir -p runs/cr/eval
for noise in "" _noisy; do
  for seed in 0 1 2; do
    for method in ppo cr; do
      name=$method$noise-s$seed
      [ -f runs/cr/eval/$name.json ] && continue
      extra=()
      [ $method = cr ] && extra=(--reward contrastive --baselines runs/baselines$noise.jsonl)
      $P train_ppo.py --preset tiny --data data/story --sft runs/sft/ckpt --rm runs/rm$noise/ckpt --seed $seed \
        --steps 40 --eval-every 40 --n-eval 100 --out runs/cr/$name --overwrite "${extra[@]}"
      $P evaluate.py --policy runs/cr/$name/ckpt --reference runs/sft/ckpt --rm runs/rm$noise/ckpt --data data/story \
        --n-eval 400 --out runs/cr/eval/$name.json --name $name
    done
  done
done
$P - <<'PY'
import json, statistics as st
from pathlib import Path
def ms(xs): return f"{st.mean(xs):.3f} ± {st.stdev(xs):.3f}" if len(xs) > 1 else f"{xs[0]:.3f}"
print("| annotator | method | gold win rate vs SFT | gold | KL | advantage variance (last 10 iterations) | per-seed win rate [95% CI] |")
print("|---|---|---|---|---|---|---|")
for noise, label in (("", "default (flip 0.10)"), ("_noisy", "noisier (flip 0.25)")):
    for method, mlabel in (("ppo", "PPO"), ("cr", "PPO + contrastive")):
        ev = [json.loads(Path(f"runs/cr/eval/{method}{noise}-s{s}.json").read_text()) for s in range(3)]
        advv = []
        for s in range(3):
            rows = [json.loads(l) for l in open(f"runs/cr/{method}{noise}-s{s}/metrics.jsonl")]
            a = [r["ppo/advantages/var"] for r in rows if "ppo/advantages/var" in r][-10:]
            advv.append(sum(a) / len(a))
        ci = "; ".join(f"{e['gold/win_rate']:.3f} [{e['gold/win_rate_lo']:.3f}, {e['gold/win_rate_hi']:.3f}]" for e in ev)
        print(f"| {label} | {mlabel} | {ms([e['gold/win_rate'] for e in ev])} | {ms([e['gold/score'] for e in ev])} | "
              f"{ms([e['objective/kl'] for e in ev])} | {ms(advv)} | {ci} |")
PY
