"""The hand-written GPT: KV cache against recomputation, causality, padding invariance, sampling."""
import pytest
import torch

from rlhf.model import GPT, GPTConfig, ScalarModel, _filter_logits, generate, last_token_index

CFG = GPTConfig(vocab_size=50, block_size=48, n_layer=2, n_head=2, n_embd=32)
PAD, EOS = 0, 1


def _model(seed=0, cls=GPT):
    torch.manual_seed(seed)
    return cls(CFG).eval()


def _greedy_recompute(model, prompt, n):
    """Naive reference: rerun the whole sequence for every new token, no cache, no padding."""
    ids = list(prompt)
    out = []
    for _ in range(n):
        logits = model(torch.tensor([ids]))[0, -1]
        tok = int(logits.argmax())
        out.append(tok)
        if tok == EOS:
            break
        ids.append(tok)
    return out


def test_cached_greedy_equals_full_recomputation():
    model = _model()
    prompts = [[5, 6, 7, 8, 9], [10, 11, 12], [13, 14, 15, 16, 17, 18, 19]]
    T = max(len(p) for p in prompts)
    ids = torch.tensor([[PAD] * (T - len(p)) + p for p in prompts])
    mask = torch.tensor([[0.0] * (T - len(p)) + [1.0] * len(p) for p in prompts])
    out, out_mask = generate(model, ids, mask, max_new_tokens=20, eos_id=EOS, pad_id=PAD, temperature=0)
    for b, p in enumerate(prompts):
        ref = _greedy_recompute(model, p, 20)
        got = out[b][out_mask[b].bool()].tolist()
        assert got == ref, f"row {b}"


def test_cache_logits_equal_full_forward():
    model = _model()
    from rlhf.model import KVCache
    x = torch.randint(2, 50, (2, 12))
    full = model(x)
    cache = KVCache(CFG, 2, 12)
    a = model(x[:, :7], None, cache)
    parts = [a] + [model(x[:, t:t + 1], None, cache) for t in range(7, 12)]
    torch.testing.assert_close(torch.cat(parts, 1), full, atol=1e-5, rtol=1e-5)


def test_causality():
    model = _model()
    x = torch.randint(2, 50, (1, 16))
    y = x.clone()
    y[0, 10] = (y[0, 10] + 1) % 50
    lx, ly = model(x), model(y)
    torch.testing.assert_close(lx[:, :10], ly[:, :10])
    assert not torch.allclose(lx[:, 10:], ly[:, 10:])


def test_left_padding_never_changes_logits():
    model = _model()
    x = torch.randint(2, 50, (1, 9))
    ref = model(x)
    padded = torch.cat([torch.full((1, 5), PAD), x], 1)
    mask = torch.cat([torch.zeros(1, 5), torch.ones(1, 9)], 1)
    got = model(padded, mask)[:, 5:]
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)


def test_scalar_score_ignores_padding_on_both_sides():
    rm = _model(cls=ScalarModel)
    x = torch.randint(2, 50, (1, 9))
    ref = rm.score(x, torch.ones(1, 9))
    padded = torch.cat([torch.full((1, 3), PAD), x, torch.full((1, 4), PAD)], 1)
    mask = torch.cat([torch.zeros(1, 3), torch.ones(1, 9), torch.zeros(1, 4)], 1)
    torch.testing.assert_close(rm.score(padded, mask), ref, atol=1e-5, rtol=1e-5)
    assert last_token_index(mask).item() == 11


def test_samples_do_not_depend_on_padding():
    """The same prompt in a batch whose other row is longer (so it gets left pads) samples the same text."""
    model = _model()
    p = [7, 8, 9, 10]
    long = [11, 12, 13, 14, 15, 16, 17, 18]
    alone = torch.tensor([p, p]), torch.ones(2, 4)
    ids = torch.tensor([[PAD] * 4 + p, long])
    mask = torch.tensor([[0.0] * 4 + [1.0] * 4, [1.0] * 8])
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    a, am = generate(model, *alone, 16, EOS, PAD, temperature=1.0, generator=g1)
    b, bm = generate(model, ids, mask, 16, EOS, PAD, temperature=1.0, generator=g2)
    assert a[0][am[0].bool()].tolist() == b[0][bm[0].bool()].tolist()


