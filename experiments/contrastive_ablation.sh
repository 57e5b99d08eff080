#!/usr/bin/env bash
# Plain PPO vs PPO + contrastive rewards (Shen et al. 2024) on the story task, tiny preset: 3 PPO seeds over one
# SFT policy, and one RM per annotator: the data's own (label-flip rate 0.1) and a noisier one (0.25, same prompts
# and demonstrations). A reproduce.py call; extra arguments go to it (e.g. --threads 2). Writes runs/contrastive/:
# table.md (flip 0.1), noise_table.md (flip 0.25), runs.csv (each PPO run's advantage variance, its RM's accuracy).
set -euo pipefail
cd "$(dirname "$0")/.."
exec python3 reproduce.py --out runs/contrastive --methods sft,ppo,contrastive --ppo-seeds 3 --noise-sweep --noise-levels 0.25 "$@"
