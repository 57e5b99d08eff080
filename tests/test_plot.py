"""python -m rlhf.plot (the run's curves as PNGs) and --tensorboard (the same numbers as TensorBoard scalars)."""
import json

import pytest
from helpers import run

from rlhf.plot import gold_vs_kl, main as plot_cli, series
from rlhf.data import read_metrics


def test_series_reads_each_panels_logged_keys_and_skips_missing_values():
    rows = [{"step": 0, "gold/score": 0.5, "proxy/score": 1.0, "objective/kl": 0.0},
            {"step": 1, "objective/score": 1.2, "objective/kl": 0.3, "ppo/loss/policy": -0.1, "ppo/loss/value": None},
            {"step": 2, "objective/score": 1.4, "objective/kl": 0.6, "ppo/loss/policy": float("nan"), "gold/score": 0.6,
             "proxy/score": 1.5}]
    s = series(rows)
    assert s["reward"]["objective/score"] == ([1, 2], [1.2, 1.4]) and s["reward"]["gold/score"] == ([0, 2], [0.5, 0.6])
    assert s["loss"] == {"ppo/loss/policy": ([1], [-0.1])}  # None and NaN left out; a key never logged, no line
    assert "accuracy" not in s and "learning rate" not in s  # panels with no logged key are left out
    assert gold_vs_kl(rows) == {"gold/score": ([0.0, 0.6], [0.5, 0.6]), "proxy/score": ([0.0, 0.6], [1.0, 1.5])}


def test_plot_cli_writes_pngs_or_says_how_to_get_them(algo, tmp_path, capsys):
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        with pytest.raises(SystemExit, match="matplotlib is not installed; pip install -r requirements-plot.txt"):
            plot_cli([str(algo / "sft"), "--out", str(tmp_path)])
        return
    plot_cli([str(algo / "rm"), "--out", str(tmp_path / "rm")])
    assert (tmp_path / "rm" / "curves.png").read_bytes()[:4] == b"\x89PNG" and not (tmp_path / "rm" / "gold_vs_kl.png").exists()
    with pytest.raises(SystemExit, match="usage: python -m rlhf.plot RUN_DIR"):
        plot_cli([])
    with pytest.raises(SystemExit, match="metrics.jsonl: no such file"):
        plot_cli([str(tmp_path / "nothing")])


def test_tensorboard_scalars_equal_metrics_jsonl(algo, tmp_path):
    try:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    except ImportError:
        pytest.skip("tensorboard is not installed (optional, requirements-tensorboard.txt): --tensorboard is checked only where it is")
    out = tmp_path / "sft"
    run("train_sft.py", "--preset", "smoke", "--data", str(algo / "data"), "--out", str(out), "--steps", "12", "--n-eval", "0",
        "--log-every", "5", "--threads", "1", "--tensorboard")
    acc = EventAccumulator(str(out / "tensorboard"))
    acc.Reload()
    rows = read_metrics(out / "metrics.jsonl")
    for key in ("sft/loss", "sft/lr"):
        want = [(r["step"], r[key]) for r in rows if isinstance(r.get(key), float)]
        assert [(e.step, pytest.approx(e.value, rel=1e-6)) for e in acc.Scalars(key)] == want, key
    assert json.loads((out / "config.json").read_text())["tensorboard"] is True
