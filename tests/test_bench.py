"""bench.py end to end on the tiny shape, and the fast paths it measures: bf16 autocast against fp32, compiled
blocks against eager ones, the shared PPO update. No test reads a wall-clock time."""
import json
import math

import pytest
import torch
from helpers import run

import rlhf.ppo_update
from rlhf.model import GPT, GPTConfig, ScalarModel, generate
from rlhf.ppo_update import Batch, PPOHParams, ppo_update
from rlhf.precision import autocast, check_dtype, maybe_compile
from rlhf.sampling import response_logprobs, response_values
from rlhf.sft import sft_loss


def _model(seed=0, **kw):
    torch.manual_seed(seed)
    cfg = GPTConfig(**{**dict(vocab_size=97, block_size=48, n_layer=2, n_head=2, n_embd=32), **kw})
    return GPT(cfg).eval()


def test_bench_tiny_prints_finite_figures(tmp_path):
    out = tmp_path / "bench.json"
    p = run("bench.py", "--shape", "tiny", "--repeats", "1", "--threads", "1", "--json", str(out))
    for label in ("SFT train", "RM train", "generate, KV cache", "generate, recompute", "PPO iteration: update",
                  "PPO iteration: total", "KV cache speed-up", "MFU"):
        assert label in p.stdout, label
    res = json.loads(out.read_text())["results"]
    for key in ("sft", "rm", "gen_cache", "gen_nocache", "ppo/rollout", "ppo/rm", "ppo/ref", "ppo/value", "ppo/update", "ppo/total"):
        assert math.isfinite(res[key]["median"]) and res[key]["median"] > 0, key
    for key in ("peak_flops", "sft/mfu", "rm/mfu", "kv_cache_speedup", "peak_rss_mib"):
        assert math.isfinite(res[key]) and res[key] > 0, key


def test_bench_bad_flags_name_the_flag_and_choices():
    p = run("bench.py", "--shape", "huge", check=False)
    assert p.returncode == 2 and "--shape must be one of: tiny, peer, gpt2 (got 'huge')" in p.stderr
    p = run("bench.py", "--dtype", "fp16", check=False)
    assert p.returncode == 2 and "--dtype must be one of: fp32, bf16 (got 'fp16')" in p.stderr
    p = run("bench.py", "--stages", "sft,warp", check=False)
    assert p.returncode == 2 and "--stages must be a comma-separated subset of" in p.stderr and "'warp'" in p.stderr
    with pytest.raises(ValueError, match="--dtype must be one of: fp32, bf16"):
        check_dtype("fp16")


def test_bf16_autocast_close_to_fp32_and_losses_stay_fp32():
    model = _model()
    ids = torch.randint(0, 97, (4, 20))
    mask = torch.ones(4, 20)
    logits32 = model(ids, mask)
    with autocast("bf16"):
        logits16 = model(ids, mask)
    assert logits16.dtype == torch.bfloat16
    # bf16 keeps 8 bits of mantissa: relative error ~ 2^-8 = 0.004 per op; these logits are O(0.1-1)
    assert (logits16.float() - logits32).abs().max() < 0.05
    l32, l16 = sft_loss(logits32, ids, mask), sft_loss(logits16, ids, mask)
    assert l16.dtype == torch.float32 and abs(l16.item() - l32.item()) < 0.01 * l32.item()
    q, qm, r, rm = ids[:, :8], mask[:, :8], ids[:, 8:], mask[:, 8:]
    lp32 = response_logprobs(model, q, qm, r, rm)
    with autocast("bf16"):
        lp16 = response_logprobs(model, q, qm, r, rm)
        v16 = response_values(ScalarModel(model.config), q, qm, r, rm)
    assert lp16.dtype == torch.float32 and v16.dtype == torch.float32
    assert (lp16 - lp32).abs().max() < 0.05  # log-probs near ln(1/97) = -4.57


def test_generate_under_bf16_autocast_keeps_a_bf16_cache_and_valid_samples():
    model = _model()
    q, qm = torch.randint(0, 97, (3, 6)), torch.ones(3, 6)
    g32 = generate(model, q, qm, 10, eos_id=-1, pad_id=0, temperature=0)[0]
    with autocast("bf16"):
        g16, m16 = generate(model, q, qm, 10, eos_id=-1, pad_id=0, temperature=0)
    assert g16.shape == (3, 10) and bool(((g16 >= 0) & (g16 < 97)).all()) and bool((m16 == 1).all())
    # greedy in bf16 may pick another token where two logits are within bf16 rounding; most agree
    assert (g16 == g32).float().mean() > 0.5


def test_compiled_blocks_match_eager_and_generate_still_works():
    model = _model()
    ids = torch.randint(0, 97, (2, 12))
    q, qm = ids[:, :5], torch.ones(2, 5)
    eager = model(ids)
    eager_gen = generate(model, q, qm, 6, eos_id=-1, pad_id=0, temperature=0)[0]
    names = list(model.state_dict())
    maybe_compile(model, True)  # about 5-20 s of compilation on 2 CPU cores
    assert list(model.state_dict()) == names  # checkpoints keep their keys
    assert torch.allclose(model(ids), eager, atol=1e-5)
    assert torch.equal(generate(model, q, qm, 6, eos_id=-1, pad_id=0, temperature=0)[0], eager_gen)


