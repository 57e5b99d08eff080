"""PPO equations (rlhf/ppo.py) against hand-worked values, and vectorised GAE against a naive loop."""
import math

import pytest
import torch

from rlhf.ppo import (AdaptiveKLController, FixedKLController, gae, grpo_advantages, kl_loss, kl_penalty, masked_mean,
                      masked_var, policy_loss, rloo_advantages, sequence_kl, shaped_rewards, value_loss, whiten)

D = torch.float64


def t(x):
    return torch.tensor(x, dtype=D)


def close(a, b, tol=1e-6):
    return torch.allclose(a, t(b) if not torch.is_tensor(b) else b, atol=tol, rtol=0)


# ---------------------------------------------------------------- kl_penalty
def test_kl_penalty_hand_values():
    lp, ref = t([[-1.0, -2.0]]), t([[-1.5, -1.5]])  # d = [0.5, -0.5]
    assert close(kl_penalty(lp, ref), [[0.5, -0.5]])  # k1 = d
    assert close(kl_penalty(lp, ref, "k2"), [[0.125, 0.125]])  # 0.5^2 / 2
    # k3: exp(-0.5) - 1 + 0.5 = 0.606531 - 0.5 = 0.106531;  exp(0.5) - 1 - 0.5 = 1.648721 - 1.5 = 0.148721
    assert close(kl_penalty(lp, ref, "k3"), [[0.106531, 0.148721]])
    assert close(kl_penalty(lp, ref, "abs"), [[0.5, 0.5]])
    with pytest.raises(ValueError, match=r"KL estimator must be one of: k1, k2, k3, abs \(got 'x'\)"):
        kl_penalty(lp, ref, "x")


# ---------------------------------------------------------------- shaped_rewards
def test_shaped_rewards_score_on_last_real_token_and_kl():
    score, mask = t([2.0, -1.0]), t([[1, 1, 1], [1, 0, 0]])
    # d = [[0.5, -0.5, 0], [0.5, 18, 18]]; the 18s sit on padding and must not show
    lp, ref = t([[-1.0, -2.0, -1.0], [-0.5, 9.0, 9.0]]), t([[-1.5, -1.5, -1.0], [-1.0, -9.0, -9.0]])
    # no KL: the score alone, on token 2 of row 0 and token 0 of row 1
    assert close(shaped_rewards(score, lp, ref, mask, kl_coef=0.0), [[0, 0, 2.0], [-1.0, 0, 0]])
    # kl_coef 0.1, k1: -0.1 * [0.5, -0.5, 0] + [0, 0, 2] = [-0.05, 0.05, 2.0];  row 1: -0.05 - 1.0 = -1.05
    assert close(shaped_rewards(score, lp, ref, mask, 0.1), [[-0.05, 0.05, 2.0], [-1.05, 0, 0]])
    # clamp_kl: the -0.5 becomes 0, so no +0.05 bonus
    assert close(shaped_rewards(score, lp, ref, mask, 0.1, clamp_kl=True), [[-0.05, 0.0, 2.0], [-1.05, 0, 0]])
    # k2: -0.1 * 0.125 = -0.0125 on both real tokens with |d| = 0.5
    assert close(shaped_rewards(score, lp, ref, mask, 0.1, "k2"), [[-0.0125, -0.0125, 2.0], [-1.0125, 0, 0]])


def test_shaped_rewards_bad_masks():
    z = torch.zeros(2, 3, dtype=D)
    with pytest.raises(ValueError, match="right-padded"):
        shaped_rewards(t([1.0, 1.0]), z, z, t([[1, 1, 1], [0, 1, 1]]), 0.1)
    with pytest.raises(ValueError, match="at least one real token"):
        shaped_rewards(t([1.0, 1.0]), z, z, t([[1, 1, 1], [0, 0, 0]]), 0.1)


