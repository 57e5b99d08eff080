"""A speed-up against plain fp32 seeds: do gold win rates and RM accuracies stay within fp32's seed spread?

    python3 experiments/speedup_check.py --variant bf16 --seeds 3 --threads 2    # bf16 autocast
    python3 experiments/speedup_check.py --variant pack --seeds 3 --threads 2    # packed rows (--pack)

Runs `reproduce.py --methods sft,ppo --seeds N` twice, into --fp32 (the defaults) and --out (the variant: `--dtype bf16`,
SFT, RM and PPO under bf16 autocast; or `--pack`, their training forwards on packed rows). Every evaluation samples
and scores in fp32 on the same 2,000 held-out prompts. Finished stages are found and reused (reproduce.py's cache),
so the command resumes and can extend a finished run with more seeds. Seed k of both runs shares its data (prompts,
demonstrations, labels); each trains its own SFT, RM and PPO from it.

Writes OUT/speedup_check.md and .json: per figure (SFT gold, the RM's gold accuracy on held-out pairs and on pairs of
two SFT samples, PPO's gold win rate against its own SFT, PPO's gold and KL, each training stage's seconds) the fp32
and the variant's values seed by seed, their means and stds, and the paired difference variant - fp32 with a 95%
t-interval over seeds. "Within the spread" means |mean difference| <= fp32's std over seeds. The stage seconds are
wall time as the runs went (a machine shared with other work inflates them); bench.py and experiments/pack_ab.py
time the steps themselves.
"""
from __future__ import annotations

import math
import statistics
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rlhf.config import answer_help, arg, parse_args  # noqa: E402


@dataclass
class Args:
    variant: str = arg("bf16", "the speed-up: bf16 (reproduce.py --dtype bf16) or pack (reproduce.py --pack)", choices=["bf16", "pack"])
    fp32: str = arg("runs/r22", "reproduce.py output directory of the fp32 seeds")
    out: str | None = arg(None, "reproduce.py output directory of the variant's seeds (default: runs/<variant>)")
    seeds: int = arg(3, "pipeline seeds 0..N-1 of each dtype", ge=2, le=100)
    preset: str = arg("tiny", "reproduce.py's --preset (smoke: a quick check of this script)", choices=["smoke", "tiny", "small"])
    task: str = arg("story", "reproduce.py's --task", choices=["story", "algo"])
    threads: int = arg(0, "torch CPU threads for every stage (0: the CPUs a stage may use)", ge=0, le=4096)
    run: bool = arg(True, "run (or resume) both reproduce.py calls first; --no-run only reads finished runs")


answer_help(__name__, Args, description=__doc__.split("\n")[0])

from rlhf.data import read_json, write_json  # noqa: E402
from rlhf.metrics import mean_t_interval  # noqa: E402

# (label, file under s<k>/, key): the figures compared; a stage's seconds come from reproduce.py's stage records
FIGURES = (("SFT gold (held-out)", "eval/sft.json", "gold/score"),
           ("RM gold accuracy, held-out pairs", "rm/diagnostics.json", "rm/gold_accuracy"),
           ("RM gold accuracy, SFT-sample pairs", "rm/diagnostics.json", "sft_pairs/gold_accuracy"),
           ("PPO gold win rate vs its SFT", "eval/ppo.json", "gold/win_rate"),
           ("PPO gold", "eval/ppo.json", "gold/score"),
           ("PPO KL to SFT", "eval/ppo.json", "objective/kl"))
STAGES = ("sft", "rm", "ppo")


def figures(out: Path, seeds: int) -> dict[str, list[float]]:
    """label -> the value of each seed 0..seeds-1 (NaN where a run does not report it, e.g. no SFT-sample pairs; the
    stages' seconds under 'seconds, <stage>')."""
    got = {label: [float(read_json(out / f"s{k}" / f).get(key, "nan")) for k in range(seeds)] for label, f, key in FIGURES}
    for stage in STAGES:
        got[f"seconds, {stage}"] = [float(read_json(out / "stages" / f"s{k}_{stage}.json")["seconds"]) for k in range(seeds)]
    return got


def compare(fp32: dict[str, list[float]], variant: dict[str, list[float]]) -> dict[str, dict]:
    """Per figure: both runs' values, means and stds, and the paired difference variant - fp32 (mean, 95% t-interval);
    a figure missing (NaN) from any seed is left out. (The keys say bf16 for the variant, whichever it is.)"""
    rows = {}
    for label in fp32:
        a, b = fp32[label], variant[label]
        if not all(math.isfinite(x) for x in a + b):  # a figure this preset does not report
            continue
        diff, lo, hi = mean_t_interval([y - x for x, y in zip(a, b)])
        sd = statistics.stdev(a)
        rows[label] = {"fp32": a, "bf16": b, "fp32_mean": statistics.fmean(a), "fp32_std": sd,
                       "bf16_mean": statistics.fmean(b), "bf16_std": statistics.stdev(b),
                       "diff": diff, "diff_lo": lo, "diff_hi": hi, "within_spread": abs(diff) <= sd}
    return rows


def table(rows: dict[str, dict], command: str, variant: str = "bf16") -> str:
    lines = [f"| figure | fp32 per seed | {variant} per seed | fp32 mean ± std | {variant} mean ± std | {variant} - fp32, paired "
             "[95% CI] | within fp32's seed spread? |", "|---|---|---|---|---|---|---|"]
    for label, r in rows.items():
        fmt = "{:.0f}" if label.startswith("seconds") else "{:.3f}"
        seeds = lambda xs: ", ".join(fmt.format(x) for x in xs)  # noqa: E731
        within = "-" if label.startswith("seconds") else ("yes" if r["within_spread"] else "no")
        lines.append(f"| {label} | {seeds(r['fp32'])} | {seeds(r['bf16'])} | {fmt.format(r['fp32_mean'])} ± {fmt.format(r['fp32_std'])} "
                     f"| {fmt.format(r['bf16_mean'])} ± {fmt.format(r['bf16_std'])} | {fmt.format(r['diff'])} "
                     f"[{fmt.format(r['diff_lo'])}, {fmt.format(r['diff_hi'])}] | {within} |")
    return "\n".join(lines + ["", f"Command: {command}"]) + "\n"


def main(argv=None):
    args = parse_args(Args, argv, description=__doc__.split("\n")[0])
    common = ["--methods", "sft,ppo", "--seeds", str(args.seeds), "--preset", args.preset, "--task", args.task,
              "--threads", str(args.threads)]
    out = Path(args.out or f"runs/{args.variant}")
    if args.run:
        for d, flags in ((args.fp32, []), (out, ["--dtype", "bf16"] if args.variant == "bf16" else ["--pack"])):
            subprocess.run([sys.executable, "reproduce.py", "--out", str(d), *common, *flags], cwd=ROOT, check=True)
    rows = compare(figures(Path(args.fp32), args.seeds), figures(out, args.seeds))
    text = table(rows, "python3 experiments/speedup_check.py " + " ".join(sys.argv[1:] if argv is None else argv), args.variant)
    write_json(out / "speedup_check.json", rows)
    (out / "speedup_check.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
