"""DPO (rlhf/dpo.py, train_dpo.py) and the critic-free group baselines of train_ppo.py (--advantage rloo | grpo):
the equations by hand, the scripts end to end at the smoke size, bad input, and resume after SIGKILL."""
import json
import math
import shutil

import pytest
import torch
from helpers import run
from test_reliability import _err, kill_when, metrics, popen, state_step

import train_dpo
import train_ppo
from rlhf.checkpoint import load_checkpoint, load_model
from rlhf.data import read_json
from rlhf.dpo import dpo_loss, implicit_reward, sequence_logps
from rlhf.model import GPT, GPTConfig
from rlhf.tokenizer import Tokenizer


def test_dpo_loss_hand_values():
    x = torch.tensor([-3.0, -7.5, 0.0])
    assert dpo_loss(x, x - 1, x + 2, x + 1, beta=0.1).item() == pytest.approx(math.log(2))  # equal log-ratios: ln 2
    # log-ratios: chosen -1 - (-2) = 1, rejected -3 - (-2) = -1; margin 2, beta 0.5: -log sigmoid(1) = log(1 + e^-1)
    loss = dpo_loss(torch.tensor([-1.0]), torch.tensor([-3.0]), torch.tensor([-2.0]), torch.tensor([-2.0]), beta=0.5)
    assert loss.item() == pytest.approx(math.log(1 + math.exp(-1)))  # 0.31326
    pc = torch.tensor([-1.0], requires_grad=True)  # d/d pc = -beta * sigmoid(-beta * margin): raising chosen lowers it
    dpo_loss(pc, torch.tensor([-3.0]), torch.tensor([-2.0]), torch.tensor([-2.0]), beta=0.5).backward()
    assert pc.grad.item() == pytest.approx(-0.5 / (1 + math.e))
    big = dpo_loss(torch.tensor([0.0]), torch.tensor([-1e6]), torch.tensor([0.0]), torch.tensor([0.0]), beta=1.0)
    assert big.item() == 0.0 and torch.isfinite(dpo_loss(torch.tensor([-1e6]), torch.tensor([0.0]), torch.zeros(1), torch.zeros(1), 1.0))
    assert torch.allclose(implicit_reward(torch.tensor([-1.0, -4.0]), torch.tensor([-2.0, -2.0]), 0.1), torch.tensor([0.1, -0.2]))


def test_sequence_logps_is_the_sum_of_the_response_tokens_log_probs():
    torch.manual_seed(0)
    tok = Tokenizer.train(["write a story about a cat .", "the cat sat on the mat ."] * 10, vocab_size=300)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=48, n_layer=2, n_head=2, n_embd=32)).eval()
    prompts, responses = ["write a story", "a cat"], ["the cat sat .", "on the mat"]
    got = sequence_logps(model, tok, prompts, responses, "cpu")
    for i, (p, r) in enumerate(zip(prompts, responses)):  # one unpadded sequence at a time, by hand
        q, y = tok.encode_prompt(p), tok.encode_responses([r])[0]
        with torch.no_grad():
            logp = model(torch.tensor([q + y]))[0].log_softmax(-1)  # (T, V)
        want = sum(logp[len(q) - 1 + t, y[t]].item() for t in range(len(y)))  # token t is predicted at position |q| - 1 + t
        assert got[i].item() == pytest.approx(want, abs=1e-4)


def test_train_dpo_learns_the_labels_and_writes_a_policy(algo, tmp_path):
    run("train_dpo.py", "--preset", "smoke", "--data", str(algo / "data"), "--sft", str(algo / "sft" / "ckpt"),
        "--out", str(tmp_path / "dpo"), "--threads", "1")
    diag = read_json(tmp_path / "dpo" / "diagnostics.json")
    assert diag["dpo/n_pairs"] == 200 and 0 <= diag["dpo/gold_accuracy"] <= 1
    assert diag["dpo/margin"] > 0 and diag["dpo/loss"] < math.log(2)  # the held-out implicit reward orders the pairs
    rows = metrics(tmp_path / "dpo")
    assert rows[0]["dpo/loss"] == pytest.approx(math.log(2), abs=0.02)  # the policy starts as its reference
    policy, _, cfg = load_model(tmp_path / "dpo" / "ckpt", "policy")  # a policy checkpoint, as evaluate.py reads it
    sft, _ = load_checkpoint(algo / "sft" / "ckpt")
    assert cfg["stage"] == "dpo" and not all(torch.equal(v, sft[k]) for k, v in policy.state_dict().items())