# ---------------------------------------------------------------- whiten, masked stats
def test_whiten_hand_example_and_padding():
    # real x = [2, 4, 6]: mean 4, deviations [-2, 0, 2], sum of squares 8, unbiased var 8 / 2 = 4, std 2
    mask = t([[1, 1, 1, 0]])
    for pad in (0.0, 1e6, math.inf):
        x = t([[2.0, 4.0, 6.0, pad]])
        assert close(whiten(x, mask), [[-1.0, 0.0, 1.0, 0.0]])  # (x - 4) / 2
        assert close(whiten(x, mask, shift_mean=False), [[3.0, 4.0, 5.0, 0.0]])  # (x - 4) / 2 + 4
    # the same numbers over two rows: statistics are over the whole batch, not per row
    assert close(whiten(t([[2.0, 4.0], [6.0, -7.0]]), t([[1, 1], [1, 0]])), [[-1.0, 0.0], [1.0, 0.0]])


def test_whiten_with_a_reduce_sums_over_both_halves():
    # a reduce that adds a second "rank" holding the same batch: the statistics of the doubled batch
    # x = [2, 4, 6] twice: mean 4, sum of squares 16 over n = 6, unbiased var 16 / 5 = 3.2
    x, mask = t([[2.0, 4.0, 6.0, 0.0]]), t([[1, 1, 1, 0]])
    y = whiten(x, mask, reduce=lambda s: 2 * s)
    assert close(y, [[-2 / math.sqrt(3.2), 0.0, 2 / math.sqrt(3.2), 0.0]])


def test_sequence_kl_hand_values():
    # row 0: log-ratios 0.5, -0.25 on real tokens, padding ignored -> 0.25; row 1: one token, 1.0 - 0.0 -> 1.0
    lp = t([[0.5, -0.25, 9.0], [1.0, 7.0, 7.0]])
    ref = t([[0.0, 0.0, -9.0], [0.0, math.inf, 0.0]])
    mask = t([[1, 1, 0], [1, 0, 0]])
    assert close(sequence_kl(lp, ref, mask), [0.25, 1.0])


def test_masked_mean_var():
    x, mask = t([1.0, 2.0, 3.0, 100.0]), t([1, 1, 1, 0])
    assert masked_mean(x, mask).item() == pytest.approx(2.0)
    assert masked_var(x, mask).item() == pytest.approx(1.0)  # (1 + 0 + 1) / (3 - 1)
    assert masked_var(x, mask, unbiased=False).item() == pytest.approx(2 / 3)  # (1 + 0 + 1) / 3
    with pytest.raises(ValueError, match="at least 2 real entries"):
        masked_var(x, t([1, 0, 0, 0]))


# ---------------------------------------------------------------- gae
def test_gae_gamma_lam_one_is_reward_to_go_minus_value():
    rewards, mask = t([[0.0, 0.0, 1.0], [0.5, 0.0, 0.0]]), t([[1, 1, 1], [1, 0, 0]])
    values = t([[0.1, 0.2, 0.3], [0.4, 1e6, 1e6]])  # garbage on row 1's padding
    adv, ret = gae(rewards, values, mask, 1.0, 1.0)
    # row 0: reward-to-go [1, 1, 1] - V [0.1, 0.2, 0.3] = [0.9, 0.8, 0.7];  row 1: 0.5 - 0.4 = 0.1
    assert close(adv, [[0.9, 0.8, 0.7], [0.1, 0.0, 0.0]])
    assert close(ret, [[1.0, 1.0, 1.0], [0.5, 0.0, 0.0]])  # A + V = reward-to-go


