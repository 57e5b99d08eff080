"""The scripts end to end on the algo task with the smoke preset: seconds each."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from helpers import ROOT, run


def test_prepare_data_files(algo):
    data = algo / "data"
    for name in ("sft", "preferences", "prompts_rl", "prompts_unlabelled", "prompts_eval"):
        assert (data / f"{name}.jsonl").stat().st_size > 0
    meta = json.loads((data / "meta.json").read_text())
    assert meta["task"] == "algo" and meta["sizes"]["sft"] == 3000
    assert 0.6 < meta["pairs"]["label_gold_agreement"] < 1.0
    evals = {json.loads(line)["prompt"] for line in (data / "prompts_eval.jsonl").open()}
    train = {json.loads(line)["prompt"] for f in ("sft", "preferences", "prompts_rl") for line in (data / f"{f}.jsonl").open()}
    assert not evals & train


def test_sft_learns_and_reports_gold(algo):
    report = json.loads((algo / "sft" / "eval.json").read_text())
    rows = [json.loads(line) for line in (algo / "sft" / "metrics.jsonl").open()]
    losses = [r["sft/loss"] for r in rows if "sft/loss" in r]
    assert losses[-1] < 0.5 * losses[0]
    # random letters would score about 1/8 per position; the smoke policy must do clearly better
    assert report["gold/score"] > 0.2 and report["gold/reference"] == 1.0
    assert (algo / "sft" / "ckpt" / "model.safetensors").exists()


def test_existing_run_refused(algo):
    p = run("train_sft.py", "--preset", "smoke", "--data", str(algo / "data"), "--out", str(algo / "sft"), check=False)
    assert p.returncode != 0 and "--resume" in p.stderr + p.stdout


def test_sft_resume_after_kill_matches_uninterrupted(algo, tmp_path):
    common = ["train_sft.py", "--preset", "smoke", "--data", str(algo / "data"), "--steps", "80",
              "--ckpt-every", "20", "--n-eval", "0", "--threads", "1"]
    run(*common, "--out", str(tmp_path / "full"))
    proc = subprocess.Popen([sys.executable, *common, "--out", str(tmp_path / "killed")], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state = tmp_path / "killed" / "ckpt" / "state.json"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if state.exists() and json.loads(state.read_text())["step"] >= 20:
            break
        time.sleep(0.05)
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    run(*common, "--out", str(tmp_path / "killed"), "--resume")
    full = [json.loads(line) for line in (tmp_path / "full" / "metrics.jsonl").open()]
    resumed = [json.loads(line) for line in (tmp_path / "killed" / "metrics.jsonl").open()]
    f = {r["step"]: r["sft/loss"] for r in full if "sft/loss" in r}
    g = {r["step"]: r["sft/loss"] for r in resumed if "sft/loss" in r}
    assert sorted(g) == sorted(f) == list(range(1, 81))
    assert all(abs(f[s] - g[s]) < 1e-6 for s in f), [(s, f[s], g[s]) for s in f if abs(f[s] - g[s]) >= 1e-6][:3]


def test_rm_smoke_and_wrong_kind(algo):
    # a pairs file with one pair whose chosen equals its rejected: warned about, counted, skipped
    rows = [json.loads(line) for line in (algo / "data" / "preferences.jsonl").open()]
    rows[0]["rejected"] = rows[0]["chosen"]
    pairs = algo / "pairs_with_dup.jsonl"
    pairs.write_text("".join(json.dumps(r) + "\n" for r in rows))
    p = run("train_rm.py", "--preset", "smoke", "--data", str(algo / "data"), "--pairs", str(pairs),
            "--sft", str(algo / "sft" / "ckpt"), "--out", str(algo / "rm_dup"), "--normalize")
    assert "skipped 1 of 3000 pairs" in p.stdout
    diag = json.loads((algo / "rm_dup" / "diagnostics.json").read_text())
    for k in ("rm/accuracy", "rm/gold_accuracy", "rm/length_rule_accuracy", "rm/ece", "rm/length_corr"):
        assert k in diag
    # --normalize: rewards on the held-out responses have mean 0 and std 1 once the shift/scale are applied
    assert abs(diag["rm/reward_mean"]) < 1e-4 and abs(diag["rm/reward_std"] - 1.0) < 1e-4
    # the normalisation travels with the checkpoint
    from rlhf.checkpoint import CheckpointError, load_model
    rm, _, _ = load_model(algo / "rm_dup" / "ckpt", "rm")
    assert rm.scale.item() != 1.0 and rm.shift.item() != 0.0
    with pytest.raises(CheckpointError, match="is a 'policy' checkpoint, expected 'rm'"):
        load_model(algo / "sft" / "ckpt", "rm")
    # an RM checkpoint where the SFT policy is expected: a clear message, not a traceback
    p = run("train_rm.py", "--preset", "smoke", "--data", str(algo / "data"), "--sft", str(algo / "rm" / "ckpt"),
            "--out", str(algo / "rm2"), check=False)
    assert p.returncode != 0 and "is a 'rm' checkpoint, expected 'policy'" in p.stderr and "Traceback" not in p.stderr


def test_rm_learns_story_preferences(tmp_path):
    """A smoke-sized RM on story pairs beats chance and the length rule against gold within seconds.
    (On algo it does not at this size: judging two wrong answers needs the answer computed; README.)"""
    run("prepare_data.py", "--task", "story", "--out", str(tmp_path / "data"), "--n-sft", "3000", "--n-pairs", "4000",
        "--n-rl", "8", "--n-unlabelled", "8", "--n-eval", "8")
    run("train_sft.py", "--preset", "smoke", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "sft"), "--n-eval", "0")
    run("train_rm.py", "--preset", "smoke", "--data", str(tmp_path / "data"), "--sft", str(tmp_path / "sft" / "ckpt"),
        "--out", str(tmp_path / "rm"), "--epochs", "2")
    d = json.loads((tmp_path / "rm" / "diagnostics.json").read_text())
    # 200 held-out pairs: chance is 0.5 with a standard error of 0.035; the length rule sits near 0.5
    assert d["rm/gold_accuracy"] > 0.58 and d["rm/gold_accuracy"] > d["rm/length_rule_gold_accuracy"] + 0.05
    assert d["rm/accuracy"] > 0.58
    # the second set of diagnostics: pairs of two SFT samples on held-out prompts, labelled by the annotator
    assert d["sft_pairs/n_pairs"] > 0 and 0.0 <= d["sft_pairs/length_rule_gold_accuracy"] <= 1.0


def test_ppo_smoke_gold_reward_raises_score(algo):
    """PPO on the gold reward (the oracle control) end to end: every stage logs, the score rises."""
    run("train_ppo.py", "--preset", "smoke", "--data", str(algo / "data"), "--sft", str(algo / "sft" / "ckpt"),
        "--reward", "gold", "--out", str(algo / "ppo_gold"))
    rows = [json.loads(line) for line in (algo / "ppo_gold" / "metrics.jsonl").open()]
    it = [r for r in rows if "objective/score" in r]
    assert len(it) == 40
    for k in ("objective/kl", "objective/kl_coef", "objective/entropy", "ppo/loss/policy", "ppo/loss/value",
              "ppo/policy/clipfrac", "ppo/policy/approxkl", "ppo/val/clipfrac", "ppo/val/var_explained",
              "ppo/advantages/var", "ppo/length", "time/rollout", "time/update"):
        assert all(k in r and r[k] == r[k] for r in it), k
    first = sum(r["objective/score"] for r in it[:10]) / 10
    last = sum(r["objective/score"] for r in it[-10:]) / 10
    assert last > first + 0.03, (first, last)
    evals = [r for r in rows if "gold/score" in r]
    assert [r["step"] for r in evals] == [0, 20, 40] and all(0 <= r["gold/win_rate"] <= 1 for r in evals)
    assert (algo / "ppo_gold" / "ckpt" / "model.safetensors").exists()
    assert (algo / "ppo_gold" / "ckpt" / "value.safetensors").exists()


def test_ppo_with_rm_and_evaluate(algo):
    """PPO against the learned RM runs; evaluate.py compares the result with SFT and prints a table row."""
    rm = algo / "rm" / "ckpt"
    p = run("train_ppo.py", "--preset", "smoke", "--data", str(algo / "data"), "--sft", str(algo / "sft" / "ckpt"),
            "--rm", str(rm), "--out", str(algo / "ppo_rm"), "--steps", "10", "--eval-every", "10")
    # the smoke RM is near chance against gold on algo (README): train_ppo.py must say so before it starts
    diag = json.loads((algo / "rm" / "diagnostics.json").read_text())
    assert ("WARNING: reward model" in p.stdout) == (diag["rm/gold_accuracy"] < max(0.5, diag["rm/length_rule_gold_accuracy"]) + 0.03)
    rows = [json.loads(line) for line in (algo / "ppo_rm" / "metrics.jsonl").open()]
    assert any("proxy/score" in r for r in rows)
    p = run("evaluate.py", "--policy", str(algo / "ppo_rm" / "ckpt"), "--reference", str(algo / "sft" / "ckpt"),
            "--rm", str(rm), "--data", str(algo / "data"), "--n-eval", "32", "--out", str(algo / "eval_ppo.json"))
    assert "|" in p.stdout
    res = json.loads((algo / "eval_ppo.json").read_text())
    assert 0.0 <= res["gold/win_rate_lo"] <= res["gold/win_rate"] <= res["gold/win_rate_hi"] <= 1.0


def _ppo_rows(path):
    """PPO metrics rows without the wall-clock keys, which differ between any two runs."""
    return [{k: v for k, v in json.loads(line).items() if not k.startswith("time/")} for line in path.open()]


def test_ppo_resume_matches_uninterrupted_and_shared_value_head(algo, tmp_path):
    """10 iterations, then --resume to 20, equals 20 in one go (constant lr: nothing depends on the total),
    with the value head shared with the policy trunk."""
    common = ["train_ppo.py", "--preset", "smoke", "--data", str(algo / "data"), "--sft", str(algo / "sft" / "ckpt"),
              "--reward", "gold", "--value-head", "shared", "--eval-every", "10", "--ckpt-every", "10", "--threads", "1"]
    run(*common, "--steps", "20", "--out", str(tmp_path / "full"))
    run(*common, "--steps", "10", "--out", str(tmp_path / "split"))
    run(*common, "--steps", "20", "--out", str(tmp_path / "split"), "--resume")
    full, split = _ppo_rows(tmp_path / "full" / "metrics.jsonl"), _ppo_rows(tmp_path / "split" / "metrics.jsonl")
    assert [r["step"] for r in split] == [r["step"] for r in full] == list(range(0, 21))
    for a, b in zip(full, split):
        assert a.keys() == b.keys()
        for k in a:
            assert a[k] == pytest.approx(b[k], rel=1e-5, abs=1e-6), (a["step"], k, a[k], b[k])
    assert "ppo/val/var_explained" in full[-1]


def test_ppo_refuses_an_rm_with_nan_weights_and_keeps_last_checkpoint(algo, tmp_path):
    """An RM whose weights hold NaN is refused at load, naming the file and the parameter (a NaN score mid-run is
    stopped naming the iteration: test_reliability.py::test_ppo_non_finite_stage_stops_and_keeps_last_checkpoint);
    the run's checkpoint stays loadable."""
    import torch
    from rlhf.checkpoint import load_checkpoint, load_tokenizer_json, save_checkpoint
    state, config = load_checkpoint(algo / "rm" / "ckpt", expected_kind="rm")
    state["head.bias"] = torch.full_like(state["head.bias"], float("nan"))
    save_checkpoint(tmp_path / "nan_rm", state, config, kind="rm", tokenizer_json=load_tokenizer_json(algo / "rm" / "ckpt"))
    common = ["train_ppo.py", "--preset", "smoke", "--data", str(algo / "data"), "--sft", str(algo / "sft" / "ckpt"),
              "--value-init", "sft", "--ckpt-every", "1", "--eval-every", "100", "--out", str(tmp_path / "ppo")]
    run(*common, "--rm", str(algo / "rm" / "ckpt"), "--steps", "2")
    p = run(*common[:-2], "--out", str(tmp_path / "ppo_nan"), "--rm", str(tmp_path / "nan_rm"), "--steps", "4", check=False)
    assert p.returncode == 1 and "Traceback" not in p.stderr
    assert p.stderr.strip() == f"error: {tmp_path / 'nan_rm' / 'model.safetensors'}: parameter 'head.bias' holds NaN or inf values; this checkpoint cannot be used"
    assert json.loads((tmp_path / "ppo" / "ckpt" / "state.json").read_text())["step"] == 2
    load_checkpoint(tmp_path / "ppo" / "ckpt", expected_kind="policy")