def _update_inputs(seed=0):
    torch.manual_seed(seed)
    policy = _model(seed)
    value = ScalarModel(policy.config)
    B, Tq, Tr = 4, 5, 7
    q, qm = torch.randint(0, 97, (B, Tq)), torch.ones(B, Tq)
    r = torch.randint(0, 97, (B, Tr))
    rmask = (torch.arange(Tr)[None] < torch.tensor([7, 5, 3, 1])[:, None]).float()
    with torch.no_grad():
        old_lp = response_logprobs(policy, q, qm, r, rmask)
        old_v = response_values(value, q, qm, r, rmask)
    adv, ret = torch.randn(B, Tr) * rmask, torch.randn(B, Tr) * rmask
    return policy, value, (q, qm, r, rmask, old_lp, old_v, adv, ret)


def test_ppo_update_first_minibatch_has_ratio_one_and_calls_the_grad_hook(monkeypatch):
    policy, value, batch = _update_inputs()
    opts = [torch.optim.SGD(policy.parameters(), lr=0.0), torch.optim.SGD(value.parameters(), lr=0.0)]
    calls = []  # the gradient all-reduce (a no-op in one process) is called once per minibatch with every parameter
    monkeypatch.setattr(rlhf.ppo_update.distributed, "all_reduce_grads", lambda ps: calls.append(len(list(ps))))
    stats = ppo_update(policy, value, opts, Batch(*batch), PPOHParams(ppo_epochs=2, minibatches=2), torch.Generator().manual_seed(0))
    assert len(calls) == 4  # 2 epochs x 2 minibatches
    assert calls[0] == len(list(policy.parameters())) + len(list(value.parameters()))
    # lr 0: the policy never moves, so every ratio is 1 and nothing is clipped (the means over minibatches of
    # non-negative statistics are 0 only when every minibatch's is)
    assert set(stats) == {"ppo/loss/policy", "ppo/loss/value", "ppo/policy/clipfrac", "ppo/policy/approxkl", "ppo/val/clipfrac",
                          "objective/entropy"}
    assert stats["ppo/policy/clipfrac"] == 0.0 and stats["ppo/policy/approxkl"] < 1e-10
    assert math.isfinite(stats["ppo/loss/policy"]) and stats["objective/entropy"] > 0


def test_ppo_update_refuses_a_non_finite_loss_before_stepping():
    policy, value, batch = _update_inputs()
    q, qm, r, rmask, old_lp, old_v, adv, ret = batch
    before = [p.clone() for p in policy.parameters()]
    opts = [torch.optim.SGD(policy.parameters(), lr=0.1), torch.optim.SGD(value.parameters(), lr=0.1)]
    adv = adv.clone()
    adv[0, 0] = float("nan")
    with pytest.raises(FloatingPointError):
        ppo_update(policy, value, opts, Batch(q, qm, r, rmask, old_lp, old_v, adv, ret), PPOHParams(ppo_epochs=1, minibatches=1),
                   torch.Generator().manual_seed(0))
    assert all(torch.equal(a, b) for a, b in zip(before, policy.parameters()))


def test_scripts_run_with_bf16(algo, tmp_path):
    data, sft = str(algo / "data"), str(algo / "sft" / "ckpt")
    run("train_sft.py", "--preset", "smoke", "--data", data, "--out", str(tmp_path / "sft"), "--steps", "3",
        "--n-eval", "4", "--dtype", "bf16")
    run("train_rm.py", "--preset", "smoke", "--data", data, "--sft", sft, "--out", str(tmp_path / "rm"), "--epochs", "0.02",
        "--n-policy-pairs", "0", "--dtype", "bf16")
    run("train_ppo.py", "--preset", "smoke", "--data", data, "--sft", sft, "--rm", str(algo / "rm" / "ckpt"),
        "--out", str(tmp_path / "ppo"), "--steps", "2", "--n-eval", "4", "--dtype", "bf16")
    rows = [json.loads(line) for line in (tmp_path / "ppo" / "metrics.jsonl").open()]
    assert all(math.isfinite(rows[-1][k]) for k in ("ppo/loss/policy", "ppo/loss/value", "objective/kl"))
    p = run("train_ppo.py", "--data", data, "--sft", sft, "--out", str(tmp_path / "x"), "--dtype", "fp16", check=False)
    assert p.returncode == 2 and "--dtype must be one of: auto, fp32, bf16 (got 'fp16')" in p.stderr


def test_bench_profile_prints_the_stage_ops():
    p = run("bench.py", "--shape", "tiny", "--repeats", "1", "--threads", "1", "--stages", "gen_cache", "--profile", "gen_cache")
    assert "profile of one gen_cache stage" in p.stdout and "aten::addmm" in p.stdout
    bad = run("bench.py", "--shape", "tiny", "--profile", "nonsense", check=False)
    assert bad.returncode == 2 and "--profile" in bad.stderr and "gen_cache" in bad.stderr