def test_gae_hand_example_gamma_09_lam_095():
    rewards, values, mask = t([[0.0, 0.0, 1.0]]), t([[0.5, 0.6, 0.7]]), t([[1, 1, 1]])
    # delta_2 = 1 + 0.9 * 0 - 0.7 = 0.3;  delta_1 = 0.9 * 0.7 - 0.6 = 0.03;  delta_0 = 0.9 * 0.6 - 0.5 = 0.04
    # gamma * lam = 0.855:  A_2 = 0.3;  A_1 = 0.03 + 0.855 * 0.3 = 0.2865;  A_0 = 0.04 + 0.855 * 0.2865 = 0.2849575
    adv, ret = gae(rewards, values, mask, 0.9, 0.95)
    assert close(adv, [[0.2849575, 0.2865, 0.3]])
    assert close(ret, [[0.7849575, 0.8865, 1.0]])  # A + V


def _gae_naive(rewards, values, length, gamma, lam):
    """One row, real tokens only, straight from eq. 16: A_t = sum_l (gamma lam)^l delta_{t+l}."""
    r, v = rewards[:length].tolist(), values[:length].tolist()
    deltas = [r[i] + gamma * (v[i + 1] if i + 1 < length else 0.0) - v[i] for i in range(length)]
    adv = [sum((gamma * lam) ** l * deltas[i + l] for l in range(length - i)) for i in range(length)]
    return adv, [a + b for a, b in zip(adv, v)]


def test_gae_matches_naive_loop_on_random_right_padded_batches():
    g = torch.Generator().manual_seed(0)
    B, T, gamma, lam = 8, 12, 0.9, 0.95
    lengths = torch.randint(1, T + 1, (B,), generator=g)
    lengths[0], lengths[1] = 1, T  # the edge cases: a one-token response and a full-length one
    mask = (torch.arange(T)[None, :] < lengths[:, None]).to(D)
    rewards = torch.randn(B, T, generator=g, dtype=D)  # nonzero even on padding: must be ignored
    values = torch.randn(B, T, generator=g, dtype=D) + 1e3 * (1 - mask)  # garbage values on padding
    adv, ret = gae(rewards, values, mask, gamma, lam)
    for b in range(B):
        n = int(lengths[b])
        a_ref, r_ref = _gae_naive(rewards[b], values[b], n, gamma, lam)
        assert close(adv[b], a_ref + [0.0] * (T - n)) and close(ret[b], r_ref + [0.0] * (T - n))


# ---------------------------------------------------------------- policy_loss
def test_policy_loss_ratio_one():
    lp, mask, A = t([[-1.0, -2.0, -3.0, 7.0]]), t([[1, 1, 1, 0]]), t([[1.0, -2.0, 3.0, 99.0]])
    loss, stats = policy_loss(lp, lp.clone(), A, mask, 0.2)
    assert loss.item() == pytest.approx(-2 / 3)  # -(1 - 2 + 3) / 3
    assert stats["clipfrac"].item() == 0.0 and stats["approxkl"].item() == 0.0
    assert stats["ratio_mean"].item() == pytest.approx(1.0)


def test_policy_loss_clipped_hand_values():
    old = torch.zeros(1, 1, dtype=D)
    # A = 2 > 0, ratio exp(0.5) = 1.648721 > 1.2: -2 * 1.648721 = -3.297443 vs -2 * 1.2 = -2.4 -> max -2.4
    loss, stats = policy_loss(t([[0.5]]), old, t([[2.0]]), t([[1.0]]), 0.2)
    assert loss.item() == pytest.approx(-2.4) and stats["clipfrac"].item() == 1.0
    assert stats["approxkl"].item() == pytest.approx(0.125)  # 0.5 * 0.5^2
    assert stats["ratio_mean"].item() == pytest.approx(1.648721, abs=1e-6)
    # A = -1 < 0, ratio exp(-0.5) = 0.606531 < 0.8: 0.606531 vs 1 * 0.8 = 0.8 -> max 0.8
    loss, stats = policy_loss(t([[-0.5]]), old, t([[-1.0]]), t([[1.0]]), 0.2)
    assert loss.item() == pytest.approx(0.8) and stats["clipfrac"].item() == 1.0
    # inside the clip range both terms are equal: -1 * exp(0.1) = -1.105171, clipfrac 0 (strictly larger only)
    loss, stats = policy_loss(t([[0.1]]), old, t([[1.0]]), t([[1.0]]), 0.2)
    assert loss.item() == pytest.approx(-1.105171, abs=1e-6) and stats["clipfrac"].item() == 0.0


