"""Evaluation: tokenizer check, sequence KL, evaluate_policy's metrics, best-of-n, evaluate.py end to end."""
import json
import math

import pytest
import torch
from helpers import run

from rlhf.checkpoint import load_model
from rlhf.data import read_jsonl
from rlhf.evaluation import check_same_tokenizer, evaluate_policy, rm_pair_accuracy, rollout_kl
from rlhf.sampling import sample
from rlhf.tasks import get_task


@pytest.fixture(scope="module")
def models(algo):
    policy, tok, _ = load_model(algo / "sft" / "ckpt", "policy")
    ref, _, _ = load_model(algo / "sft" / "ckpt", "policy")
    rm, _, _ = load_model(algo / "rm" / "ckpt", "rm")
    prompts = [r["prompt"] for r in read_jsonl(algo / "data" / "prompts_eval.jsonl", "prompts")]
    return policy, ref, rm, tok, prompts, get_task("algo", seed=0)


class _Tok:
    def __init__(self, fp):
        self.fingerprint = fp


def test_check_same_tokenizer_mismatch_message():
    check_same_tokenizer({"policy": _Tok("abc123"), "reference": _Tok("abc123"), "rm": _Tok("abc123")})
    with pytest.raises(ValueError) as e:
        check_same_tokenizer({"policy": _Tok("abc123"), "rm": _Tok("def456")})
    assert str(e.value) == ("tokenizer mismatch: policy (abc123) vs rm (def456); a policy, its reference and "
                            "its reward model must share one tokenizer")


def test_rollout_kl_of_a_model_against_itself_is_zero(models):
    policy, ref, _, tok, prompts, _ = models
    policy.eval()
    roll = sample(policy, tok, prompts[:16], 16, temperature=0.7, generator=torch.Generator().manual_seed(0))
    kl = rollout_kl(policy, ref, roll, temperature=0.7)  # same weights in two modules: log-ratio 0 token by token
    assert kl.shape == (16,) and kl.abs().max().item() < 1e-6
    # against a perturbed copy the estimate moves; the sign of one sample's k1 estimate may be either
    with torch.no_grad():
        ref.wte.weight.add_(0.05 * torch.randn_like(ref.wte.weight, generator=torch.Generator().manual_seed(1)))
    try:
        assert rollout_kl(policy, ref, roll, temperature=0.7).abs().max().item() > 1e-3
    finally:
        ref.load_state_dict(policy.state_dict())


def test_rm_pair_accuracy_by_hand():
    # pairs: gold a>b and RM a>b (1); gold a<b, RM a>b (0); gold tie (left out); gold a>b, RM tie (1/2)
    acc, n = rm_pair_accuracy([2.0, 1.0, 5.0, 3.0], [1.0, 0.0, 0.0, 3.0], [1.0, 0.0, 0.5, 1.0], [0.0, 1.0, 0.5, 0.0])
    assert n == 3 and acc == pytest.approx((1 + 0 + 0.5) / 3)