def test_generate_stops_at_eos_and_pads_after():
    model = _model()
    ids, mask = torch.randint(2, 50, (3, 5)), torch.ones(3, 5)
    free, _ = generate(model, ids, mask, 12, eos_id=49, pad_id=PAD, temperature=0)
    eos = int(free[0, 3])  # call the token row 0 emits at step 3 "EOS": row 0 must now stop there or earlier
    out, m = generate(model, ids, mask, 12, eos_id=eos, pad_id=PAD, temperature=0)
    for b in range(3):
        row = free[b].tolist()
        k = row.index(eos) if eos in row else None
        if k is None:
            assert m[b].eq(1).all() and out[b].tolist() == row[:out.shape[1]]
        else:
            assert out[b, :k + 1].tolist() == row[:k + 1]
            assert m[b, :k + 1].eq(1).all() and m[b, k + 1:].eq(0).all()
            assert out[b, k + 1:].eq(PAD).all()
    assert eos in free[0, :4].tolist()


def test_sampling_seeded_and_top_k_top_p():
    model = _model()
    ids, mask = torch.randint(2, 50, (4, 5)), torch.ones(4, 5)
    a = generate(model, ids, mask, 8, EOS, PAD, generator=torch.Generator().manual_seed(0))[0]
    b = generate(model, ids, mask, 8, EOS, PAD, generator=torch.Generator().manual_seed(0))[0]
    c = generate(model, ids, mask, 8, EOS, PAD, generator=torch.Generator().manual_seed(1))[0]
    assert torch.equal(a, b) and not torch.equal(a, c)
    # top-k 1 and a tiny top-p both reduce to greedy
    g = generate(model, ids, mask, 8, EOS, PAD, temperature=0)[0]
    k1 = generate(model, ids, mask, 8, EOS, PAD, top_k=1, generator=torch.Generator().manual_seed(5))[0]
    p0 = generate(model, ids, mask, 8, EOS, PAD, top_p=1e-6, generator=torch.Generator().manual_seed(5))[0]
    assert torch.equal(g, k1) and torch.equal(g, p0)


def test_filter_logits_top_p_by_hand():
    # probs 0.5, 0.3, 0.2 (logits = log p): top_p 0.7 keeps the first two (0.5 < 0.7, 0.5 + 0.3 >= 0.7)
    logits = torch.log(torch.tensor([[0.2, 0.5, 0.3]]))
    out = _filter_logits(logits, None, 0.7)
    assert torch.isinf(out[0, 0]) and torch.isfinite(out[0, 1:]).all()


def test_too_long_is_a_clear_error():
    model = _model()
    with pytest.raises(ValueError, match="context of 48 tokens"):
        generate(model, torch.ones(1, 40, dtype=torch.long), torch.ones(1, 40), 20, EOS, PAD)
    with pytest.raises(ValueError, match="n_embd"):
        GPTConfig(n_embd=30, n_head=4)


def test_right_padding_fast_path_matches_general_mask():
    """A right-padded batch takes the unmasked causal kernel; its real-token outputs equal the masked path's."""
    model = _model()
    x = torch.randint(2, 50, (2, 10))
    mask = torch.ones(2, 10)
    mask[1, 6:] = 0
    fast = model(x, mask)
    mixed = torch.cat([torch.zeros(2, 1), mask], 1)  # one left pad forces the general masked path
    slow = model(torch.cat([torch.zeros(2, 1, dtype=torch.long), x], 1), mixed)[:, 1:]
    torch.testing.assert_close(fast[mask.bool()], slow[mask.bool()], atol=1e-5, rtol=1e-5)


def test_compacting_finished_rows_changes_no_sample(monkeypatch):
    """generate drops rows that emitted EOS from the batch and the KV cache (compact=True): every row's tokens, the
    mask and the generator's state afterwards are those of compact=False, and the batch did shrink."""
    from rlhf import model as model_module
    model = _model(1)
    with torch.no_grad():
        model.wte.weight[EOS] *= 6.0  # EOS likely: rows stop at many different steps
    ids, mask = torch.randint(2, 50, (40, 6)), torch.ones(40, 6)
    mask[:7, :3] = 0  # left padding on some rows
    kept = []
    real_keep = model_module.KVCache.keep
    monkeypatch.setattr(model_module.KVCache, "keep", lambda self, rows: (kept.append(len(rows)), real_keep(self, rows)))
    for temperature in (1.0, 0.7, 0.0):
        runs = []
        for compact in (False, True):
            g = torch.Generator().manual_seed(4)
            out, m = generate(model, ids, mask, 40, EOS, PAD, temperature=temperature, generator=g, compact=compact)
            runs.append((out, m, torch.rand(3, generator=g)))
        assert all(torch.equal(x, y) for x, y in zip(*runs))
        assert 0 < runs[0][1].sum(1).min() < runs[0][1].sum(1).max()  # rows of different lengths
    assert kept and min(kept) >= model_module.COMPACT_MIN_ROWS and max(kept) < 40