def test_policy_loss_mixed_batch_ignores_padding_garbage():
    # tokens: (d 0.5, A 2) -> -2.4 clipped;  (d -0.5, A -1) -> 0.8 clipped;
    #         (d 0.5, A -1): 1.648721 vs 1.2 -> 1.648721, unclipped.  mean = 0.048721 / 3 = 0.016240
    mask = t([[1, 1, 0], [1, 0, 0]])
    old = torch.zeros(2, 3, dtype=D)
    lp = t([[0.5, -0.5, 1e6], [0.5, -1e6, 1e6]]).requires_grad_()
    A = t([[2.0, -1.0, 1e6], [-1.0, -1e6, 1e6]])
    loss, stats = policy_loss(lp, old, A, mask, 0.2)
    assert loss.item() == pytest.approx(0.048721 / 3, abs=1e-6)
    assert stats["clipfrac"].item() == pytest.approx(2 / 3)
    loss.backward()
    assert torch.isfinite(lp.grad).all() and (lp.grad * (1 - mask) == 0).all()
    # the same real tokens as one unpadded row give the same loss (trl's masked-vs-sliced check)
    flat = policy_loss(t([[0.5, -0.5, 0.5]]), torch.zeros(1, 3, dtype=D), t([[2.0, -1.0, -1.0]]),
                       torch.ones(1, 3, dtype=D), 0.2)[0]
    assert flat.item() == pytest.approx(loss.item())


# ---------------------------------------------------------------- value_loss
def test_value_loss_hand_values():
    # c = 0.2, V_old = 0 everywhere:
    #  V  0.1, R 1: inside the clip, both (0.9)^2 = 0.81                         -> 0.81, not clipped
    #  V  0.5, R 1: (0.5)^2 = 0.25;  V_clip 0.2: (0.8)^2 = 0.64 larger           -> 0.64, clipped
    #  V -0.5, R 1: (1.5)^2 = 2.25;  V_clip -0.2: (1.2)^2 = 1.44 smaller         -> 2.25, not clipped
    # loss = 0.5 * (0.81 + 0.64 + 2.25) / 3 = 0.5 * 3.7 / 3 = 0.616667; clipfrac 1/3
    mask = t([[1, 1, 1, 0]])
    values = t([[0.1, 0.5, -0.5, 1e6]]).requires_grad_()
    loss, stats = value_loss(values, t([[0.0, 0.0, 0.0, -1e6]]), t([[1.0, 1.0, 1.0, 5e5]]), mask, 0.2)
    assert loss.item() == pytest.approx(0.616667, abs=1e-6)
    assert stats["clipfrac"].item() == pytest.approx(1 / 3)
    loss.backward()
    # d/dV of 0.5 * mean: unclipped (V - R) / 3: -0.9 / 3 = -0.3, 0 (clipped term is constant in V), -1.5 / 3 = -0.5
    assert close(values.grad, [[-0.3, 0.0, -0.5, 0.0]])