def test_evaluate_policy_against_itself(models):
    policy, ref, rm, tok, prompts, task = models
    m, samples = evaluate_policy(policy, tok, prompts, task=task, ref=ref, rm=rm, max_new_tokens=24)
    keys = ["eval/n", "eval/length", "eval/stopped", "objective/kl", "proxy/score", "gold/score", "gold/win_rate",
            "gold/win_rate_lo", "gold/win_rate_hi", "rm/onpolicy_gold_accuracy", "rm/onpolicy_pairs"]
    assert set(keys) <= set(m), set(keys) - set(m)
    assert all(math.isfinite(m[k]) for k in keys), m
    assert m["eval/n"] == len(prompts) == len(samples) and m["rm/onpolicy_pairs"] > 0
    assert 0 <= m["gold/win_rate_lo"] <= m["gold/win_rate"] <= m["gold/win_rate_hi"] <= 1
    # the same weights sampled with different seeds: no KL, and a win rate that is a coin flip
    assert abs(m["objective/kl"]) < 1e-6
    assert m["gold/win_rate_lo"] <= 0.5 <= m["gold/win_rate_hi"], m
    assert sum(s["response"] != s["ref_response"] for s in samples) > len(samples) // 4  # different samples
    assert set(samples[0]) == {"prompt", "response", "gold", "proxy", "kl", "ref_response", "ref_gold"}

    # passing the reference texts back gives the same figures without sampling the reference again
    ref_texts = [s["ref_response"] for s in samples]
    m2, _ = evaluate_policy(policy, tok, prompts, task=task, rm=rm, max_new_tokens=24, ref_texts=ref_texts, rm_pairs=False)
    assert m2["gold/win_rate"] == m["gold/win_rate"] and "objective/kl" not in m2
    assert "rm/onpolicy_gold_accuracy" not in m2

    # n = 4 samples per prompt: all C(4, 2) = 6 pairs of each prompt (those gold decides); another RM on the same pairs
    m4, _ = evaluate_policy(policy, tok, prompts, task=task, rm=rm, max_new_tokens=24, ref_texts=ref_texts, rm_pairs=4,
                            other_rms={"rm_first": rm})
    assert m["rm/onpolicy_pairs"] < m4["rm/onpolicy_pairs"] <= 6 * len(prompts)
    assert m4["rm_first/onpolicy_gold_accuracy"] == m4["rm/onpolicy_gold_accuracy"]  # the same RM: the same figure
    assert m4["rm_first/onpolicy_pairs"] == m4["rm/onpolicy_pairs"] and m4["gold/score"] == m2["gold/score"]

    # prompt-dependent noise: gold and win rate on the noisy families' prompts and the others', which average back to
    # the whole (the same samples and reference texts: the annotator's noise changes no gold score)
    noisy_task = get_task("algo", seed=0, noisy_share=0.5)
    mn, _ = evaluate_policy(policy, tok, prompts, task=noisy_task, rm=rm, max_new_tokens=24, ref_texts=ref_texts, rm_pairs=False)
    k = sum(noisy_task.noisy(p) for p in prompts)
    assert 0 < k < len(prompts) and "gold/score_noisy" not in m2
    for key in ("gold/score", "gold/win_rate"):
        assert mn[key] == m2[key]
        assert k * mn[key + "_noisy"] + (len(prompts) - k) * mn[key + "_clean"] == pytest.approx(len(prompts) * mn[key])

    # without a task: no gold keys at all
    m3, s3 = evaluate_policy(policy, tok, prompts[:8], rm=rm, max_new_tokens=24)
    assert not any(k.startswith("gold/") or k.startswith("rm/") for k in m3) and "proxy/score" in m3
    assert "gold" not in s3[0]


def test_evaluate_policy_restores_train_mode(models):
    policy, _, _, tok, prompts, _ = models
    policy.train()
    evaluate_policy(policy, tok, prompts[:4], max_new_tokens=8)
    assert policy.training
    policy.eval()


def test_best_of_n(models):
    policy, ref, rm, tok, prompts, task = models
    m, samples = evaluate_policy(policy, tok, prompts[:32], task=task, ref=ref, rm=rm, max_new_tokens=24, best_of_n=4)
    # analytic best-of-n KL: log 4 - 3/4 = 1.386294 - 0.75 = 0.636294
    assert m["objective/kl"] == pytest.approx(0.636294, abs=1e-6)
    assert "gold/win_rate" in m and "rm/onpolicy_gold_accuracy" in m
    # the kept sample is the RM's favourite of 4, so it scores at least the plain sample's mean on average
    m1, _ = evaluate_policy(policy, tok, prompts[:32], rm=rm, max_new_tokens=24)
    assert m["proxy/score"] >= m1["proxy/score"] - 1e-6
    with pytest.raises(ValueError, match="reward model"):
        evaluate_policy(policy, tok, prompts[:4], task=task, max_new_tokens=8, best_of_n=4)


