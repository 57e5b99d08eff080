"""rlhf.config: flags from a dataclass, presets, limits, run directories, seeding, metrics."""
import json
import random
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from rlhf.config import arg, config_to_dict, parse_args, print_config
from rlhf.data import read_metrics
from rlhf.run import MetricsWriter, RunDirError, prepare_run_dir, seed_everything
from rlhf.data import DataError


@dataclass
class Args:
    batch_size: int = arg(8, "prompts per batch", ge=1)
    lr: float = arg(1e-3, "learning rate (100% Adam)", gt=0)
    whiten_rewards: bool = arg(False, "whiten the rewards")
    name: str = arg("run", "run name")
    init_from: str | None = arg(None, "checkpoint to start from")
    max_steps: int | None = arg(None, "stop after this many", ge=1)
    kl_estimator: str = arg("k1", "KL estimator", choices=["k1", "k2", "k3", "abs"])
    cliprange: float = arg(0.2, "PPO clip", ge=0, le=1)
    seeds: list[int] = arg([0], "seeds", ge=0)
    out: Path = arg(Path("runs/x"), "run directory")
    preset: str | None = arg(None, "set by --preset")


PRESETS = {"tiny": {"batch_size": 2, "lr": 3e-3}, "small": {"batch_size": 32, "kl_estimator": "k3"}}


def test_defaults():
    a = parse_args(Args, [])
    assert a == Args()


def test_dash_and_underscore_flags():
    a = parse_args(Args, ["--batch-size", "4", "--kl_estimator", "k2", "--whiten-rewards", "--init-from", "ck",
                          "--max_steps", "7", "--seeds", "1", "2", "--out", "runs/y"])
    assert (a.batch_size, a.kl_estimator, a.whiten_rewards, a.init_from, a.max_steps) == (4, "k2", True, "ck", 7)
    assert a.seeds == [1, 2] and a.out == Path("runs/y")
    assert parse_args(Args, ["--no-whiten_rewards"]).whiten_rewards is False
    assert parse_args(Args, ["--init-from", "none"]).init_from is None


def test_preset_then_explicit_flags_win():
    a = parse_args(Args, ["--preset", "tiny", "--lr", "0.5"], presets=PRESETS)
    assert (a.batch_size, a.lr, a.preset) == (2, 0.5, "tiny")
    a = parse_args(Args, ["--kl-estimator", "abs", "--preset", "small"], presets=PRESETS)  # order does not matter
    assert (a.batch_size, a.kl_estimator, a.preset) == (32, "abs", "small")
    assert parse_args(Args, [], presets=PRESETS).preset is None


def expect_exit(capsys, argv, message, presets=None):
    with pytest.raises(SystemExit) as e:
        parse_args(Args, argv, presets=presets)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert message in err, err


def test_unknown_preset_lists_names(capsys):
    expect_exit(capsys, ["--preset", "huge"], "unknown preset 'huge'; choose from: tiny, small", presets=PRESETS)


def test_limits_exit_2_with_message(capsys):
    expect_exit(capsys, ["--batch-size", "-3"], "--batch-size must be >= 1 (got -3)")
    expect_exit(capsys, ["--lr", "0"], "--lr must be > 0 (got 0.0)")
    expect_exit(capsys, ["--lr", "-1"], "--lr must be > 0 (got -1.0)")
    expect_exit(capsys, ["--lr", "nan"], "--lr must be a finite number (got nan)")
    expect_exit(capsys, ["--cliprange", "1.5"], "--cliprange must be <= 1 (got 1.5)")
    expect_exit(capsys, ["--kl-estimator", "k9"], "--kl-estimator must be one of: k1, k2, k3, abs (got 'k9')")
    expect_exit(capsys, ["--max-steps", "0"], "--max-steps must be >= 1 (got 0)")
    expect_exit(capsys, ["--seeds", "1", "-1"], "--seeds must be >= 0 (got -1)")
    expect_exit(capsys, ["--batch-size", "two"], "argument --batch-size: invalid int value: 'two'")
    expect_exit(capsys, ["--batch"], "unrecognized arguments: --batch")  # no silent abbreviations


def test_preset_values_are_checked_too(capsys):
    with pytest.raises(SystemExit):
        parse_args(Args, ["--preset", "bad"], presets={"bad": {"batch_size": 0}})
    assert "--batch-size must be >= 1 (got 0)" in capsys.readouterr().err
    with pytest.raises(ValueError, match="preset 'typo' sets 'batchsize', which is not a field of Args"):
        parse_args(Args, ["--preset", "typo"], presets={"typo": {"batchsize": 1}})


def test_post_init_errors_exit_2(capsys):
    @dataclass
    class Sized:
        batch_size: int = arg(8, "b")
        minibatch_size: int = arg(3, "m")

        def __post_init__(self):
            if self.batch_size % self.minibatch_size:
                raise ValueError(f"--batch-size {self.batch_size} is not a multiple of --minibatch-size {self.minibatch_size}")
    assert parse_args(Sized, ["--minibatch-size", "4"]).minibatch_size == 4
    with pytest.raises(SystemExit):
        parse_args(Sized, [])
    assert "--batch-size 8 is not a multiple of --minibatch-size 3" in capsys.readouterr().err


