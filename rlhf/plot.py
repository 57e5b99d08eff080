"""The pictures, as PNGs (matplotlib optional: pip install -r requirements-plot.txt): a run's main curves from its
metrics.jsonl (plot_run, the command below), and reproduce.py's curves.png, winrates.png and frontier.png (plots,
frontier_plot) from the numbers rlhf.report computes.

Usage:
    python -m rlhf.plot runs/ppo                  # -> runs/ppo/curves.png (and gold_vs_kl.png for PPO)
    python -m rlhf.plot runs/rm --out pictures/   # any run directory of train_sft, train_rm, train_dpo, train_ppo

Each panel draws the keys of its group that the run logged (the README's metric glossary says what each is):
training loss and accuracy, learning rate and speed for SFT, the RM and DPO; score, KL, losses, entropy and the
held-out gold and proxy scores for PPO, RLOO and GRPO; and, for those, gold and proxy against KL (the
over-optimisation picture). A panel with no logged key is left out.
"""
from __future__ import annotations

import sys
from pathlib import Path

from rlhf.data import DataError, read_metrics
from rlhf.report import LABELS, METHODS, frontier_band, run_curve, runs_by_seed

PANELS = [  # (title, keys): each key one line against the step
    ("loss", ["sft/loss", "rm/loss", "dpo/loss", "val/loss", "ppo/loss/policy", "ppo/loss/value", "ppo/loss/kl"]),
    ("accuracy", ["rm/train_accuracy", "dpo/accuracy", "val/accuracy", "val/gold_accuracy"]),
    ("reward", ["objective/score", "dpo/margin", "val/margin", "proxy/score", "gold/score"]),
    ("KL and entropy", ["objective/kl", "objective/entropy", "ppo/policy/approxkl"]),
    ("learning rate", ["sft/lr", "rm/lr", "dpo/lr"]),
    ("speed", ["sft/tokens_per_s", "rm/pairs_per_s", "dpo/pairs_per_s"]),
]


def series(rows: list[dict]) -> dict[str, dict[str, tuple[list[int], list[float]]]]:
    """panel title -> key -> (steps, values) of every row that logged a number under the key (None and NaN left
    out). Evaluation keys (gold/score, proxy/score) appear only on evaluation rows; that is what they plot."""
    out = {}
    for title, keys in PANELS:
        lines = {}
        for k in keys:
            pts = [(r["step"], float(r[k])) for r in rows if isinstance(r.get(k), (int, float)) and not isinstance(r.get(k), bool)
                   and r[k] == r[k]]
            if pts:
                lines[k] = tuple(map(list, zip(*pts)))
        if lines:
            out[title] = lines
    return out


def gold_vs_kl(rows: list[dict]) -> dict[str, tuple[list[float], list[float]]]:
    """The evaluation rows of a PPO-family run: key -> (held-out KL, score) for gold/score and proxy/score."""
    evals = [r for r in rows if isinstance(r.get("objective/kl"), (int, float)) and ("gold/score" in r or "proxy/score" in r)]
    return {k: tuple(map(list, zip(*[(r["objective/kl"], r[k]) for r in evals if isinstance(r.get(k), (int, float))])))
            for k in ("gold/score", "proxy/score") if any(isinstance(r.get(k), (int, float)) for r in evals)}


def plot_run(run_dir, out_dir=None) -> list[Path]:
    """Write curves.png (and gold_vs_kl.png when the run logged held-out evaluations) -> the files written."""
    run_dir = Path(run_dir)
    rows = read_metrics(run_dir / "metrics.jsonl")
    panels = series(rows)
    if not panels:
        raise DataError(f"{run_dir / 'metrics.jsonl'}: none of the keys this plots ({', '.join(k for _, ks in PANELS for k in ks)})")
    plt = _pyplot()
    if plt is None:
        raise SystemExit("error: matplotlib is not installed; pip install -r requirements-plot.txt (optional, for the "
                         "pictures only)")
    out = Path(out_dir) if out_dir else run_dir
    out.mkdir(parents=True, exist_ok=True)
    cols = min(3, len(panels))
    fig, axes = plt.subplots((len(panels) + cols - 1) // cols, cols, figsize=(4.5 * cols, 3.2 * ((len(panels) + cols - 1) // cols)),
                             squeeze=False)
    for ax, (title, lines) in zip(axes.flat, panels.items()):
        for k, (x, y) in lines.items():
            ax.plot(x, y, label=k, marker="o" if len(x) < 20 else None, ms=3)
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    written = [_save(fig, out / "curves.png")]
    curve = gold_vs_kl(rows)
    if curve:
        fig, ax = plt.subplots(figsize=(5, 3.5))
        for k, (x, y) in curve.items():
            ax.plot(x, y, marker="o", label=k)
        ax.set_xlabel("held-out KL(policy || reference), nats per response")
        ax.set_ylabel("score")
        ax.legend(fontsize=8)
        written.append(_save(fig, out / "gold_vs_kl.png"))
    plt.close("all")
    return written


