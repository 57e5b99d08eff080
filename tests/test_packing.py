"""Packed rows (rlhf.padding.pack_rows, GPT.hidden(segments=...), train_ppo.py --pack): the real tokens of padded rows
run as fewer rows, each sequence attending only within itself, and every figure comes back as the padded layout gives it."""
import json

import pytest
import torch
from helpers import run

from rlhf.model import GPT, GPTConfig, ScalarModel
from rlhf.padding import pack_rows
from rlhf.ppo_update import Batch, PPOHParams, ppo_update
from rlhf.sampling import response_hidden, response_logprobs, response_values


def test_pack_rows_by_hand():
    """Rows of 3, 5 and 2 real tokens in width 6: first-fit decreasing puts the 5 alone and the 3 + 2 together."""
    ids = torch.tensor([[0, 0, 5, 6, 7, 0], [0, 8, 9, 1, 2, 3], [4, 4, 0, 0, 0, 0]])
    packed, seg, index = pack_rows(ids, (ids > 0).float(), pad_id=0)
    assert packed.tolist() == [[8, 9, 1, 2, 3], [5, 6, 7, 4, 4]]
    assert seg.tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 2, 2]]
    assert index.tolist() == [[0, 0, 5, 6, 7, 0], [0, 0, 1, 2, 3, 4], [8, 9, 0, 0, 0, 0]]
    assert torch.equal(packed.reshape(-1)[index] * (ids > 0), ids)  # every real token comes back to its place
    wide = pack_rows(ids, (ids > 0).float(), pad_id=0, capacity=10)  # a wider row holds all three
    assert wide[0].tolist() == [[8, 9, 1, 2, 3, 5, 6, 7, 4, 4]] and wide[1].tolist() == [[1, 1, 1, 1, 1, 2, 2, 2, 3, 3]]
    with pytest.raises(ValueError, match="row 0's real tokens are not one contiguous run"):
        pack_rows(torch.tensor([[1, 0, 1]]), torch.tensor([[1.0, 0.0, 1.0]]))


