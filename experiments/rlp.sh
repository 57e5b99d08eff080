#!/usr/bin/env bash
# RLP-UML and RLP-SPG (Lang et al. 2024, Algorithm 1, one round) vs plain PPO on the story task, tiny preset:
# samples from the first PPO policy retrain the RM from SFT once per variant (seed 0), then PPO from SFT against
# each retrained RM, 3 PPO seeds, as plain PPO. A reproduce.py call; extra arguments go to it (e.g. --threads 2).
# Writes runs/rlp/: table.md, runs.csv (each run's RM: rlp/* diagnostics, SPG pairs and their gold accuracy).
set -euo pipefail
cd "$(dirname "$0")/.."
exec python3 reproduce.py --out runs/rlp --methods sft,ppo,rlp_uml,rlp_spg --ppo-seeds 3 "$@"