def test_rm_scored_on_pairs_without_training(algo, tmp_path):
    """--epochs 0: the diagnostics of --previous-rm on the pairs, no step taken: on the RM's own held-out split they
    are its own diagnostics, figure for figure."""
    base = ["train_rm.py", "--preset", "smoke", "--data", str(algo / "data"), "--sft", str(algo / "sft" / "ckpt"), "--epochs", "0",
            "--n-policy-pairs", "0", "--threads", "1"]
    p = run(*base, "--out", str(tmp_path / "a"), check=False)
    assert p.returncode == 1 and "--epochs 0 scores an existing reward model on the pairs without training" in p.stderr
    run(*base, "--previous-rm", str(algo / "rm" / "ckpt"), "--out", str(tmp_path / "b"))
    own = json.loads((algo / "rm" / "diagnostics.json").read_text())
    scored = json.loads((tmp_path / "b" / "diagnostics.json").read_text())
    assert scored["rm/steps"] == 0 and all(scored[k] == own[k] for k in ("rm/accuracy", "rm/gold_accuracy", "rm/ece", "rm/n_pairs"))


def test_prepare_data_noisy_families_and_unlabelled_ratio(tmp_path):
    out = tmp_path / "d"
    run("prepare_data.py", "--task", "algo", "--out", str(out), "--n-sft", "10", "--n-pairs", "200", "--n-rl", "5", "--n-eval", "5",
        "--unlabelled-ratio", "2", "--noisy-share", "0.5", "--noisy-flip-rate", "0.9")
    meta = json.loads((out / "meta.json").read_text())
    assert meta["sizes"]["unlabelled"] == 400  # |U| = 2 |D|, RLP's ratio
    assert len(meta["noisy_families"]) == 2 and meta["annotator"]["noisy_flip_rate"] == 0.9
    pairs = meta["pairs"]
    assert pairs["noisy_pairs"] + pairs["clean_pairs"] == pairs["pairs"]
    assert pairs["noisy_label_gold_agreement"] < 0.5 < pairs["clean_label_gold_agreement"]  # mostly inverted there
    for flag, value in (("--noisy-share", "1.5"), ("--noisy-flip-rate", "-0.1"), ("--unlabelled-ratio", "0")):
        p = run("prepare_data.py", "--task", "algo", "--out", str(tmp_path / "bad"), flag, value, check=False)
        assert p.returncode == 2 and flag in p.stderr and not (tmp_path / "bad").exists()


