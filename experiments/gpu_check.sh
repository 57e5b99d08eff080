#!/usr/bin/env bash
# The one prepared GPU check: the CUDA tests, bench.py at the GPT-2-small shape (bf16 SFT and RM training MFU against
# the GPU's datasheet dense bf16 peak, generation tokens/s beside HF generate, the PPO iteration by stage, peak GPU
# memory), then the small preset's pipeline on the story task, timed by stage. Everything goes to one log,
# $OUT/gpu_check.log (OUT defaults to runs/gpu_check), plus bench JSON and reproduce.py's stage records beside it.
#
#   bash experiments/gpu_check.sh             # on a machine with one CUDA GPU: at most 8.5 minutes (the steps' limits)
#   bash experiments/gpu_check.sh --dry-run   # the same steps on the CPU at toy sizes (tests the script itself)
#
# Needs no network: it uses the python3 on the PATH with torch (CUDA build), tokenizers, safetensors, tqdm, numpy and
# pytest; the HF comparison runs when transformers imports, and is skipped (said in the log) when it does not.
# Each step has its own time limit, so a slow step cannot eat the others' time; what a step finished is kept.
set -uo pipefail
cd "$(dirname "$0")/.."
DRY=0
[ "${1:-}" = "--dry-run" ] && DRY=1
OUT=${OUT:-runs/gpu_check}
mkdir -p "$OUT"
LOG="$OUT/gpu_check.log"
: > "$LOG"
say() { echo "$*" | tee -a "$LOG"; }
step() {  # step NAME SECONDS COMMAND...: run with a time limit, log its output and its wall time
    local name=$1 limit=$2; shift 2
    say ""; say "==== $name (limit ${limit}s): $*"
    local t0=$SECONDS
    timeout --signal=INT --kill-after=20 "$limit" "$@" >> "$LOG" 2>&1
    local rc=$?
    say "==== $name: exit $rc after $((SECONDS - t0)) s"
}

say "gpu_check.sh $( [ $DRY = 1 ] && echo '--dry-run (CPU, toy sizes)' ) at $(date -u +%FT%TZ)"
say "commit: $(git rev-parse HEAD 2>/dev/null || cat .commit 2>/dev/null || echo unknown)"
nvidia-smi -L >> "$LOG" 2>&1 || say "nvidia-smi: not available"
python3 - >> "$LOG" 2>&1 <<'PY'
import torch
print("torch", torch.__version__, "| cuda available:", torch.cuda.is_available(),
      "|", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU")
try:
    import transformers
    print("transformers", transformers.__version__)
except ImportError:
    print("transformers: not installed (the HF comparison is skipped)")
PY

if [ $DRY = 1 ]; then
    DEV=cpu; SHAPE=tiny; REPEATS=1; PRESET=smoke; TASK=algo; HF=""; MEMBATCH=4
else
    DEV=cuda; SHAPE=gpt2; REPEATS=3; PRESET=small; TASK=story; HF=""; MEMBATCH=64
    python3 -c "import transformers" 2>/dev/null && HF="--compare-hf"
fi

# 1. the CUDA tests (skipped on the CPU, as everywhere without a GPU)
step "CUDA tests" 240 python3 -m pytest -q -p no:cacheprovider --durations=0 tests/test_cuda.py
# 2. throughput at the GPT-2-small shape: bf16 autocast, then fp32 (TF32 matmuls) for the ratio; the memory that
#    activation checkpointing saves in one SFT step of the small preset's model
step "bench bf16" 90 python3 bench.py --shape $SHAPE --device $DEV --dtype bf16 --repeats $REPEATS $HF --json "$OUT/bench_bf16.json"
step "grad-checkpoint memory" 30 python3 experiments/grad_checkpoint_memory.py --device $DEV --batch $MEMBATCH
step "bench fp32/tf32" 40 python3 bench.py --shape $SHAPE --device $DEV --dtype fp32 --repeats 1 --stages peak,sft,rm,gen_cache --json "$OUT/bench_fp32.json"
# 3. one seed of the small preset's pipeline (every default method), timed by stage; cut at the limit, its finished
#    stages kept (rerun the same line to continue: reproduce.py resumes)
step "reproduce small" 110 python3 reproduce.py --task $TASK --preset $PRESET --device $DEV --out "$OUT/reproduce"
say ""; say "==== stage seconds (reproduce.py records)"
python3 - "$OUT/reproduce" >> "$LOG" 2>&1 <<'PY'
import json, sys
from pathlib import Path
recs = sorted(Path(sys.argv[1], "stages").glob("*.json"))
done = [(p.stem, json.loads(p.read_text()).get("seconds")) for p in recs if not p.stem.endswith(".pending")]
for name, s in done:
    print(f"{name:<28} {s:>8.1f} s")
print(f"{len(done)} stages finished, {sum(s or 0 for _, s in done):.0f} s in all")
PY
say ""; say "gpu_check.sh finished at $(date -u +%FT%TZ); log: $LOG"