def test_dpo_bad_input(algo, tmp_path, capsys):
    (tmp_path / "nopairs").mkdir()
    shutil.copy(algo / "data" / "meta.json", tmp_path / "nopairs" / "meta.json")
    base = ["--preset", "smoke", "--sft", str(algo / "sft" / "ckpt")]
    assert _err(train_dpo.main, base + ["--data", str(tmp_path / "nopairs"), "--out", str(tmp_path / "a")]) == \
        f"{tmp_path / 'nopairs' / 'preferences.jsonl'}: no such file"
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "p", "chosen": "a"}) + "\n")
    assert _err(train_dpo.main, base + ["--data", str(algo / "data"), "--pairs", str(bad), "--out", str(tmp_path / "b")]) == \
        f"{bad}:1: missing field 'rejected'"
    for flags, message in ((["--beta", "0"], "--beta must be > 0.0 (got 0.0)"), (["--beta", "inf"], "--beta must be a finite number")):
        with pytest.raises(SystemExit) as e:
            train_dpo.main(base + flags)
        assert e.value.code == 2 and message in capsys.readouterr().err


def test_dpo_killed_and_resumed_matches_uninterrupted(algo, tmp_path):
    common = ["train_dpo.py", "--preset", "smoke", "--data", str(algo / "data"), "--sft", str(algo / "sft" / "ckpt"),
              "--epochs", "0.3", "--ckpt-every", "10", "--eval-every", "25", "--threads", "1"]
    run(*common, "--out", str(tmp_path / "full"))
    killed = tmp_path / "killed"
    assert kill_when(popen(*common, "--out", str(killed)), lambda: state_step(killed / "ckpt") >= 20), \
        "the run ended before it could be killed"
    run(*common, "--out", str(killed), "--resume")
    assert metrics(killed) == metrics(tmp_path / "full")
    a, _ = load_checkpoint(tmp_path / "full" / "ckpt")
    b, _ = load_checkpoint(killed / "ckpt")
    assert all(torch.equal(a[k], b[k]) for k in a)


# ---- RLOO and GRPO in train_ppo.py -------------------------------------------------------------------------

@pytest.mark.parametrize("flags, message", [
    (["--advantage", "rloo"], "--advantage rloo needs --group-size 2 or more (got 1)"),
    (["--advantage", "grpo", "--group-size", "1"], "--advantage grpo needs --group-size 2 or more (got 1)"),
    (["--group-size", "5"], "--group-size 5 must divide --batch-size 64"),
    (["--advantage", "grpo", "--group-size", "4", "--reward", "contrastive"], "--reward contrastive with --advantage grpo"),
    (["--advantage", "a2c"], "--advantage must be one of: gae, rloo, grpo (got 'a2c')"),
])
def test_group_baseline_flags_exit_2_naming_the_flag(capsys, flags, message):
    with pytest.raises(SystemExit) as e:
        train_ppo.main(flags)
    assert e.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.parametrize("advantage", ["rloo", "grpo"])
def test_rloo_and_grpo_run_without_a_critic_and_resume_after_sigkill(algo, tmp_path, advantage):
    common = ["train_ppo.py", "--preset", "smoke", "--data", str(algo / "data"), "--sft", str(algo / "sft" / "ckpt"),
              "--rm", str(algo / "rm" / "ckpt"), "--advantage", advantage, "--group-size", "4", "--steps", "12",
              "--ckpt-every", "3", "--eval-every", "6", "--n-eval", "16", "--threads", "1"]
    run(*common, "--out", str(tmp_path / "full"))
    rows = metrics(tmp_path / "full")
    assert [r["step"] for r in rows] == list(range(13)) and all("ppo/loss/value" not in r for r in rows)
    assert all(("ppo/loss/kl" in r) == (advantage == "grpo") for r in rows[1:])  # GRPO: the KL is a loss term
    assert sorted(p.name for p in (tmp_path / "full" / "ckpt").iterdir()) == [
        "config.json", "model.safetensors", "optimizer.safetensors", "state.json", "tokenizer.json"]  # no value model
    killed = tmp_path / "killed"
    assert kill_when(popen(*common, "--out", str(killed)), lambda: state_step(killed / "ckpt") >= 6), \
        "the run ended before it could be killed"
    run(*common, "--out", str(killed), "--resume")
    assert metrics(killed) == rows
