#!/usr/bin/env bash
# RLP (Lang et al. 2024, Algorithm 1) on the story task, tiny preset. The first policy is the README's PPO run
# against the RM (runs/ppo_rm); 10 samples per unlabelled prompt from it at temperature 1.0; the RM retrained from
# SFT with RLP-UML (lambda 0.5) and with RLP-SPG (gamma 0.5); then PPO again from SFT with each retrained RM, 3 PPO
# seeds, 40 iterations, exactly as experiments/contrastive_ablation.sh runs plain PPO (runs/cr/ppo-s*), which is
# the PPO row here. Needs the README's main job, RM, PPO (RM) and the contrastive ablation's plain PPO runs.
# Writes runs/rlp/ and prints the table. About an hour on 2 quiet CPU cores.
set -euo pipefail
cd "$(dirname "$0")/.."
P=python3
mkdir -p runs/rlp/eval
[ -f runs/rlp/samples.done ] || { $P sample_baselines.py --policy runs/ppo_rm/ckpt --rm runs/rm/ckpt --prompts data/story/prompts_unlabelled.jsonl --k 10 --temperature 1.0 --out runs/rlp/policy_samples.jsonl --seed 0; touch runs/rlp/samples.done; }
[ -f runs/rlp/rm_uml/diagnostics.json ] || $P train_rm.py --preset tiny --data data/story --sft runs/sft/ckpt --policy-samples runs/rlp/policy_samples.jsonl --uml-weight 0.5 --out runs/rlp/rm_uml --overwrite
[ -f runs/rlp/rm_spg/diagnostics.json ] || $P train_rm.py --preset tiny --data data/story --sft runs/sft/ckpt --policy-samples runs/rlp/policy_samples.jsonl --spg-gamma 0.5 --out runs/rlp/rm_spg --overwrite
for seed in 0 1 2; do
  for m in uml spg; do
    [ -f runs/rlp/eval/ppo_$m-s$seed.json ] && continue
    $P train_ppo.py --preset tiny --data data/story --sft runs/sft/ckpt --rm runs/rlp/rm_$m/ckpt --seed $seed --steps 40 --eval-every 40 --n-eval 100 --out runs/rlp/ppo_$m-s$seed --overwrite
    $P evaluate.py --policy runs/rlp/ppo_$m-s$seed/ckpt --reference runs/sft/ckpt --rm runs/rlp/rm_$m/ckpt --data data/story --n-eval 400 --out runs/rlp/eval/ppo_$m-s$seed.json --name rlp-$m-s$seed
  done
done
$P - <<'PY'
import json, statistics as st
from pathlib import Path
def ms(xs): return f"{st.mean(xs):.3f} ± {st.stdev(xs):.3f}" if len(xs) > 1 else f"{xs[0]:.3f}"
print("| method | gold win rate vs SFT | gold | proxy (its own RM) | KL | RM acc. on its PPO samples | per-seed win rate [95% CI] |")
print("|---|---|---|---|---|---|---|")
for label, pattern in (("PPO", "runs/cr/eval/ppo-s{}.json"), ("RLP-UML", "runs/rlp/eval/ppo_uml-s{}.json"),
                       ("RLP-SPG", "runs/rlp/eval/ppo_spg-s{}.json")):
    ev = [json.loads(Path(pattern.format(s)).read_text()) for s in range(3)]
    ci = "; ".join(f"{e['gold/win_rate']:.3f} [{e['gold/win_rate_lo']:.3f}, {e['gold/win_rate_hi']:.3f}]" for e in ev)
    acc = [e["rm/onpolicy_gold_accuracy"] for e in ev if e.get("rm/onpolicy_gold_accuracy") is not None]
    print(f"| {label} | {ms([e['gold/win_rate'] for e in ev])} | {ms([e['gold/score'] for e in ev])} | "
          f"{ms([e['proxy/score'] for e in ev])} | {ms([e['objective/kl'] for e in ev])} | {ms(acc) if acc else '-'} | {ci} |")
print()
print("| retrained RM | on-policy acc. before | after | held-out human pairs vs gold | SPG pairs accepted | SPG pair acc. vs gold |")
print("|---|---|---|---|---|---|")
for m in ("uml", "spg"):
    d = json.loads(Path(f"runs/rlp/rm_{m}/diagnostics.json").read_text())
    g = lambda k: f"{d[k]:.3f}" if isinstance(d.get(k), float) else str(d.get(k, "-"))
    print(f"| RLP-{m.upper()} | {g('rlp/onpolicy_gold_accuracy_before')} | {g('rlp/onpolicy_gold_accuracy_after')} | {g('rm/gold_accuracy')} | "
          f"{g('rlp/spg_pairs') + ' (' + g('rlp/spg_acceptance') + ')'} | {g('rlp/spg_gold_accuracy')} |")
PY
