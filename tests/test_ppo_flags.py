"""One tiny end-to-end train_ppo.py run per feature flag (openai/lm-human-preferences' habit), on the session's
smoke algo artefacts (conftest.py `algo`). Each run is 3-4 iterations of 8 rollouts, one minibatch and one PPO
epoch, and each test asserts from metrics.jsonl / config.json something that would not hold if its flag were
ignored. Seconds each.

Facts of train_ppo.py the assertions lean on:
 - iteration 1 samples from the SFT weights, so policy and reference log-probs agree exactly: objective/kl is 0,
   and two runs that differ only in how the KL penalty is shaped (or in what happens after GAE) see the same
   rollouts at iteration 1, and (when the KL penalty had no effect there) at iteration 2 too;
 - with one minibatch and one epoch the update's only forward runs on the rollout weights: the PPO ratio is 1
   (ppo/policy/approxkl 0), so ppo/loss/policy is minus the mean advantage over real tokens;
 - the gold judge of the algo task scores in [0, 1];
 - the row of the last iteration also holds the held-out evaluation, whose "objective/kl" (KL on held-out
   prompts) replaces the rollout KL that the KL controller saw; controller checks read the other rows.
"""
import json

import pytest
from helpers import run

B = 8  # rollouts per iteration
SIZE = ["--steps", "3", "--batch-size", str(B), "--minibatches", "1", "--ppo-epochs", "1", "--lr", "3e-4",
        "--vf-lr", "3e-4", "--max-new-tokens", "16", "--eval-every", "3", "--n-eval", "4", "--sample-every", "100",
        "--ckpt-every", "100", "--threads", "1"]


def ppo(algo, out, *flags, preset="smoke"):
    """train_ppo.py on the gold reward at the sizes above (later flags win); returns the per-iteration rows."""
    run("train_ppo.py", "--preset", preset, "--data", str(algo / "data"), "--sft", str(algo / "sft" / "ckpt"),
        "--reward", "gold", "--out", str(out), *SIZE, *flags)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").open()]
    its = [r for r in rows if "objective/score" in r]
    assert [r["step"] for r in its] == list(range(1, len(its) + 1)) and its, [r["step"] for r in rows]
    return its


def config(out):
    cfg = json.loads((out / "config.json").read_text())
    return cfg.get("args", cfg)  # the run directory's config.json holds the args themselves


@pytest.fixture(scope="module")
def baseline(algo, tmp_path_factory):
    """The same run with every flag at its default: the control the flags are compared against."""
    out = tmp_path_factory.mktemp("ppo_flags") / "baseline"
    return ppo(algo, out), config(out)


def test_reward_clip(algo, baseline, tmp_path):
    c = 1e-3
    its = ppo(algo, tmp_path / "clip", "--reward-clip", str(c))
    assert config(tmp_path / "clip")["reward_clip"] == c
    # every rollout's score is clipped to [-c, c], so their mean is too
    assert all(-c - 1e-9 <= r["objective/score"] <= c + 1e-9 for r in its), [r["objective/score"] for r in its]
    # ... which the same run without --reward-clip is not (gold scores reach 1)
    base, _ = baseline
    assert max(abs(r["objective/score"]) for r in base) > 10 * c, [r["objective/score"] for r in base]


def test_missing_eos_penalty_no_response_stops(algo, tmp_path):
    """One new token: no response reaches EOS, so every score is the penalty (gold would give a value in [0, 1])."""
    p = -0.5
    its = ppo(algo, tmp_path / "eos", "--missing-eos-penalty", str(p), "--max-new-tokens", "1")
    assert all(r["ppo/stopped"] == 0.0 for r in its), [r["ppo/stopped"] for r in its]
    assert all(r["objective/score"] == p for r in its), [r["objective/score"] for r in its]


def test_missing_eos_penalty_keeps_stopped_scores(algo, tmp_path):
    """Six new tokens: some responses stop, some do not. With the stopped fraction s and gold in [0, 1], the mean
    score is p (1 - s) plus at most s: the cut responses get p, the stopped ones keep their gold score."""
    p = -100.0
    its = ppo(algo, tmp_path / "eos_mixed", "--missing-eos-penalty", str(p), "--max-new-tokens", "6")
    assert any(0.0 < r["ppo/stopped"] < 1.0 for r in its), ("no iteration with both stopped and cut responses",
                                                           [r["ppo/stopped"] for r in its])
    for r in its:
        s = r["ppo/stopped"]
        assert p * (1 - s) - 1e-4 <= r["objective/score"] <= p * (1 - s) + s + 1e-4, (r["step"], s, r["objective/score"])


def test_whiten_advantages(algo, baseline, tmp_path):
    """One minibatch, one epoch, ratio 1: ppo/loss/policy = -(mean advantage). Whitened (the default) that mean
    is 0; --no-whiten-advantages leaves the GAE advantages, whose mean is not."""
    base, base_cfg = baseline
    its = ppo(algo, tmp_path / "raw", "--no-whiten-advantages")
    assert base_cfg["whiten_advantages"] is True and config(tmp_path / "raw")["whiten_advantages"] is False
    assert all(r["ppo/policy/approxkl"] == 0.0 for r in base + its)  # the ratio was 1: the identity above holds
    # the same rollouts at iteration 1 (ppo/advantages/var is taken before whitening)
    assert its[0]["ppo/advantages/var"] == pytest.approx(base[0]["ppo/advantages/var"], rel=1e-6)
    assert all(abs(r["ppo/loss/policy"]) < 1e-5 for r in base), [r["ppo/loss/policy"] for r in base]
    assert abs(its[0]["ppo/loss/policy"]) > 1e-2, its[0]["ppo/loss/policy"]


