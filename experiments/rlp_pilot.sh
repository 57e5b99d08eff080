#!/usr/bin/env bash
# RLP (Lang et al. 2024, Algorithm 1) on the story task, one seed: samples of the PPO policy (runs/ppo_rm, the
# README's PPO-against-the-RM run), the RM retrained with RLP-UML and with RLP-SPG, PPO again from SFT with each,
# then evaluate.py against SFT. Needs the README's main job, RM and PPO (RM) runs first. Writes runs/rlp/.
set -euo pipefail
cd "$(dirname "$0")/.."
P=python3
seed=${SEED:-0}
mkdir -p runs/rlp/eval
[ -f runs/rlp/samples.done ] || { $P sample_baselines.py --policy runs/ppo_rm/ckpt --rm runs/rm/ckpt --prompts data/story/prompts_unlabelled.jsonl --k 10 --temperature 1.0 --out runs/rlp/policy_samples.jsonl --seed $seed; touch runs/rlp/samples.done; }
[ -f runs/rlp/rm_uml/diagnostics.json ] || $P train_rm.py --preset tiny --data data/story --sft runs/sft/ckpt --policy-samples runs/rlp/policy_samples.jsonl --uml-weight 0.5 --out runs/rlp/rm_uml --overwrite
[ -f runs/rlp/rm_spg/diagnostics.json ] || $P train_rm.py --preset tiny --data data/story --sft runs/sft/ckpt --policy-samples runs/rlp/policy_samples.jsonl --spg-gamma 0.5 --out runs/rlp/rm_spg --overwrite
for m in uml spg; do
  [ -f runs/rlp/eval/ppo_$m-s$seed.json ] && continue
  $P train_ppo.py --preset tiny --data data/story --sft runs/sft/ckpt --rm runs/rlp/rm_$m/ckpt --seed $seed --steps 40 --eval-every 40 --n-eval 100 --out runs/rlp/ppo_$m-s$seed --overwrite
  $P evaluate.py --policy runs/rlp/ppo_$m-s$seed/ckpt --reference runs/sft/ckpt --rm runs/rlp/rm_$m/ckpt --data data/story --n-eval 400 --out runs/rlp/eval/ppo_$m-s$seed.json --name rlp-$m-s$seed
done