def test_help_shows_defaults(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")  # no line wrapping inside the phrases checked below
    with pytest.raises(SystemExit) as e:
        parse_args(Args, ["--help"], presets=PRESETS)
    out = capsys.readouterr().out
    assert e.value.code == 0 and "prompts per batch (default: 8)" in out and "(100% Adam)" in out
    assert "{k1,k2,k3,abs}" in out and "tiny, small" in out


def test_config_dict_and_print(capsys):
    d = config_to_dict(Args())
    assert d["out"] == "runs/x" and json.loads(json.dumps(d)) == d
    print_config(Args())
    lines = capsys.readouterr().out.splitlines()
    assert "batch_size     = 8" in lines and len({ln.index("=") for ln in lines}) == 1


def test_prepare_run_dir(tmp_path):
    run = tmp_path / "runs" / "x"
    assert prepare_run_dir(run, Args()) == run
    assert json.loads((run / "config.json").read_text())["batch_size"] == 8
    (run / "metrics.jsonl").write_text('{"step": 1}\n')
    with pytest.raises(RunDirError, match=r"x already holds a run \(config.json, metrics.jsonl\); pass --resume "
                                          r"to continue it or --overwrite to replace it"):
        prepare_run_dir(run, Args())
    prepare_run_dir(run, Args(batch_size=3), resume=True)
    cfg = json.loads((run / "config.json").read_text())
    assert (run / "metrics.jsonl").exists() and cfg["batch_size"] == 3
    # provenance: one entry for the start and one for each resume, naming this code's commit and the packages
    head = subprocess.run(["git", "-C", str(Path(__file__).resolve().parents[1]), "rev-parse", "HEAD"], capture_output=True,
                          text=True).stdout.strip() or None
    assert len(cfg["provenance"]) == 2 and all(e["git_commit"] == head for e in cfg["provenance"])
    assert cfg["provenance"][0]["torch"] == torch.__version__ and set(cfg["provenance"][0]) >= {"git_dirty", "tokenizers", "numpy"}
    (run / "ckpt").mkdir()
    prepare_run_dir(run, Args(), overwrite=True)
    assert sorted(p.name for p in run.iterdir()) == ["config.json"]


def test_overwrite_refuses_the_working_tree(tmp_path, monkeypatch):
    (tmp_path / "code.py").write_text("x")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(RunDirError, match="refusing to delete"):
        prepare_run_dir(".", Args(), overwrite=True)
    assert (tmp_path / "code.py").exists()


def test_metrics_writer_and_resume(tmp_path):
    path = tmp_path / "metrics.jsonl"
    with MetricsWriter(path) as w:
        for step in range(1, 6):
            w.log(step, {"ppo/loss/policy": torch.tensor(0.5 * step), "objective/kl": np.float32(0.25),
                         "gold/score": float("nan") if step == 3 else 1})
    rows = read_metrics(path)
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5]
    assert rows[0] == {"step": 1, "ppo/loss/policy": 0.5, "objective/kl": 0.25, "gold/score": 1}
    assert rows[2]["gold/score"] is None  # NaN is written as null
    with open(path, "a") as f:
        f.write('{"step": 6, "ppo/lo')  # a crash mid-line
    with pytest.warns(UserWarning):
        w = MetricsWriter(path, resume_step=3)
    w.log(4, {"x": 1.0})
    w.close()
    assert [r["step"] for r in read_metrics(path)] == [1, 2, 3, 4]
    MetricsWriter(path).close()  # no resume: a fresh file
    assert read_metrics(path) == []
    w = MetricsWriter(path)
    with pytest.raises(ValueError, match="shape"):
        w.log(1, {"x": torch.ones(2)})
    with pytest.raises(TypeError, match="metric 'y'"):
        w.log(1, {"y": [1]})
    w.close()
    path.write_text('{"loss": 1}\n')
    with pytest.raises(DataError, match="no integer 'step'"):
        read_metrics(path)


def test_seed_everything_determinism():
    def draws(g):
        return random.random(), np.random.rand(), torch.rand(2).tolist(), torch.rand(2, generator=g).tolist()
    a = draws(seed_everything(123))
    b = draws(seed_everything(123))
    assert a == b and a != draws(seed_everything(124))
    assert isinstance(seed_everything(2**40), torch.Generator)  # seeds beyond numpy's 32 bits are fine


def test_preset_help_shows_the_presets_values(capsys):
    import train_ppo
    with pytest.raises(SystemExit) as e:
        train_ppo.main(["--preset", "gpt2", "--help"])
    out = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    assert e.value.code == 0 and "(default: 1e-05 with --preset gpt2; 3e-05 without)" in out
    assert "--cliprange CLIPRANGE policy ratio clip (default: 0.2)" in out  # a flag the preset leaves alone
