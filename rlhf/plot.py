"""A run's main curves from its metrics.jsonl, as PNGs (matplotlib optional: pip install -r requirements-plot.txt).

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

from rlhf.data import DataError
from rlhf.data import read_metrics

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
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SystemExit("error: matplotlib is not installed; pip install -r requirements-plot.txt (optional, for the "
                         "pictures only)") from None
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


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=110)
    tmp.replace(path)  # atomic: a reader never sees half a picture
    return path


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