def test_evaluate_script_end_to_end(algo):
    sft, rm = str(algo / "sft" / "ckpt"), str(algo / "rm" / "ckpt")
    out = algo / "ev" / "eval.json"
    p = run("evaluate.py", "--policy", sft, "--reference", sft, "--rm", rm, "--data", str(algo / "data"),
            "--n-eval", "48", "--max-new-tokens", "24", "--out", str(out), "--name", "sft-vs-sft")
    report = json.loads(out.read_text())
    assert 0 <= report["gold/win_rate"] <= 1 and report["eval/n"] == 48 and report["name"] == "sft-vs-sft"
    samples = read_jsonl(algo / "ev" / "eval.samples.jsonl", "samples")
    assert len(samples) == 48 and "ref_response" in samples[0]
    assert "| name | gold win rate vs reference (95% CI) |" in p.stdout
    assert "| sft-vs-sft | " in p.stdout

    # a policy where the RM belongs: the checkpoint's own message, exit 1, no traceback
    bad = run("evaluate.py", "--policy", sft, "--reference", sft, "--rm", sft, "--data", str(algo / "data"),
              "--n-eval", "4", "--out", str(algo / "ev" / "bad.json"), check=False)
    assert bad.returncode != 0 and "expected 'rm'" in bad.stderr and "Traceback" not in bad.stderr
    assert not (algo / "ev" / "bad.json").exists()


def test_evaluate_script_without_gold_judge(algo, tmp_path):
    """User data (no meta.json): evaluate.py says there is no gold judge and reports the RM-based figures."""
    (tmp_path / "prompts_eval.jsonl").write_text((algo / "data" / "prompts_eval.jsonl").read_text())
    sft, rm = str(algo / "sft" / "ckpt"), str(algo / "rm" / "ckpt")
    p = run("evaluate.py", "--policy", sft, "--reference", sft, "--rm", rm, "--data", str(tmp_path),
            "--n-eval", "8", "--out", str(tmp_path / "eval.json"))
    assert "no gold judge" in p.stdout
    res = json.loads((tmp_path / "eval.json").read_text())
    assert "proxy/score" in res and "objective/kl" in res and not any(k.startswith("gold/") for k in res)


def test_evaluate_reuses_reference_samples_only_when_drawn_alike(algo):
    """--reference-samples: an evaluation of another policy against the same reference reuses the earlier call's
    reference texts, and its figures equal those of sampling the reference again; another seed samples afresh."""
    sft, rm, data = str(algo / "sft" / "ckpt"), str(algo / "rm" / "ckpt"), str(algo / "data")
    d = algo / "reuse"
    common = ["--reference", sft, "--rm", rm, "--data", data, "--n-eval", "24", "--max-new-tokens", "16"]
    run("evaluate.py", "--policy", sft, *common, "--out", str(d / "first.json"))
    bon = ["--policy", sft, "--best-of-n", "2", *common]  # another policy: best-of-2
    fresh = run("evaluate.py", *bon, "--out", str(d / "fresh.json"))
    reused = run("evaluate.py", *bon, "--reference-samples", str(d / "first.json"), "--out", str(d / "reused.json"))
    assert "reused from" not in fresh.stdout and "reference samples: 24 reused from" in reused.stdout
    a, b = (json.loads((d / f"{n}.json").read_text()) for n in ("fresh", "reused"))
    assert a["reference_key"] == b["reference_key"]
    assert {k: v for k, v in a.items() if k != "args"} == {k: v for k, v in b.items() if k != "args"}
    other = run("evaluate.py", *bon, "--seed", "1", "--reference-samples", str(d / "first.json"), "--out", str(d / "s1.json"))
    assert "drawn otherwise" in other.stdout and "reused from" not in other.stdout
