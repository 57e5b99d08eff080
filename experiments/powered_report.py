"""The pre-registered run's report (docs/powered.md): each claim's paired difference from PPO beside the papers'.

    python3 experiments/powered_report.py --run runs/powered      # after reproduce.py wrote results.json there
    python3 experiments/powered_report.py --run runs/powered --out docs/powered_result.md

Reads OUT/results.json (the paired differences and their decisions), OUT/runs.csv (the mechanism logs) and
OUT/config.json (the command and commit), all written by reproduce.py; a run stopped short is reported over the
seeds it finished (`reproduce.py ... --seeds K` rewrites results.json over the first K from the cache). Prints:
1. the primary metric per registered method: gold win rate minus PPO's, 95% t-interval over seeds, decision, and
   the difference the seeds could detect at 80% power given their own paired sd; beside it the paper's figure;
2. the secondary ones: gold score, and the baselines against PPO;
3. the mechanism logs each claim rests on, mean ± std over runs;
4. provenance: the commit, the stage time, the command.
The papers' figures are the RLP paper's Table 1 (Lang et al. 2024, arXiv 2403.19279: win rate % against
text-davinci-003, AlpacaFarm's simulated annotators) and the contrastive-rewards paper's claim in words (Shen et al.
2024, arXiv 2403.07708); neither is on this task, so only the sign and rough size compare.
"""
from __future__ import annotations

import csv
import json
import statistics
import sys
from dataclasses import dataclass, fields
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rlhf.config import arg, parse_args  # noqa: E402
from rlhf.metrics import detectable_difference  # noqa: E402
from rlhf.report import LABELS, write_text  # noqa: E402

# RLP paper, Table 1, AlpacaFarm simulated win rate (%) against text-davinci-003
RLP_TABLE1 = {"sft": 36.7, "best_of_n": 45.0, "ppo": 46.8, "rlp_uml": 49.1, "rlp_spg": 50.2}
PAPER = {
    "contrastive": "Shen et al. 2024: beats PPO (and DPO) in GPT-4 and human evaluations; lowers PPO's variance",
    "rlp_uml": f"Lang et al. 2024, Table 1: {RLP_TABLE1['rlp_uml'] - RLP_TABLE1['ppo']:+.1f} points over PPO "
               f"({RLP_TABLE1['rlp_uml']} against {RLP_TABLE1['ppo']})",
    "rlp_spg": f"Lang et al. 2024, Table 1: {RLP_TABLE1['rlp_spg'] - RLP_TABLE1['ppo']:+.1f} points over PPO "
               f"({RLP_TABLE1['rlp_spg']} against {RLP_TABLE1['ppo']})",
    "best_of_n": f"Lang et al. 2024, Table 1: {RLP_TABLE1['best_of_n'] - RLP_TABLE1['ppo']:+.1f} points against PPO",
    "sft": f"Lang et al. 2024, Table 1: {RLP_TABLE1['sft'] - RLP_TABLE1['ppo']:+.1f} points against PPO",
}
PRIMARY = ["contrastive", "rlp_uml", "rlp_spg"]
SECONDARY = ["best_of_n", "dpo", "rloo", "grpo", "sft"]
LOGS = {  # runs.csv column -> what it shows
    "advantage_var_first10": "advantage variance, first 10 iterations",
    "advantage_var_last10": "advantage variance, last 10 iterations",
    "value_eos_error_first10": "value error at EOS, first 10 iterations",
    "onpolicy_acc_last": "its RM's on-policy gold accuracy, last evaluation",
    "first_rm_onpolicy_acc_last": "the first RM's on-policy gold accuracy, last evaluation",
}


@dataclass
class Args:
    run: str = arg("runs/powered", "reproduce.py output directory (results.json, runs.csv, config.json)", reads=True)
    out: str | None = arg(None, "also write the report to this markdown file")


def interval(d: dict) -> str:
    """'+0.012 [-0.010, +0.034]' (the t-interval is missing with one unit)."""
    ci = f" [{d['lo']:+.3f}, {d['hi']:+.3f}]" if d.get("lo") is not None else " (one unit: no interval)"
    return f"{d['mean']:+.3f}{ci}"


def detectable(per_unit: list[float]) -> str:
    """The difference these units detect at 80% power (two-sided paired t, alpha 0.05) given their own sd."""
    if len(per_unit) < 3:
        return "-"
    return f"{detectable_difference(statistics.stdev(per_unit), len(per_unit)):.3f}"


