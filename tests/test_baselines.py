"""sample_baselines.py (offline samples scored once by the RM) and PPO with contrastive rewards."""
import json

import pytest
import torch
from helpers import run

from rlhf.checkpoint import load_model
from rlhf.data import read_jsonl
from rlhf.reward import score_texts


@pytest.fixture(scope="module")
def baselines(algo, tmp_path_factory):
    d = tmp_path_factory.mktemp("baselines")
    args = ["sample_baselines.py", "--policy", str(algo / "sft" / "ckpt"), "--rm", str(algo / "rm" / "ckpt"),
            "--prompts", str(algo / "data" / "prompts_rl.jsonl"), "--k", "3", "--max-new-tokens", "16", "--batch-size", "8"]
    run(*args, "--out", str(d / "full.jsonl"))
    return d, args


def test_samples_file_round_trip(algo, baselines):
    d, _ = baselines
    rows = read_jsonl(d / "full.jsonl", "samples")
    prompts = [r["prompt"] for r in read_jsonl(algo / "data" / "prompts_rl.jsonl", "prompts")]
    assert [r["prompt"] for r in rows] == list(dict.fromkeys(prompts))
    assert all(len(r["responses"]) == len(r["rewards"]) == 3 for r in rows)
    # the stored rewards are the RM's scores of the stored responses
    rm, tok, _ = load_model(algo / "rm" / "ckpt", "rm")
    p = [r["prompt"] for r in rows[:5] for _ in range(3)]
    y = [t for r in rows[:5] for t in r["responses"]]
    torch.testing.assert_close(score_texts(rm, tok, p, y), torch.tensor([x for r in rows[:5] for x in r["rewards"]]),
                               atol=1e-4, rtol=1e-4)
    assert json.loads((d / "full.jsonl.meta.json").read_text())["k"] == 3


def test_partial_file_is_continued_not_resampled(baselines):
    d, args = baselines
    lines = (d / "full.jsonl").read_text().splitlines(keepends=True)
    # a crash after the first chunk (8 prompts) and in the middle of writing a line
    (d / "part.jsonl").write_text("".join(lines[:8]) + lines[8][:20])
    (d / "part.jsonl.meta.json").write_text((d / "full.jsonl.meta.json").read_text())
    p = run(*args, "--out", str(d / "part.jsonl"))
    assert "8 of 64 prompts already sampled" in p.stdout
    assert (d / "part.jsonl").read_text() == (d / "full.jsonl").read_text()
    # other settings on an existing output are refused, naming what differs
    bad = run(*args[:-2], "--batch-size", "4", "--out", str(d / "part.jsonl"), check=False)
    assert bad.returncode != 0 and "other settings (batch_size)" in bad.stderr


def test_ppo_contrastive_runs_and_missing_prompt_is_an_error(algo, baselines, tmp_path):
    d, _ = baselines
    common = ["train_ppo.py", "--preset", "smoke", "--data", str(algo / "data"), "--sft", str(algo / "sft" / "ckpt"),
              "--rm", str(algo / "rm" / "ckpt"), "--reward", "contrastive", "--steps", "4", "--eval-every", "4"]
    run(*common, "--baselines", str(d / "full.jsonl"), "--out", str(tmp_path / "ppo"))
    rows = [json.loads(line) for line in (tmp_path / "ppo" / "metrics.jsonl").open()]
    assert any("ppo/advantages/var" in r for r in rows)
    lines = (d / "full.jsonl").read_text().splitlines(keepends=True)
    (tmp_path / "short.jsonl").write_text("".join(lines[1:]))
    first = json.loads(lines[0])["prompt"]
    p = run(*common, "--baselines", str(tmp_path / "short.jsonl"), "--out", str(tmp_path / "ppo2"), check=False)
    assert p.returncode != 0 and "no baselines for 1 RL prompt(s)" in p.stderr and repr(first) in p.stderr