def _pyplot():
    """matplotlib.pyplot on the Agg backend, or None when matplotlib is not installed."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def _gold_and_proxy_axes(axes) -> None:
    for ax, key in zip(axes, ("gold", "proxy")):
        ax.set_xlabel("KL(policy || SFT), nats per response")
        ax.set_ylabel("gold score" if key == "gold" else "proxy gain since the run's start\n(the RM each run trained against)")
        ax.legend(fontsize=7)


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=110)
    tmp.replace(path)  # atomic: a reader never sees half a picture
    return path


def plots(out: Path, curve_rows: list[dict], summary: dict) -> str:
    """curves.png and winrates.png with matplotlib, or a line saying how to get them."""
    plt = _pyplot()
    if plt is None:
        return "matplotlib is not installed: wrote the CSVs only (pip install -r requirements-plot.txt for the PNGs)"
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, key in zip(axes, ("gold", "proxy")):
        for m in dict.fromkeys(r["method"] for r in curve_rows):
            first = True
            for by_coef in runs_by_seed(curve_rows, m).values():  # one line per run: each seed at each KL coefficient
                for rows in by_coef.values():
                    pts = run_curve(rows, key)
                    if pts and key == "proxy":  # each run's RM has its own offset: plot the gain since the run's start
                        pts = [(kl, y - pts[0][1]) for kl, y in pts]
                    if pts:
                        ax.plot(*zip(*pts), marker="o", label=LABELS[m] if first else None,
                                color=f"C{METHODS.index(m)}", alpha=0.8)
                        first = False
    _gold_and_proxy_axes(axes)
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


def frontier_plot(out: Path, curve_rows: list[dict], base: str = "ppo") -> str:
    """frontier.png, Gao et al. 2022's picture for every method: one column a method, gold (top) and the proxy's gain
    since the run's start (bottom) against KL; the line is the mean over seeds of each seed's frontier and the band
    their range (frontier_band); PPO's mean is drawn dashed in every column, SFT's gold (where each band starts) dotted."""
    plt = _pyplot()
    if plt is None:
        return "matplotlib is not installed: frontier.csv only (pip install -r requirements-plot.txt for frontier.png)"
    methods = list(dict.fromkeys(r["method"] for r in curve_rows))
    if not methods:
        return "no logged curves: no frontier.png"
    fig, axes = plt.subplots(2, len(methods), figsize=(2.6 * len(methods) + 1, 5.5), sharex=True, sharey="row",
                             squeeze=False)
    for row, key in enumerate(("gold", "proxy")):
        ref = frontier_band(curve_rows, base, key) if base in methods else None
        for col, m in enumerate(methods):
            ax, band = axes[row][col], frontier_band(curve_rows, m, key)
            if band is None or not band[0]:
                continue
            xs, mean, lo, hi, n = band
            color = f"C{METHODS.index(m)}"
            ax.fill_between(xs, lo, hi, color=color, alpha=0.25, lw=0)
            ax.plot(xs, mean, color=color, label=f"mean of {n} seeds (band: range)")
            if ref and m != base:
                ax.plot(ref[0], ref[1], color="black", ls="--", lw=1, label=LABELS[base])
            if key == "gold":  # every run starts at SFT's evaluation: the band's start is SFT's gold
                ax.axhline(mean[0], color="grey", ls=":", lw=1, label="SFT")
            if row == 0:
                ax.set_title(LABELS[m], fontsize=9)
            else:
                ax.set_xlabel("KL(policy || SFT), nats")
            ax.legend(fontsize=6, loc="lower right" if key == "gold" else "upper left")
    axes[0][0].set_ylabel("gold score")
    axes[1][0].set_ylabel("proxy gain since the run's start\n(the RM each run trained against)")
    _save(fig, out / "frontier.png")
    plt.close("all")
    return "wrote frontier.png"


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help") or len(argv) not in (1, 3) or (len(argv) == 3 and argv[1] != "--out"):
        sys.exit("usage: python -m rlhf.plot RUN_DIR [--out DIR]   (curves.png from RUN_DIR/metrics.jsonl; matplotlib optional)")
    try:
        for p in plot_run(argv[0], argv[2] if len(argv) == 3 else None):
            print(f"wrote {p}")
    except ValueError as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