def test_prepare_data_misreading_annotator(tmp_path):
    """--noisy-kind misread: the noisy mood's pairs are labelled against the partner mood, recorded in meta.json;
    its flags are refused where they mean nothing."""
    out = tmp_path / "d"
    run("prepare_data.py", "--task", "story", "--out", str(out), "--n-sft", "10", "--n-pairs", "400", "--n-rl", "5",
        "--n-unlabelled", "5", "--n-eval", "5", "--noisy-share", "0.25", "--noisy-kind", "misread")
    meta = json.loads((out / "meta.json").read_text())
    assert meta["noisy_families"] == ["scary"] and meta["annotator"]["noisy_kind"] == "misread"
    pairs = meta["pairs"]
    assert 50 < pairs["noisy_pairs"] < 150 and pairs["noisy_label_gold_agreement"] < pairs["clean_label_gold_agreement"]
    for argv, flag in ((["--noisy-share", "0.25", "--noisy-kind", "misread", "--noisy-flip-rate", "0.9"], "--noisy-flip-rate"),
                       (["--noisy-kind", "misread"], "--noisy-share"),
                       (["--noisy-share", "0.25", "--noisy-kind", "misread", "--task", "algo"], "--task story"),
                       (["--noisy-kind", "swap"], "--noisy-kind")):
        p = run("prepare_data.py", "--out", str(tmp_path / "bad"), *argv, check=False)
        assert p.returncode != 0 and flag in p.stderr and not (tmp_path / "bad").exists(), p.stderr


def test_prepare_data_attributes(tmp_path):
    run("prepare_data.py", "--task", "story", "--out", str(tmp_path / "d"), "--n-sft", "40", "--n-pairs", "40", "--n-rl", "40",
        "--n-unlabelled", "4", "--n-eval", "40", "--attributes", "1-4")
    meta = json.loads((tmp_path / "d" / "meta.json").read_text())
    assert meta["world"] == {"attributes": "1-4"}
    from rlhf.tasks import task_from_meta
    t = task_from_meta(meta)
    rl = [json.loads(line)["prompt"] for line in (tmp_path / "d" / "prompts_rl.jsonl").open()]
    assert len({t.difficulty(p) for p in rl}) > 1
    p = run("prepare_data.py", "--task", "algo", "--out", str(tmp_path / "a"), "--attributes", "1-4", check=False)
    assert p.returncode == 1 and "only the story task" in p.stderr and "Traceback" not in p.stderr
