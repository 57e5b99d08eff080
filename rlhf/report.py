"""The tables, CSVs and pictures of a set of evaluated runs (what reproduce.py writes at the end).

A run is one evaluated policy: the evaluation JSON that evaluate.py wrote and, for the PPO family, the
training directory whose metrics.jsonl has its logged evaluations. Mean +- std is over runs (seeds).
"""
from __future__ import annotations

import csv
import io
import math
import statistics
from pathlib import Path

from rlhf.data import atomic_write_bytes, read_json
from rlhf.data import read_metrics

METHODS = ["sft", "best_of_n", "dpo", "ppo", "rloo", "grpo", "contrastive", "rlp_uml", "rlp_spg", "oracle"]  # table order
LABELS = {"sft": "SFT", "best_of_n": "best-of-n (SFT, RM)", "dpo": "DPO (the RM's pairs)", "ppo": "PPO",
          "rloo": "RLOO (no critic)", "grpo": "GRPO (no critic)", "contrastive": "PPO + contrastive rewards",
          "rlp_uml": "RLP-UML", "rlp_spg": "RLP-SPG", "oracle": "PPO on gold (oracle)"}
COLUMNS = [("gold/win_rate", "gold win rate vs SFT"), ("gold/score", "gold"), ("proxy/score", "proxy (first RM)"),
           ("proxy/gain", "proxy minus SFT's (same seed)"), ("objective/kl", "KL to SFT"), ("eval/length", "length")]
# what runs.csv reports of each RM a run used (train_rm.py's diagnostics.json; the rlp/* keys only for RLP's RMs)
RM_KEYS = ["rm/gold_accuracy", "sft_pairs/gold_accuracy", "rlp/onpolicy_gold_accuracy_before",
           "rlp/onpolicy_gold_accuracy_after", "rlp/spg_pairs", "rlp/spg_acceptance", "rlp/spg_gold_accuracy"]


def summarise(evals: dict[str, list[Path]], base: str = "sft", seed_of: dict[str, list[int]] | None = None) -> dict:
    """method -> per-run metrics and mean / std of each column (std is 0 for one run).

    Each seed has its own RM, whose scores have an arbitrary offset, so the proxy's mean over seeds mixes
    scales. `proxy/gain` is the proxy score minus the `base` method's (SFT's) proxy score in the same seed,
    which compares across seeds; it is absent (NaN, shown as "-") when `base` was not evaluated.
    seed_of[m][i] is the seed of the data, SFT and RM of evals[m][i] (default i: one run per seed)."""
    seed_of = seed_of or {m: list(range(len(paths))) for m, paths in evals.items()}
    ref = dict(zip(seed_of.get(base, []), (read_json(p) for p in evals.get(base, []))))
    out = {}
    for m, paths in evals.items():
        rows = [read_json(p) for p in paths]
        for r, seed in zip(rows, seed_of[m]):
            b = ref.get(seed, {})
            if r.get("proxy/score") is not None and b.get("proxy/score") is not None:
                r["proxy/gain"] = float(r["proxy/score"]) - float(b["proxy/score"])
        s = {"seeds": [{k: r.get(k) for k, _ in COLUMNS + [("gold/win_rate_lo", ""), ("gold/win_rate_hi", "")]} for r in rows]}
        for k, _ in COLUMNS:
            xs = [float(r[k]) for r in rows if r.get(k) is not None]
            s[k] = {"mean": statistics.fmean(xs) if xs else float("nan"),
                    "std": statistics.stdev(xs) if len(xs) > 1 else 0.0}
        out[m] = s
    return out


def table(summary: dict, first_col: str = "method") -> str:
    """A markdown table of `summarise`'s output (keys: row labels): mean +- std per column, each run's win rate."""
    head = f"| {first_col} | " + " | ".join(label for _, label in COLUMNS) + " | per-seed win rate [95% CI] |"
    lines = [head, "|" + "---|" * (len(COLUMNS) + 2)]
    for name, s in summary.items():
        cells = ["-" if math.isnan(s[k]["mean"]) else f"{s[k]['mean']:.3f} ± {s[k]['std']:.3f}" if len(s["seeds"]) > 1
                 else f"{s[k]['mean']:.3f}" for k, _ in COLUMNS]
        ci = "; ".join(f"{r['gold/win_rate']:.3f} [{r['gold/win_rate_lo']:.3f}, {r['gold/win_rate_hi']:.3f}]" for r in s["seeds"])
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {ci} |")
    return "\n".join(lines) + "\n"


def noise_table(noise: dict[float, dict]) -> str:
    """flip rate -> `summarise` output as markdown: a method x flip-rate table of win rates, then each level's table."""
    pivot = ["| method | " + " | ".join(f"flip {lvl}" for lvl in noise) + " |", "|---|" + "---|" * len(noise)]
    for m in dict.fromkeys(m for v in noise.values() for m in v):
        cells = [f"{v[m]['gold/win_rate']['mean']:.3f} ± {v[m]['gold/win_rate']['std']:.3f}" if m in v else "-" for v in noise.values()]
        pivot.append(f"| {LABELS[m]} | " + " | ".join(cells) + " |")
    return ("gold win rate vs SFT at each annotator label-flip rate (same prompts and demonstrations, same SFT policy; "
            "labels, RM and every later stage rerun)\n\n" + "\n".join(pivot) + "\n" +
            "".join(f"\n### label-flip rate {lvl}\n\n" + table({LABELS[m]: s for m, s in v.items()}) for lvl, v in noise.items()))


