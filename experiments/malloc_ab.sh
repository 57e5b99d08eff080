#!/usr/bin/env bash
# Freed memory kept for reuse (rlhf.device.keep_freed_memory, every script's default) against glibc's defaults
# (RLHF_KEEP_FREED_MEMORY=0), interleaved: bench.py at the peer shape, then a short tiny-preset SFT run.
#
#     bash experiments/malloc_ab.sh runs/r22/s1 3 2     # a reproduce.py seed directory (its data), repeats, threads
#
# Prints bench.py's figures and each SFT run's tokens/s, wall seconds and minor page faults (/usr/bin/time).
set -euo pipefail
R=${1:?usage: malloc_ab.sh SEED_DIR [REPEATS] [THREADS]}
REPEATS=${2:-3}
THREADS=${3:-2}
cd "$(dirname "$0")/.."
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
for rep in $(seq "$REPEATS"); do
  for keep in 1 0; do
    echo "== repeat $rep, RLHF_KEEP_FREED_MEMORY=$keep"
    RLHF_KEEP_FREED_MEMORY=$keep /usr/bin/time -f "bench.py: wall %e s, minor page faults %R, peak RSS %M KiB" \
      python3 bench.py --shape peer --stages peak,sft,rm,gen_cache,ppo --repeats 3 --threads "$THREADS" 2>&1 \
      | grep -vE "^(peer ref|stage|shape|$)" || true
    RLHF_KEEP_FREED_MEMORY=$keep /usr/bin/time -f "tiny SFT: wall %e s, minor page faults %R, peak RSS %M KiB" \
      python3 train_sft.py --preset tiny --data "$R/data" --steps 30 --n-eval 0 --threads "$THREADS" --out "$T/sft" --overwrite 2>&1 \
      | grep -E "^(done in|tiny SFT)" || true
  done
done