def _rows(B=12, Tq=6, Tr=20, V=97, seed=1):
    """Left-padded queries and right-padded responses of random lengths (one response as long as Tr)."""
    g = torch.Generator().manual_seed(seed)
    q, r = torch.randint(3, V, (B, Tq), generator=g), torch.randint(3, V, (B, Tr), generator=g)
    qm, rm = torch.zeros(B, Tq), torch.zeros(B, Tr)
    for b in range(B):
        qm[b, Tq - int(torch.randint(1, Tq + 1, (1,), generator=g)):] = 1
        rm[b, :Tr if b == 0 else int(torch.randint(1, Tr // 2, (1,), generator=g))] = 1
    return q * qm.long(), qm, r * rm.long(), rm


def test_a_packed_sequence_has_the_states_it_has_alone():
    torch.manual_seed(0)
    m = GPT(GPTConfig(vocab_size=97, block_size=64, n_layer=2, n_head=2, n_embd=32)).eval()
    q, qm, r, rm = _rows()
    ids, mask = torch.cat([q, r], 1), torch.cat([qm, rm], 1)
    packed, seg, index = pack_rows(ids, mask)
    assert packed.numel() < ids.numel()  # fewer token slots
    with torch.no_grad():
        h = m.hidden(packed, segments=seg).reshape(-1, 32)[index]  # (B, T, D)
        for b in range(len(ids)):  # each sequence alone, unpadded
            alone = m.hidden(ids[b][mask[b].bool()][None])[0]
            assert torch.allclose(h[b][mask[b].bool()], alone, atol=1e-5), b
    with pytest.raises(ValueError, match="segments"):
        m.hidden(packed, mask=torch.ones_like(packed), segments=seg)


def test_packed_logprobs_values_and_update_match_the_padded_ones():
    torch.manual_seed(0)
    cfg = GPTConfig(vocab_size=97, block_size=64, n_layer=2, n_head=2, n_embd=32)
    q, qm, r, rm = _rows()
    out = {}
    for pack in (False, True):
        torch.manual_seed(0)
        policy, value = GPT(cfg), ScalarModel(cfg)
        lp = response_logprobs(policy, q, qm, r, rm, pack=pack)
        v = response_values(value, q, qm, r, rm, pack=pack)
        (lp.sum() + v.sum()).backward()
        grads = torch.cat([p.grad.flatten() for p in [*policy.parameters(), *value.parameters()]])
        batch = Batch(q, qm, r, rm, lp.detach() + 0.01 * rm, v.detach(), torch.randn(r.shape, generator=torch.Generator().manual_seed(2)) * rm,
                      v.detach() + 0.5 * rm)
        opts = [torch.optim.SGD(m.parameters(), lr=1e-2) for m in (policy, value)]  # (Adam's first step is lr * sign(g): a
        # near-zero gradient element whose sign rounding flips would move by 2 lr; SGD moves by lr times the difference)
        stats = ppo_update(policy, value, opts, batch, PPOHParams(minibatches=3, pack=pack), torch.Generator().manual_seed(3))
        out[pack] = lp.detach(), v.detach(), grads, stats, torch.cat([p.detach().flatten() for p in policy.parameters()])
    (lp0, v0, g0, s0, w0), (lp1, v1, g1, s1, w1) = out[False], out[True]
    assert torch.allclose(lp0, lp1, atol=1e-5) and torch.allclose(v0, v1, atol=1e-5)
    assert ((lp1 == 0) | rm.bool()).all() and ((v1 == 0) | rm.bool()).all()  # padding reads 0, as unpacked
    assert torch.allclose(g0, g1, rtol=1e-4, atol=1e-6)
    assert s0.keys() == s1.keys() and all(s0[k] == pytest.approx(s1[k], rel=1e-3, abs=1e-6) for k in s0)
    assert torch.allclose(w0, w1, atol=1e-5)


def test_response_hidden_pack_off_is_the_padded_forward():
    torch.manual_seed(0)
    m = GPT(GPTConfig(vocab_size=97, block_size=64, n_layer=1, n_head=2, n_embd=16))
    q, qm, r, rm = _rows(B=4)
    h = response_hidden(m, q, qm, r, rm)
    assert torch.equal(h, m.hidden(torch.cat([q, r], 1), torch.cat([qm, rm], 1))[:, q.shape[1] - 1:-1])


def test_train_ppo_pack_runs_and_is_part_of_the_run(algo, tmp_path):
    """--pack: the same first iteration's score (the same rollouts) and the update close to the padded run's."""
    common = ["--preset", "smoke", "--data", str(algo / "data"), "--sft", str(algo / "sft" / "ckpt"), "--reward", "gold",
              "--steps", "2", "--batch-size", "8", "--max-new-tokens", "16", "--eval-every", "2", "--n-eval", "4",
              "--sample-every", "100", "--ckpt-every", "100", "--threads", "1"]
    rows = {}
    for pack in ("--no-pack", "--pack"):
        out = tmp_path / pack
        run("train_ppo.py", *common, pack, "--out", str(out))
        rows[pack] = [r for r in map(json.loads, (out / "metrics.jsonl").open()) if "objective/score" in r]
        assert json.loads((out / "config.json").read_text())["pack"] == (pack == "--pack")
    a, b = rows["--no-pack"][0], rows["--pack"][0]
    assert a["objective/score"] == b["objective/score"]  # the rollouts come before any packed forward
    assert a["ppo/loss/policy"] == pytest.approx(b["ppo/loss/policy"], abs=1e-5)
    p = run("train_ppo.py", *common, "--pack", "--out", str(tmp_path / "--pack"), "--resume", "--no-pack", "--steps", "3", check=False)
    assert p.returncode != 0 and "--pack" in p.stderr  # a flag of the run's identity: refused on resume


def test_packed_sft_loss_and_rm_scores_match_the_padded_ones():
    """SFT: the loss on packed rows has the same terms (a sequence's last token never predicts the next sequence's first,
    whose response mask is 0); RM: the score at each row's last real token."""
    from rlhf.padding import pack_like
    from rlhf.sft import join_prompt_response, sft_loss
    torch.manual_seed(0)
    cfg = GPTConfig(vocab_size=97, block_size=64, n_layer=2, n_head=2, n_embd=32)
    g = torch.Generator().manual_seed(4)
    prompts = [torch.randint(3, 97, (int(torch.randint(2, 8, (1,), generator=g)),), generator=g).tolist() for _ in range(10)]
    responses = [torch.randint(3, 97, (int(torch.randint(1, 30, (1,), generator=g)),), generator=g).tolist() for _ in range(10)]
    ids, mask, rmask = join_prompt_response(prompts, responses, pad_id=0)
    m = GPT(cfg)
    loss = sft_loss(m(ids, mask), ids, rmask)
    packed, seg, index = pack_rows(ids, mask, capacity=cfg.block_size)
    prm = pack_like(rmask, mask, index, packed.shape)
    assert prm.sum() == rmask.sum() and packed.numel() < ids.numel()
    assert torch.allclose(sft_loss(m(packed, segments=seg), packed, prm), loss, atol=1e-6)
    rm = ScalarModel(cfg)
    s, h = rm.score(ids, mask, return_hidden=True)
    sp, hp = rm.score(ids, mask, return_hidden=True, pack=True)
    assert torch.allclose(s, sp, atol=1e-5) and torch.allclose(h, hp, atol=1e-5)


@pytest.mark.parametrize("script, extra", [("train_sft.py", ["--steps", "6", "--n-eval", "0"]),
                                           ("train_rm.py", ["--epochs", "0.02", "--n-policy-pairs", "0"])])
def test_train_sft_and_rm_pack_stay_close_to_the_padded_run(algo, tmp_path, script, extra):
    """A few steps with and without --pack: the same losses step by step up to float rounding."""
    key = "sft/loss" if script == "train_sft.py" else "rm/loss"
    sft = [] if script == "train_sft.py" else ["--sft", str(algo / "sft" / "ckpt")]
    losses = {}
    for pack in ("--no-pack", "--pack"):
        out = tmp_path / pack
        run(script, "--preset", "smoke", "--data", str(algo / "data"), *sft, *extra, "--threads", "1", pack, "--out", str(out))
        losses[pack] = [r[key] for r in map(json.loads, (out / "metrics.jsonl").open()) if key in r]
    assert len(losses["--pack"]) >= 2 and losses["--pack"] == pytest.approx(losses["--no-pack"], rel=1e-4)