# ---------------------------------------------------------------- KL controllers
def test_adaptive_kl_controller():
    ctl = AdaptiveKLController(0.1, target=6.0, horizon=10000)
    ctl.update(12.0, 256)  # e = 12 / 6 - 1 = 1, clipped to 0.2:  0.1 * (1 + 0.2 * 256 / 10000) = 0.100512
    assert ctl.value == pytest.approx(0.100512, abs=1e-12)
    ctl.update(3.0, 256)  # e = 3 / 6 - 1 = -0.5, clipped to -0.2:  0.100512 * (1 - 0.00512)
    # = 0.100512 - 0.00051462144 = 0.09999737856
    assert ctl.value == pytest.approx(0.09999737856, abs=1e-12)
    ctl = AdaptiveKLController(0.1, target=6.0, horizon=10000)
    ctl.update(3.0, 256)  # from 0.1, e = -0.5 clipped to -0.2:  0.1 * (1 - 0.2 * 256 / 10000) = 0.099488
    assert ctl.value == pytest.approx(0.099488, abs=1e-12)
    ctl = AdaptiveKLController(0.1, target=6.0, horizon=10000)
    ctl.update(6.6, 256)  # e = 0.1, inside the clip:  0.1 * (1 + 0.1 * 256 / 10000) = 0.100256
    assert ctl.value == pytest.approx(0.100256, abs=1e-12)


def test_fixed_kl_controller_never_changes():
    ctl = FixedKLController(0.05, target=6.0, horizon=10000)
    for kl in (0.0, 3.0, 100.0):
        ctl.update(kl, 256)
    assert ctl.value == 0.05


# ---- group baselines without a critic: RLOO and GRPO ------------------------------------------------------

def test_rloo_advantages_hand_values():
    # one prompt, k = 4 scores 1, 2, 3, 6: A_i = r_i - (sum of the other three) / 3
    a = rloo_advantages(torch.tensor([[1.0, 2.0, 3.0, 6.0], [5.0, 5.0, 5.0, 5.0]]))
    assert torch.allclose(a[0], torch.tensor([1 - 11 / 3, 2 - 10 / 3, 3 - 9 / 3, 6 - 6 / 3]))
    assert torch.equal(a[1], torch.zeros(4))  # equal scores: no signal
    assert torch.allclose(rloo_advantages(torch.tensor([[2.0, -1.0]])), torch.tensor([[3.0, -3.0]]))  # k = 2: r_i - r_j
    with pytest.raises(ValueError, match=r"RLOO needs at least 2 samples per prompt \(got k = 1\)"):
        rloo_advantages(torch.ones(3, 1))


def test_grpo_advantages_hand_values():
    # scores 1, 2, 3, 6: mean 3, Bessel std sqrt((4 + 1 + 0 + 9) / 3) = sqrt(14 / 3)
    a = grpo_advantages(torch.tensor([[1.0, 2.0, 3.0, 6.0]]), eps=0.0)
    s = (14 / 3) ** 0.5
    assert torch.allclose(a, torch.tensor([[-2 / s, -1 / s, 0.0, 3 / s]]))
    assert torch.equal(grpo_advantages(torch.full((2, 3), 7.0)), torch.zeros(2, 3))  # a group of equal scores: 0, not nan
    a = grpo_advantages(torch.randn(5, 8))
    assert torch.allclose(a.mean(1), torch.zeros(5), atol=1e-6) and torch.allclose(a.std(1), torch.ones(5), atol=1e-3)
    with pytest.raises(ValueError, match=r"GRPO needs at least 2 samples per prompt"):
        grpo_advantages(torch.ones(3, 1))


def test_kl_loss_hand_values_and_gradient():
    # d = log pi - log pi_ref = ln 2 on the first token, 0 on the second, padding garbage on the third:
    # k3 = exp(-d) - 1 + d = 0.5 - 1 + ln 2 = 0.19315, and 0; the mean over the two real tokens
    lp = torch.tensor([[math.log(0.5), math.log(0.3), 5.0]], requires_grad=True)
    ref = torch.tensor([[math.log(0.25), math.log(0.3), -50.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    loss = kl_loss(lp, ref, mask)
    assert loss.item() == pytest.approx((0.5 - 1 + math.log(2)) / 2, abs=1e-6)
    loss.backward()  # d/dd (exp(-d) - 1 + d) / 2 = (1 - exp(-d)) / 2: 0.25 on the first token, 0 elsewhere
    assert torch.allclose(lp.grad, torch.tensor([[0.25, 0.0, 0.0]]), atol=1e-6)