def test_adaptive_kl_controller(algo, baseline, tmp_path):
    """--kl-target: beta <- beta * (1 + clip(KL / target - 1, -0.2, 0.2) * B / horizon) after every iteration.
    A large lr makes the policy leave the reference at once, so KL > target (beta rises) from iteration 2;
    at iteration 1 KL is 0 < target (beta falls)."""
    beta0, target, horizon = 0.05, 0.1, 40
    its = ppo(algo, tmp_path / "adaptive", "--kl-coef", str(beta0), "--kl-target", str(target),
              "--kl-horizon", str(horizon), "--lr", "3e-3", "--steps", "4", "--eval-every", "4")
    beta = beta0
    for r in its[:-1]:  # the last row's objective/kl is the held-out one (module docstring)
        e = min(max(r["objective/kl"] / target - 1.0, -0.2), 0.2)
        assert r["objective/kl_coef"] == pytest.approx(beta * (1.0 + e * B / horizon), rel=1e-9), (r["step"], r)
        beta = r["objective/kl_coef"]
    last = its[-1]["objective/kl_coef"]
    assert last != beta and abs(last / beta - 1.0) <= 0.2 * B / horizon + 1e-12
    assert its[0]["objective/kl"] == pytest.approx(0.0, abs=1e-6) and its[0]["objective/kl_coef"] < beta0
    rises = [(a, b) for a, b in zip(its, its[1:-1]) if b["objective/kl"] > 1.2 * target]
    assert rises and all(b["objective/kl_coef"] > a["objective/kl_coef"] for a, b in rises), [
        (r["objective/kl"], r["objective/kl_coef"]) for r in its]
    # without --kl-target the coefficient is the constant --kl-coef
    base, _ = baseline
    assert all(r["objective/kl_coef"] == beta0 for r in base), [r["objective/kl_coef"] for r in base]


def test_clamp_kl(algo, tmp_path):
    """--clamp-kl drops the KL bonus of tokens the policy finds less likely than the reference. Iteration 1 has
    KL 0 everywhere (identical runs), so iteration 2 samples the same rollouts in both runs; there the shaped
    rewards, hence the advantages, differ. A large --kl-coef makes the difference plain."""
    on = ppo(algo, tmp_path / "on", "--kl-coef", "1.0", "--clamp-kl")
    off = ppo(algo, tmp_path / "off", "--kl-coef", "1.0", "--no-clamp-kl")
    assert on[0]["objective/kl"] == pytest.approx(0.0, abs=1e-6)
    assert on[0]["ppo/advantages/var"] == pytest.approx(off[0]["ppo/advantages/var"], rel=1e-6)
    assert on[1]["objective/kl"] == pytest.approx(off[1]["objective/kl"], rel=1e-6, abs=1e-9)  # same rollouts
    a, b = on[1]["ppo/advantages/var"], off[1]["ppo/advantages/var"]
    assert abs(a - b) > 1e-2 * abs(b), (a, b)


def test_alpacafarm_preset(algo, tmp_path):
    """--preset alpacafarm with explicit sizes (explicit flags win): its values reach the run, and its
    missing-EOS penalty is live: with two new tokens no response stops, so every score is -10."""
    out = tmp_path / "alpacafarm"
    run("train_ppo.py", "--preset", "alpacafarm", "--data", str(algo / "data"), "--sft", str(algo / "sft" / "ckpt"),
        "--rm", str(algo / "rm" / "ckpt"), "--out", str(out), *SIZE, "--max-new-tokens", "2")
    cfg = config(out)
    expected = dict(preset="alpacafarm", kl_coef=0.0067, clamp_kl=True, whiten_rewards=True, whiten_advantages=True,
                    lam=1.0, gamma=1.0, missing_eos_penalty=-10.0, reward="rm", kl_target=None,
                    steps=3, lr=3e-4, max_new_tokens=2)
    assert {k: cfg[k] for k in expected} == expected
    rows = [json.loads(line) for line in (out / "metrics.jsonl").open()]
    its = [r for r in rows if "objective/score" in r]
    assert [r["step"] for r in its] == [1, 2, 3]
    assert all(r["ppo/stopped"] == 0.0 and r["objective/score"] == -10.0 for r in its), [
        (r["ppo/stopped"], r["objective/score"]) for r in its]
    assert all(r["objective/kl_coef"] == 0.0067 for r in its)
    assert [r["step"] for r in rows if "proxy/score" in r] == [0, 3]
    assert (out / "ckpt" / "model.safetensors").exists()


def test_onpolicy_pairs_along_the_curve_and_first_rm(algo, tmp_path):
    """Each evaluation scores the RM on all C(n, 2) pairs of n samples per held-out prompt, and --first-rm a second RM
    on the same pairs (here the same RM again: the same accuracy)."""
    rm = str(algo / "rm" / "ckpt")
    its = ppo(algo, tmp_path / "p", "--reward", "rm", "--rm", rm, "--first-rm", rm, "--onpolicy-samples", "3")
    ev = its[-1]
    assert 0 < ev["rm/onpolicy_pairs"] <= 3 * 4 and ev["rm_first/onpolicy_pairs"] == ev["rm/onpolicy_pairs"]
    assert ev["rm_first/onpolicy_gold_accuracy"] == ev["rm/onpolicy_gold_accuracy"]
    p = run("train_ppo.py", "--preset", "smoke", "--data", str(algo / "data"), "--sft", str(algo / "sft" / "ckpt"), "--rm", rm,
            "--onpolicy-samples", "1", "--out", str(tmp_path / "bad"), check=False)
    assert p.returncode == 2 and "--onpolicy-samples 1" in p.stderr
