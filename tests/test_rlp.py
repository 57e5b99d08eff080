"""RLP equations (rlhf/rlp.py) against hand-worked values and torch.distributions, the negatives of the
multi-view bottleneck, and synthetic preference generation on hand-made clusters."""
import pytest
import torch
from torch.distributions import Independent, Normal, kl_divergence

from rlhf.rlp import (Critic, GaussianHead, _negative_pairs, cluster_by_key, jsd_mi_lower_bound, mib_loss,
                      symmetric_kl_gaussian, synthetic_preferences)

D = torch.float64


def t(x):
    return torch.tensor(x, dtype=D)


def close(a, b, tol=1e-6):
    return torch.allclose(a, t(b) if not torch.is_tensor(b) else b, atol=tol, rtol=0)


# ---------------------------------------------------------------- symmetric_kl_gaussian
def test_symmetric_kl_identical_is_zero():
    mu, std = t([[0.3, -1.2, 5.0]]), t([[0.5, 2.0, 1e-3]])
    assert symmetric_kl_gaussian(mu, std, mu, std).tolist() == [0.0]  # exactly: log 1 + (s^2 + 0) / (2 s^2) - 1/2


def test_symmetric_kl_hand_values():
    # N(0, 1) vs N(1, 2^2):
    #   KL12 = log 2 + (1 + 1) / (2 * 4) - 1/2 = 0.693147 + 0.25 - 0.5 = 0.443147
    #   KL21 = log(1/2) + (4 + 1) / (2 * 1) - 1/2 = -0.693147 + 2.5 - 0.5 = 1.306853
    #   SKL = (0.443147 + 1.306853) / 2 = 0.875 (the logs cancel)
    assert close(symmetric_kl_gaussian(t([[0.0]]), t([[1.0]]), t([[1.0]]), t([[2.0]])), [0.875])
    # 2-D sums over dims: dim 0 as above (0.875); dim 1 N(0, 1) vs N(2, 1):
    #   KL12 = KL21 = 0 + (1 + 4) / 2 - 1/2 = 2, SKL = 2;  total 0.875 + 2 = 2.875
    # row 1 is the same pair with the roles swapped: SKL is symmetric, 2.875 again
    mu1, std1, mu2, std2 = t([[0.0, 0.0], [1.0, 2.0]]), t([[1.0, 1.0], [2.0, 1.0]]), t([[1.0, 2.0], [0.0, 0.0]]), \
        t([[2.0, 1.0], [1.0, 1.0]])
    assert close(symmetric_kl_gaussian(mu1, std1, mu2, std2), [2.875, 2.875])


def test_symmetric_kl_matches_torch_distributions():
    g = torch.Generator().manual_seed(0)
    mu1, mu2 = torch.randn(5, 4, generator=g, dtype=D), torch.randn(5, 4, generator=g, dtype=D)
    std1, std2 = torch.rand(5, 4, generator=g, dtype=D) + 0.1, torch.rand(5, 4, generator=g, dtype=D) + 0.1
    p1, p2 = Independent(Normal(mu1, std1), 1), Independent(Normal(mu2, std2), 1)
    ref = (kl_divergence(p1, p2) + kl_divergence(p2, p1)) / 2  # (5,)
    assert close(symmetric_kl_gaussian(mu1, std1, mu2, std2), ref, tol=1e-10)


# ---------------------------------------------------------------- jsd_mi_lower_bound
def test_jsd_hand_values():
    # T = 0 everywhere: -softplus(0) - softplus(0) = -log 2 - log 2 = -1.386294
    assert close(jsd_mi_lower_bound(t([0.0]), t([0.0])), -1.386294)
    # t_pos = [2, 0], t_neg = [-1, 1, 0]:
    #   softplus(-2) = log(1 + e^-2) = log 1.135335 = 0.126928;  softplus(0) = 0.693147
    #   positives: -(0.126928 + 0.693147) / 2 = -0.410038
    #   softplus(-1) = 0.313262, softplus(1) = 1.313262, softplus(0) = 0.693147; mean = 2.319671 / 3 = 0.773224
    #   I = -0.410038 - 0.773224 = -1.183261
    assert close(jsd_mi_lower_bound(t([2.0, 0.0]), t([-1.0, 1.0, 0.0])), -1.183261)


# ---------------------------------------------------------------- GaussianHead, Critic
def test_gaussian_head_shapes_and_positive_std():
    torch.manual_seed(0)
    head = GaussianHead(d_in=6, z_dim=3, hidden=8)
    mu, std = head(torch.randn(4, 6))
    assert mu.shape == (4, 3) and std.shape == (4, 3) and bool((std > 0).all())
    with torch.no_grad():  # drive the sigma MLP's raw output to -1e4: softplus underflows to 0, the 1e-7 remains
        last = head.sigma[-1]
        last.weight.zero_()
        last.bias.fill_(-1e4)
    _, std = head(torch.randn(4, 6))
    assert bool((std > 0).all()) and torch.allclose(std, torch.full_like(std, 1e-7))
    assert Critic(z_dim=3, hidden=8)(mu, mu).shape == (4,)


