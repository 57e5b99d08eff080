"""Do two sets of runs give the same numbers? Compares every RUN/metrics.jsonl (and diagnostics.json, eval.json,
samples.jsonl) under A with its namesake under B, value for value, wall-clock keys left out.

    python3 experiments/same_metrics.py runs_before runs_after     # exit 0: all identical; 1: the first difference

How a refactor is checked: run the same seed-0 commands (same --threads) with the old and the new commit into two
directories, then compare them with this script.
"""
import json
import sys
from pathlib import Path

TIMING = ("time/", "per_s", "seconds")  # the keys that may differ between two identical runs


def untimed(row: dict) -> dict:
    return {k: v for k, v in row.items() if not any(t in k for t in TIMING)}


def rows(path: Path) -> list:
    if path.suffix == ".jsonl":
        return [untimed(json.loads(line)) for line in path.open(encoding="utf-8") if line.strip()]
    return [untimed(json.loads(path.read_text(encoding="utf-8")))]


def main(a: Path, b: Path) -> int:
    files = sorted(p for name in ("metrics.jsonl", "diagnostics.json", "eval.json", "samples.jsonl") for p in a.glob(f"*/{name}"))
    if not files:
        print(f"{a}: no run directories with metrics.jsonl below it")
        return 1
    same = True
    for f in files:
        g = b / f.relative_to(a)
        if not g.exists():
            print(f"{g}: missing")
            same = False
            continue
        ra, rb = rows(f), rows(g)
        diff = next(((i, x, y) for i, (x, y) in enumerate(zip(ra, rb)) if x != y), None)
        if diff is None and len(ra) == len(rb):
            print(f"{str(f.relative_to(a)):40s} {len(ra):5d} rows  identical")
            continue
        same = False
        if diff is None:
            print(f"{f.relative_to(a)}: {len(ra)} rows against {len(rb)}")
        else:
            i, x, y = diff
            keys = [k for k in sorted(set(x) | set(y)) if x.get(k) != y.get(k)][:5]
            print(f"{f.relative_to(a)}: row {i} differs: " + ", ".join(f"{k} {x.get(k)!r} vs {y.get(k)!r}" for k in keys))
    print("ALL IDENTICAL" if same else "DIFFERENT")
    return 0 if same else 1


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    sys.exit(main(Path(sys.argv[1]), Path(sys.argv[2])))
