"""sample_baselines.py (offline samples scored once by the RM) and PPO with contrastive rewards."""
import json

import pytest
import torch
from helpers import run

from rlhf.checkpoint import load_model
from rlhf.data import read_jsonl
from rlhf.reward import score_texts
from rlhf.tasks import get_task


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
    assert rows[0]["step"] == 0 and "value/init_shift" in rows[0]  # the value model from the RM starts on the return's scale
    assert rows[0]["baseline/between_prompt_var"] >= 0 and rows[0]["baseline/within_prompt_var_over_k"] >= 0
    it = [r for r in rows if "contrastive/beats_baseline" in r]
    assert len(it) == 4 and all(-1 <= r["contrastive/adv_eos_corr"] <= 1 and 0 <= r["rollout/gold"] <= 1 for r in it)
    assert all("value/eos_error" in r and "rollout/reward_gold_corr" in r for r in it)
    lines = (d / "full.jsonl").read_text().splitlines(keepends=True)
    (tmp_path / "short.jsonl").write_text("".join(lines[1:]))
    first = json.loads(lines[0])["prompt"]
    p = run(*common, "--baselines", str(tmp_path / "short.jsonl"), "--out", str(tmp_path / "ppo2"), check=False)
    assert p.returncode != 0 and "no baselines for 1 RL prompt(s)" in p.stderr and repr(first) in p.stderr


def test_contrastive_value_model_starts_on_the_return_scale(algo):
    """--reward contrastive, value model from the RM: its output starts lowered by the mean (over distinct RL prompts)
    of the aggregated baselines, near the contrastive return r - g instead of the RM's raw offset."""
    from types import SimpleNamespace

    import train_ppo
    args = SimpleNamespace(reward="contrastive", value_shift=True, advantage="gae", value_head="separate", baseline_agg="mean",
                           rm=str(algo / "rm" / "ckpt"), lr=1e-5, vf_lr=1e-5, grad_checkpoint=False)
    baselines = {"a": torch.tensor([1.0, 2.0, 3.0]), "b": torch.tensor([0.0, 0.0, 3.0])}
    assert train_ppo.initial_value_shift(args, "rm", baselines, ["a", "b", "a"]) == pytest.approx(1.5)  # (2 + 1) / 2
    assert train_ppo.initial_value_shift(SimpleNamespace(**{**vars(args), "baseline_agg": "median"}), "rm", baselines,
                                         ["a", "b"]) == pytest.approx(1.0)  # (2 + 0) / 2
    for off in ({"value_shift": False}, {"reward": "rm"}):
        assert train_ppo.initial_value_shift(SimpleNamespace(**{**vars(args), **off}), "rm", baselines, ["a"]) == 0.0
    assert train_ppo.initial_value_shift(args, "sft", baselines, ["a"]) == 0.0
    rm, _, _ = load_model(algo / "rm" / "ckpt", "rm")
    value, _ = train_ppo.value_function(args, "rm", rm.gpt, rm, "cpu", 1.5)
    ids, mask = torch.tensor([[3, 4, 5, 6]]), torch.ones(1, 4, dtype=torch.bool)
    with torch.no_grad():
        torch.testing.assert_close(value.score(ids, mask), rm.score(ids, mask) - 1.5)


def test_mechanism_stats_by_hand():
    """Two rollouts of lengths 2 and 1: EOS is token 1 and token 0; the value error and the contrastive figures there."""
    from types import SimpleNamespace

    from rlhf.evaluation import rollout_mechanisms
    mask = torch.tensor([[True, True], [True, False]])
    adv = torch.tensor([[0.5, 2.0], [-1.0, 0.0]])
    values, returns = torch.tensor([[0.0, 1.0], [0.5, 0.0]]), torch.tensor([[0.0, 3.0], [-0.5, 0.0]])
    roll = SimpleNamespace(prompts=["reverse : a b .", "reverse : a b ."], texts=["b a .", "a b ."])
    task = get_task("algo")
    out = rollout_mechanisms(True, task, roll, torch.tensor([0.7, -0.2]), adv, values,
                                    returns, mask)
    assert out["value/eos_error"] == pytest.approx(((1.0 - 3.0) + (0.5 + 0.5)) / 2)
    assert out["contrastive/beats_baseline"] == 0.5 and out["contrastive/adv_eos_corr"] == pytest.approx(1.0)  # (2, -1) vs (0.7, -0.2)
    gold = [task.gold(p, t) for p, t in zip(roll.prompts, roll.texts)]
    assert gold[0] > gold[1] and out["rollout/gold"] == pytest.approx(sum(gold) / 2) and out["rollout/reward_gold_corr"] == pytest.approx(1.0)
    plain = rollout_mechanisms(False, None, roll, torch.tensor([0.7, -0.2]), adv, None, returns, mask)
    assert plain == {}  # no critic, no baseline, no gold judge: nothing to log