# ---------------------------------------------------------------- mib_loss
def _mib_setup(B=4, Dh=6, Z=3, seed=0):
    torch.manual_seed(seed)
    h1 = torch.randn(B, Dh, requires_grad=True)
    h2 = torch.randn(B, Dh, requires_grad=True)
    return h1, h2, GaussianHead(Dh, z_dim=Z, hidden=8), Critic(z_dim=Z, hidden=8)


def test_mib_loss_finite_stats_and_gradients_reach_trunk_heads_critic():
    h1, h2, heads, critic = _mib_setup()
    loss, stats = mib_loss(h1, h2, heads, critic, generator=torch.Generator().manual_seed(1))
    assert loss.dim() == 0 and bool(torch.isfinite(loss))
    assert set(stats) == {"mi", "skl", "loss"}
    for v in stats.values():
        assert torch.is_tensor(v) and v.dim() == 0 and not v.requires_grad
    assert torch.allclose(stats["loss"], -stats["mi"] + stats["skl"])  # kl_weight 1
    assert stats["mi"] <= 0 and stats["skl"] >= 0  # the JSD estimate is <= 0, the SKL >= 0
    loss.backward()
    for x in (h1, h2):
        assert x.grad is not None and x.grad.abs().sum() > 0
    for name, mod in (("heads.mu", heads.mu), ("heads.sigma", heads.sigma), ("critic", critic)):
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in mod.parameters()), name


def test_mib_loss_kl_weight_zero_is_minus_mi_and_generator_reproducible():
    h1, h2, heads, critic = _mib_setup()
    loss, stats = mib_loss(h1, h2, heads, critic, kl_weight=0.0, generator=torch.Generator().manual_seed(3))
    assert torch.equal(loss.detach(), -stats["mi"])
    again, _ = mib_loss(h1, h2, heads, critic, kl_weight=0.0, generator=torch.Generator().manual_seed(3))
    assert torch.equal(loss, again)  # same generator seed, same eps
    other, _ = mib_loss(h1, h2, heads, critic, kl_weight=0.0, generator=torch.Generator().manual_seed(4))
    assert not torch.equal(loss, other)
    # kl_weight scales the SKL term only: L(w=0.5) = -mi + 0.5 * skl for the same eps
    half, st = mib_loss(h1, h2, heads, critic, kl_weight=0.5, generator=torch.Generator().manual_seed(3))
    assert torch.allclose(half, -st["mi"] + 0.5 * st["skl"]) and torch.equal(st["mi"], stats["mi"])


def test_negative_pairs_are_all_off_diagonal_pairs():
    i, j = _negative_pairs(4)
    assert len(i) == 4 * 3 and bool((i != j).all())  # B(B-1) = 12, never b' == b
    assert len(set(zip(i.tolist(), j.tolist()))) == 12  # each ordered pair once


class RecordingCritic(Critic):
    def __init__(self, z_dim):
        super().__init__(z_dim=z_dim, hidden=8)
        self.calls = []

    def forward(self, z1, z2):
        self.calls.append((z1.detach().clone(), z2.detach().clone()))
        return super().forward(z1, z2)


def _row_index(rows, table):
    # index of each row of `rows` in `table` (z samples are continuous: equal rows mean the same prompt)
    eq = (rows[:, None, :] == table[None, :, :]).all(-1)  # (M, B)
    assert bool((eq.sum(1) == 1).all())
    return eq.float().argmax(1)


def test_mib_negatives_never_pair_the_same_prompt():
    B = 5
    h1, h2, heads, _ = _mib_setup(B=B)
    critic = RecordingCritic(z_dim=3)
    mib_loss(h1, h2, heads, critic, generator=torch.Generator().manual_seed(0))
    (z1, z2), (n1, n2) = critic.calls  # positives first, then negatives
    assert len(n1) == B * (B - 1)
    b, b2 = _row_index(n1, z1), _row_index(n2, z2)
    assert bool((b != b2).all())
    assert len(set(zip(b.tolist(), b2.tolist()))) == B * (B - 1)


def test_mib_loss_needs_two_prompts():
    h1, h2, heads, critic = _mib_setup(B=1)
    with pytest.raises(ValueError, match="mib_loss needs at least 2 prompts in a batch for negatives"):
        mib_loss(h1, h2, heads, critic)


# ---------------------------------------------------------------- cluster_by_key
def test_cluster_by_key_hand_example_and_ties():
    assert cluster_by_key(["a", "b", "a", "c", "b", "a"]) == [[0, 2, 5], [1, 4], [3]]
    # "y" and "x" both size 2: "y" appears first (index 0), so it comes first; singletons by first occurrence
    assert cluster_by_key(["y", "z", "x", "y", "x", "w"]) == [[0, 3], [2, 4], [1], [5]]
    assert cluster_by_key([]) == []


# ---------------------------------------------------------------- synthetic_preferences
def G(seed=0):
    return torch.Generator().manual_seed(seed)


