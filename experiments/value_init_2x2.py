"""The value model's start under contrastive rewards: {--reward rm, contrastive} x {--value-init rm, sft}, and
contrastive with the RM's raw offset (--no-value-shift, the behaviour before the shift), PPO seeds paired over one
pipeline seed's data, SFT, RM and baselines.

    python3 experiments/value_init_2x2.py --out runs/r22 --ppo-seeds 3 --threads 2

OUT must hold a reproduce.py run of seed 0 (its data, SFT, RM and baselines; `reproduce.py --out OUT` with the default
methods makes them). The cells with --value-init rm and the shift are reproduce.py's own ppo and contrastive runs
(reproduce.pipeline with --ppo-seeds: finished stages are found, not rerun); the other cells go into OUT/s0/v2x2_*. Every run is evaluated as reproduce.py evaluates (evaluate.py, the same held-out prompts).
Writes OUT/value_init_2x2.md and .json: per cell the mean over PPO seeds with a 95% t-interval of the gold win rate,
gold and KL, the paired difference from PPO (rm, value from the RM) seed by seed, and the mechanism logs of the
first ten iterations (value error at EOS, advantage variance, the contrastive advantage's correlation with
score - baseline).
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rlhf.config import answer_help, arg, parse_args  # noqa: E402


@dataclass
class Args:
    out: str = arg("runs/reproduce", "a reproduce.py output directory with seed 0's stages")
    preset: str = arg("tiny", "reproduce.py's --preset (smoke: a quick check of this script)", choices=["smoke", "tiny", "small"])
    task: str = arg("story", "reproduce.py's --task", choices=["story", "algo"])
    ppo_seeds: int = arg(3, "PPO seeds per cell (0, 1, ...: reproduce.py's --ppo-seeds names)", ge=2, le=100)
    threads: int = arg(0, "torch CPU threads for every stage (0: the CPUs a stage may use)", ge=0, le=4096)


answer_help(__name__, Args, description=__doc__.split("\n")[0])

import reproduce  # noqa: E402
from rlhf.data import read_json, read_metrics, write_json  # noqa: E402
from rlhf.metrics import mean_t_interval  # noqa: E402

# cell -> (run name: reproduce.py's for its own methods, train_ppo.py flags beyond reproduce.py's PPO command)
CELLS = {"rm / value from RM": ("ppo", []),
         "rm / value from SFT": ("v2x2_rm_vsft", ["--value-init", "sft"]),
         "contrastive / value from RM, shifted": ("contrastive", None),
         "contrastive / value from SFT": ("v2x2_cr_vsft", ["--reward", "contrastive", "--value-init", "sft"]),
         "contrastive / value from RM, raw offset": ("v2x2_cr_raw", ["--reward", "contrastive", "--no-value-shift"])}
MECH = ["value/eos_error", "ppo/advantages/var", "contrastive/adv_eos_corr", "contrastive/beats_baseline", "ppo/val/var_explained"]


def main(argv=None):
    a = parse_args(Args, argv, description=__doc__.split("\n")[0])
    out = Path(a.out)
    rargs = reproduce.parse_args(reproduce.Args, ["--out", str(out), "--preset", a.preset, "--task", a.task,
                                                  "--methods", "sft,ppo,contrastive", "--ppo-seeds",
                                                  str(a.ppo_seeds), "--threads", str(a.threads)])
    methods = reproduce.parse_methods(rargs.methods)
    own = sum(flags is not None for _, flags in CELLS.values()) - 1
    st = reproduce.Stages(out, reproduce.count_stages(rargs, methods, []) + 2 * own * a.ppo_seeds, a.threads)
    d, cfg = out / "s0", reproduce.SETTINGS[rargs.preset]
    # reproduce.py's own stages first: found finished (or run), so that the stages below know their inputs' versions
    records = reproduce.pipeline(st, rargs, d, "s0_", 0, methods)
    data, sft, rm, base = d / "data", d / "sft" / "ckpt", d / "rm" / "ckpt", d / "baselines.jsonl"
    runs = {}
    for cell, (name0, flags) in CELLS.items():
        for ps in range(a.ppo_seeds):
            name = name0 if ps == 0 else f"{name0}_ps{ps}"
            if flags is None or name0 == "ppo":  # reproduce.py's run and evaluation
                ev = next(r["eval"] for r in records if r["dir"] == d / name)
            else:
                extra = ["--baselines", base] if "contrastive" in flags else []
                st(f"s0_{name}", "train_ppo.py", "--preset", rargs.preset, "--seed", ps, "--data", data, "--sft", sft,
                   "--steps", cfg["ppo_steps"], "--eval-every", cfg["eval_every"], *cfg["ppo"], "--rm", rm, *flags, *extra,
                   "--out", d / name, out=d / name)
                ev = st(f"s0_eval_{name}", "evaluate.py", "--policy", d / name / "ckpt", "--reference", sft, "--rm", rm,
                        "--data", data, "--n-eval", cfg["n_eval"], "--seed", 0, "--out", d / "eval" / f"{name}.json",
                        "--name", f"{name0}-s0" + (f"-ps{ps}" if ps else ""), out=d / "eval" / f"{name}.json", kind="eval")
            rows = read_metrics(d / name / "metrics.jsonl")
            early = [r for r in rows if 1 <= r["step"] <= 10]
            mech = {k: sum(r[k] for r in early if r.get(k) is not None) / max(1, sum(r.get(k) is not None for r in early))
                    for k in MECH if any(r.get(k) is not None for r in early)}
            runs.setdefault(cell, []).append({"ppo_seed": ps, "dir": str(d / name), "eval": read_json(ev), "early": mech})
    st.bar.close()

    base_cell = next(iter(CELLS))
    report = {}
    lines = [f"# Value model start under contrastive rewards ({a.ppo_seeds} PPO seeds over seed 0's SFT, RM, baselines)", "",
             "| cell | gold win rate vs SFT | gold | KL | win rate minus PPO's, paired | early value error at EOS | early adv. var | early corr(A_EOS, r - b) |",
             "|---|---|---|---|---|---|---|---|"]
    for cell, rs in runs.items():
        col = lambda k: [r["eval"][k] for r in rs]  # noqa: E731
        diffs = [r["eval"]["gold/win_rate"] - b["eval"]["gold/win_rate"] for r, b in zip(rs, runs[base_cell])]
        rep = {k: mean_t_interval(col(k)) for k in ("gold/win_rate", "gold/score", "objective/kl")}
        rep["win_rate_minus_ppo"] = mean_t_interval(diffs) if cell != base_cell else (0.0, 0.0, 0.0)
        rep["early"] = {k: sum(r["early"].get(k, float("nan")) for r in rs) / len(rs) for k in MECH}  # NaN: not logged
        report[cell] = rep
        f = lambda t: f"{t[0]:.3f} [{t[1]:.3f}, {t[2]:.3f}]"  # noqa: E731
        e = rep["early"]
        lines.append(f"| {cell} | {f(rep['gold/win_rate'])} | {f(rep['gold/score'])} | {f(rep['objective/kl'])} | "
                     f"{'-' if cell == base_cell else f(rep['win_rate_minus_ppo'])} | {e['value/eos_error']:+.3f} | "
                     f"{e['ppo/advantages/var']:.3f} | {e['contrastive/adv_eos_corr']:.3f} |")
    lines += ["", "Intervals: 95% t over PPO seeds. Early: means over iterations 1-10 and seeds (metrics.jsonl).",
              f"Command: python3 experiments/value_init_2x2.py --out {a.out} --preset {a.preset} --task {a.task} "
              f"--ppo-seeds {a.ppo_seeds} --threads {a.threads}"]
    (out / "value_init_2x2.md").write_text("\n".join(lines) + "\n")
    write_json(out / "value_init_2x2.json", {"cells": report, "runs": runs})
    print("\n".join(lines))


if __name__ == "__main__":
    main()