def curves(runs: list[dict], start: dict[int, Path]) -> list[dict]:
    """Every logged evaluation of every PPO-family run: (method, seed, step, KL, gold, proxy) -> curves.csv.
    runs: dicts with method, run_seed (the run's own seed), seed (its SFT's seed) and dir (its training directory).
    proxy is the score of the RM that run trained against (for RLP the retrained RM; none for the oracle).
    A run without its own step-0 evaluation starts at its SFT's evaluation (KL 0): start[seed], an SFT eval JSON."""
    rows = []
    for run in runs:
        m, seed = run["method"], run["run_seed"]
        logged = read_metrics(run["dir"] / "metrics.jsonl")
        if run["seed"] in start and not any(r.get("step") == 0 and "gold/score" in r for r in logged):
            e = read_json(start[run["seed"]])
            own_rm = m in ("ppo", "rloo", "grpo", "contrastive")  # RLP runs train on another RM; the oracle on none
            rows.append({"method": m, "seed": seed, "step": 0, "kl": 0.0, "gold": e["gold/score"],
                         "proxy": e.get("proxy/score") if own_rm else None})
        for r in logged:
            if "gold/score" in r:  # an evaluation line: objective/kl is then the held-out KL
                rows.append({"method": m, "seed": seed, "step": r.get("step"), "kl": r["objective/kl"],
                             "gold": r["gold/score"], "proxy": r.get("proxy/score")})
    return rows


def winrates(summary: dict, run_seeds: dict[str, list[int]]) -> list[dict]:
    """winrates.csv: each run's gold win rate vs SFT and its 95% interval; run_seeds[m]: the runs' own seeds."""
    return [{"method": m, "seed": seed, **{k: r[k] for k in ("gold/win_rate", "gold/win_rate_lo", "gold/win_rate_hi")}}
            for m, v in summary.items() for seed, r in zip(run_seeds[m], v["seeds"])]


def run_diagnostics(runs: list[dict]) -> list[dict]:
    """runs.csv: per run, the mean PPO advantage variance (before whitening) over its last 10 iterations and the
    diagnostics of the RM it trained against (RM_KEYS). runs: dicts with flip_rate, method, run_seed, rm, dir."""
    rows = []
    for run in runs:
        adv = [r["ppo/advantages/var"] for r in read_metrics(run["dir"] / "metrics.jsonl") if "ppo/advantages/var" in r][-10:]
        diag = read_json(run["rm"] / "diagnostics.json") if (run["rm"] / "diagnostics.json").exists() else {}
        rows.append({"flip_rate": run["flip_rate"], "method": run["method"], "seed": run["run_seed"], "rm": run["rm"].name,
                     "advantage_var_last10": statistics.fmean(adv) if adv else None, **{k: diag.get(k) for k in RM_KEYS}})
    return rows


def write_text(path: Path, text: str) -> None:
    """Write `text` to `path` atomically."""
    atomic_write_bytes(path, [text.encode()])


def write_csv(path: Path, rows: list[dict]) -> None:
    """rows (dicts with the same keys) as CSV with a header; an empty file for no rows."""
    buf = io.StringIO()
    if rows:
        w = csv.DictWriter(buf, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    write_text(path, buf.getvalue())


def _save(fig, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(f"{path}.tmp.png", dpi=110)
    Path(f"{path}.tmp.png").replace(path)


def plots(out: Path, curve_rows: list[dict], summary: dict) -> str:
    """curves.png and winrates.png with matplotlib, or a line saying how to get them."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed: wrote the CSVs only (pip install -r requirements-plot.txt for the PNGs)"
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, key in zip(axes, ("gold", "proxy")):
        for m in dict.fromkeys(r["method"] for r in curve_rows):
            for seed in sorted({r["seed"] for r in curve_rows if r["method"] == m}):
                pts = [(r["kl"], r[key]) for r in sorted(curve_rows, key=lambda r: r["step"])  # in training order
                       if r["method"] == m and r["seed"] == seed and r[key] not in (None, "")]
                if pts and key == "proxy":  # each run's RM has its own offset: plot the gain since the run's start
                    pts = [(kl, y - pts[0][1]) for kl, y in pts]
                if pts:
                    ax.plot(*zip(*pts), marker="o", label=LABELS[m] if seed == 0 else None,
                            color=f"C{METHODS.index(m)}", alpha=0.8)
        ax.set_xlabel("KL(policy || SFT), nats per response")
        ax.set_ylabel("gold score" if key == "gold" else "proxy gain since the run's start\n(the RM each run trained against)")
        ax.legend(fontsize=7)
    _save(fig, out / "curves.png")
    fig, ax = plt.subplots(figsize=(7, 3.5))
    names = list(summary)
    means = [summary[m]["gold/win_rate"]["mean"] for m in names]
    los = [min(r["gold/win_rate_lo"] for r in summary[m]["seeds"]) for m in names]
    his = [max(r["gold/win_rate_hi"] for r in summary[m]["seeds"]) for m in names]
    ax.bar(range(len(names)), means, yerr=[[a - b for a, b in zip(means, los)], [b - a for a, b in zip(means, his)]],
           color=[f"C{METHODS.index(m)}" for m in names], capsize=4)
    ax.axhline(0.5, color="grey", lw=0.8, ls="--")
    ax.set_xticks(range(len(names)), [LABELS[m] for m in names], rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("gold win rate vs SFT")
    _save(fig, out / "winrates.png")
    plt.close("all")
    return "wrote curves.png and winrates.png"