def test_spg_gamma_threshold_at_and_below():
    # n = 4: largest cluster "a" has 2 of 4, c = 0.5
    keys = [["a", "b", "a", "c"]]
    r = t([[0.0, 0.0, 1.0, 0.0]])
    assert len(synthetic_preferences(keys, r, 0.5, G())) == 1  # 0.5 >= 0.5: accepted at exactly gamma
    assert synthetic_preferences(keys, r, 0.51, G()) == []  # 0.5 < 0.51
    # c = 3/10 = 0.3 exactly at gamma = 0.3 (0.3 * 10 = 3.0000000000000004 would wrongly reject)
    keys10 = [["a"] * 3 + ["b", "c", "d", "e", "f", "g", "h"]]
    assert len(synthetic_preferences(keys10, torch.zeros(1, 10), 0.3, G())) == 1


def test_spg_chosen_is_best_of_largest_rejected_outside():
    keys = [["a", "b", "a", "c", "b", "a"],  # largest "a" = {0, 2, 5} (c = 3/6 = 0.5), outside = {1, 3, 4}
            ["x"] * 6,  # one cluster only: no pair
            ["p", "p", "p", "p", "p", "q"]]  # largest "p" = {0..4}; rewards tie at 2.0 on 2 and 3 -> the first, 2
    r = t([[0.1, 9.0, 0.7, 5.0, 8.0, 0.3],  # 9.0, 8.0 outside the cluster must not be chosen; best inside: idx 2
           [1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
           [0.0, 1.0, 2.0, 2.0, -1.0, 5.0]])
    seen = {0: set(), 2: set()}
    for seed in range(50):
        pairs = synthetic_preferences(keys, r, 0.5, G(seed))
        assert [p for p, _, _ in pairs] == [0, 2]
        (_, c0, r0), (_, c2, r2) = pairs
        assert c0 == 2 and c2 == 2
        assert r0 in {1, 3, 4} and r2 == 5  # the only response outside
        seen[0].add(r0)
        seen[2].add(r2)
    assert seen[0] == {1, 3, 4}  # uniform over the outside: every one appears in 50 draws ((2/3)^50 ~ 2e-9 to miss)
    # same seed, same pairs
    assert synthetic_preferences(keys, r, 0.5, G(7)) == synthetic_preferences(keys, r, 0.5, G(7))


def test_spg_gamma_zero_accepts_any_prompt_with_two_clusters():
    keys = [["a", "b", "c", "d"], ["a", "a", "a", "a"], ["a", "a", "a", "b"]]
    # prompt 0: four singletons, c = 1/4 >= 0; the largest is "a" (first occurrence) -> chosen 0
    pairs = synthetic_preferences(keys, torch.zeros(3, 4), 0.0, G())
    assert [p for p, _, _ in pairs] == [0, 2]
    assert pairs[0][1] == 0 and pairs[0][2] in {1, 2, 3} and pairs[1][1:] == (0, 3)  # ties in reward: first, 0


def test_spg_bad_inputs():
    with pytest.raises(ValueError, match=r"gamma must be in \[0, 1\] \(got 1.5\)"):
        synthetic_preferences([["a", "b"]], torch.zeros(1, 2), 1.5, G())
    with pytest.raises(ValueError, match=r"gamma must be in \[0, 1\] \(got -0.1\)"):
        synthetic_preferences([["a", "b"]], torch.zeros(1, 2), -0.1, G())
    with pytest.raises(ValueError, match="keys must be P lists of n keys"):
        synthetic_preferences([["a", "b"], ["a", "b"]], torch.zeros(1, 2), 0.5, G())  # P: 2 vs 1
    with pytest.raises(ValueError, match="keys must be P lists of n keys"):
        synthetic_preferences([["a", "b", "c"]], torch.zeros(1, 2), 0.5, G())  # n: 3 vs 2
    with pytest.raises(ValueError, match="keys must be P lists of n keys"):
        synthetic_preferences([["a", "b"]], torch.zeros(2), 0.5, G())  # rewards not (P, n)


def test_uml_batches_draw_distinct_prompts():
    """A prompt drawn twice into one MIB batch would count its own views as a negative pair: each batch draws
    distinct prompts (all of them when there are fewer than the batch), each with two different samples."""
    import train_rm
    uml = [{"prompt": f"p{i}", "responses": [f"a{i}", f"a{i}", f"b{i}"]} for i in range(5)]
    g = torch.Generator().manual_seed(0)
    for _ in range(50):
        prompts, v1, v2 = train_rm.uml_views(uml, 4, g)
        assert len(prompts) == 4 and len(set(prompts)) == 4
        assert all(a != b and {a[1:], b[1:]} == {p[1:]} for p, a, b in zip(prompts, v1, v2))
    assert sorted(train_rm.uml_views(uml, 8, g)[0]) == [f"p{i}" for i in range(5)]
    rows = train_rm.uml_rows(uml + [{"prompt": "p0", "responses": ["c", "d"]}, {"prompt": "q", "responses": ["e", "e"]}])
    assert rows == uml  # a second row of p0 and a prompt with one distinct sample are left out
