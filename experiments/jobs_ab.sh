#!/usr/bin/env bash
# reproduce.py --jobs 2 against --jobs 1 on a 2-core CPU: the same two stages one after the other at 2 threads,
# then side by side at 1 thread each (what --jobs 2 does with two seeds), for an SFT run, an evaluation and a PPO run.
#
#     bash experiments/jobs_ab.sh runs/r22/s1 2      # a reproduce.py seed directory (data, sft/ckpt, rm/ckpt); repeats
#
# Prints each pair's wall seconds; their ratio is the throughput --jobs 2 gains. Short versions of the real stages:
# SFT 40 steps, evaluate.py on 500 held-out prompts (no reference), PPO 6 iterations. Outputs go to a temporary folder.
set -euo pipefail
R=${1:?usage: jobs_ab.sh SEED_DIR [REPEATS]}
REPEATS=${2:-2}
cd "$(dirname "$0")/.."
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
sft() { python3 train_sft.py --preset tiny --data "$R/data" --steps 40 --n-eval 0 --threads "$1" --out "$T/sft_$2" --overwrite > "$T/sft_$2.log" 2>&1; }
ev() { python3 evaluate.py --policy "$R/sft/ckpt" --reference none --rm "$R/rm/ckpt" --data "$R/data" --n-eval 500 --threads "$1" --out "$T/ev_$2.json" > "$T/ev_$2.log" 2>&1; }
ppo() { python3 train_ppo.py --preset tiny --data "$R/data" --sft "$R/sft/ckpt" --rm "$R/rm/ckpt" --steps 6 --eval-every 100 --threads "$1" --out "$T/ppo_$2" --overwrite > "$T/ppo_$2.log" 2>&1; }
now() { python3 -c "import time; print(time.time())"; }
for job in sft ev ppo; do
  for rep in $(seq "$REPEATS"); do
    t0=$(now); $job 2 a; $job 2 b; t1=$(now)
    $job 1 a & $job 1 b & wait; t2=$(now)
    python3 -c "a, b = $t1 - $t0, $t2 - $t1; print(f'$job repeat $rep: one after the other at 2 threads {a:.1f} s; side by side at 1 thread {b:.1f} s; ratio {a / b:.2f}x')"
  done
done