def mean_sd(xs: list[float]) -> str:
    xs = [x for x in xs if x is not None]
    if not xs:
        return "-"
    return f"{statistics.fmean(xs):.3f}" + (f" ± {statistics.stdev(xs):.3f}" if len(xs) > 1 else "")


def report(run: Path) -> str:
    res = json.loads((run / "results.json").read_text())
    cfg = json.loads((run / "config.json").read_text())
    paired, methods = res.get("paired", {}), res["methods"]
    if not paired:
        raise ValueError(f"{run / 'results.json'} has no paired differences: the run needs PPO among its methods")
    unit = next(iter(paired.values()))
    lines = [f"{unit['units']} units ({unit['unit']}); gold win rate vs SFT on {cfg['preset']}'s held-out prompts, "
             f"decision at delta {cfg['delta']}", "",
             "| method | win rate minus PPO's [95% t] | decision | detectable at 80% power | gold minus PPO's [95% t] | the paper |",
             "|---|---|---|---|---|---|"]
    for m in [m for m in PRIMARY + SECONDARY if m in paired or (m in PRIMARY and m in cfg["methods"])]:
        if m not in paired:
            lines.append(f"| {LABELS[m]} (primary) | missing: no paired difference in results.json | | | | {PAPER.get(m, '-')} |")
            continue
        p = paired[m]
        lines.append(f"| {LABELS[m]}{' (primary)' if m in PRIMARY else ''} | {interval(p['win'])} | {p['win'].get('decision', '-')} | "
                     f"{detectable(p['win']['per_unit'])} | {interval(p['gold'])} | {PAPER.get(m, '-')} |")
    ppo = methods["ppo"]["gold/win_rate"]
    lines += ["", f"PPO's own gold win rate vs SFT: {ppo['mean']:.3f} ± {ppo['std']:.3f} (mean ± std over runs).", ""]
    with open(run / "runs.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if not r["flip_rate"] and float(r["kl_coef"]) == float(cfg["kl_coefs"].split(",")[0])]
    logged = [m for m in ["ppo", *PRIMARY, "rloo", "grpo"] if any(r["method"] == m for r in rows)]
    lines += ["Mechanism logs (runs.csv, mean ± std over runs):", "",
              "| method | " + " | ".join(LOGS.values()) + " |", "|---|" + "---|" * len(LOGS)]
    for m in logged:
        vals = {k: [float(r[k]) for r in rows if r["method"] == m and r[k] not in ("", None)] for k in LOGS}
        lines.append(f"| {LABELS[m]} | " + " | ".join(mean_sd(vals[k]) for k in LOGS) + " |")
    prov = cfg.get("provenance") or {}
    seeds = tuple(f"s{i}_" for i in range(cfg["seeds"]))
    seconds = sum(v for k, v in res.get("stage_seconds", {}).items() if v and k.startswith(seeds))
    lines += ["", f"The call that wrote results.json: commit {(prov.get('git_commit') or '?')[:12]}"
              f"{' (with uncommitted changes)' if prov.get('git_dirty') else ''}; {seconds / 3600:.1f} hours of stage time over "
              f"its {cfg['seeds']} seeds (summed: --jobs ran seeds side by side); command: `{command(cfg)}`"]
    return "\n".join(lines) + "\n"


def command(cfg: dict) -> str:
    """The reproduce.py command of a config.json: every argument that differs from reproduce.py's default."""
    import reproduce
    defaults = {f.name: f.default for f in fields(reproduce.Args)}
    parts = []
    for k, v in cfg.items():
        if k not in defaults or k == "provenance":
            continue
        v = ",".join(v) if k == "methods" else v
        if v == defaults[k] or (k == "methods" and v == defaults[k].replace(" ", "")):
            continue
        flag = "--" + k.replace("_", "-")
        parts.append(flag if v is True else f"--no-{k.replace('_', '-')}" if v is False else f"{flag} {v}")
    return " ".join(["python3 reproduce.py", *parts])


def main(argv=None):
    a = parse_args(Args, argv, description=__doc__.split("\n")[0])
    md = report(Path(a.run))
    print(md)
    if a.out:
        write_text(Path(a.out), md)


if __name__ == "__main__":
    main()
