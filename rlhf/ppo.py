"""PPO for language models: KL-shaped rewards, whitening, GAE, the clipped losses, KL controllers.

Shapes: B batch (responses), T response length. Masks are float, 1.0 on real response tokens and 0.0 on
padding, RIGHT-padded (a row's real tokens are a prefix). Every masked reduction reads real tokens only,
through torch.where, so whatever sits on padding (even inf or nan) changes neither values nor gradients.
Loss stats are 0-d detached tensors: no GPU sync per minibatch; the caller calls .item() when it logs.
"""
from __future__ import annotations

import torch

KL_ESTIMATORS = ("k1", "k2", "k3", "abs")


def masked_mean(x, mask):
    """mean of x over the entries where mask is 1.   x, mask: same shape -> scalar."""
    assert x.shape == mask.shape, (x.shape, mask.shape)
    return torch.where(mask > 0, x * mask, 0.0).sum() / mask.sum()


def masked_var(x, mask, unbiased: bool = True):
    """variance of x over the entries where mask is 1; n = sum(mask).
        var = sum(mask * (x - mean)^2) / n,   times n / (n - 1) when unbiased (Bessel).   -> scalar
    """
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    if unbiased:
        n = mask.sum()
        if n < 2:  # n / (n - 1) would be inf or nan and poison every advantage downstream
            raise ValueError(f"unbiased masked variance needs at least 2 real entries (got {n.item():g})")
        var = var * n / (n - 1)
    return var


def _check_right_padded(mask):
    if not bool((mask[:, 1:] <= mask[:, :-1]).all()):
        raise ValueError("mask must be right-padded: each row's real tokens (1.0) a prefix, padding (0.0) after")


def kl_penalty(logprobs, ref_logprobs, kind: str = "k1"):
    """Per-token estimate of KL(pi || pi_ref) from the sampled token's log-probabilities.

    Ref: Schulman 2020, "Approximating KL Divergence" (joschu.net/blog/kl-approx.html), estimators k1, k2, k3;
    `abs` as in trl. With d = log pi(y_t) - log pi_ref(y_t), y_t ~ pi:
        k1 = d    (unbiased, can be negative)     k2 = d^2 / 2     k3 = exp(-d) - 1 + d  (unbiased, >= 0)
        abs = |d|
    logprobs, ref_logprobs: (B, T) -> (B, T). Padding is not masked here; shaped_rewards masks it.
    """
    if kind not in KL_ESTIMATORS:
        raise ValueError(f"KL estimator must be one of: {', '.join(KL_ESTIMATORS)} (got {kind!r})")
    assert logprobs.shape == ref_logprobs.shape, (logprobs.shape, ref_logprobs.shape)
    d = logprobs - ref_logprobs  # (B, T)
    if kind == "k1":
        return d
    if kind == "k2":
        return d ** 2 / 2
    if kind == "k3":
        return torch.expm1(-d) + d  # expm1: exact near d = 0, where exp(-d) - 1 loses digits
    return d.abs()


def shaped_rewards(score, logprobs, ref_logprobs, mask, kl_coef: float, kind: str = "k1", clamp_kl: bool = False):
    """Per-token reward: the KL penalty on every real token, the sequence score on the last real token.

    Ref: Ziegler et al. 2019 (arXiv 1909.08593) eq. 2; Stiennon et al. 2020 (arXiv 2009.01325) eq. 1.
        R(x, y) = r(x, y) - beta * KL(pi || pi_ref)    spread over tokens as
        r_t = -kl_coef * kl_t  +  [t == last real token] * score,   r_t = 0 on padding
    clamp_kl: kl_t = max(kl_t, 0) before the penalty, as AlpacaFarm does (tatsu-lab/alpaca_farm
    rl_trainer.py, `kl = torch.clamp(logprobs - ref_logprobs, min=0.0)`): a token the policy finds less
    likely than the reference earns no KL bonus, so the policy cannot buy reward by lowering its k1.
    score (B,), logprobs, ref_logprobs, mask (B, T) -> (B, T)
    """
    B, T = logprobs.shape
    assert score.shape == (B,) and mask.shape == (B, T), (score.shape, logprobs.shape, mask.shape)
    _check_right_padded(mask)
    lengths = mask.sum(1).long()  # (B,)
    if not bool((lengths >= 1).all()):
        raise ValueError("every response needs at least one real token to carry its score")
    kl = kl_penalty(logprobs, ref_logprobs, kind)  # (B, T)
    if clamp_kl:
        kl = kl.clamp(min=0.0)
    rewards = torch.where(mask > 0, -kl_coef * kl, 0.0)  # (B, T)
    last = lengths - 1  # (B,) index of the last real token (right padding)
    rewards[torch.arange(B, device=rewards.device), last] += score.to(rewards.dtype)
    return rewards


def whiten(x, mask, shift_mean: bool = True, reduce=None):
    """Normalise x to unit variance (and zero mean) over all real entries of the batch.

    Ref: reference code, not a paper equation: openai/lm-human-preferences and huggingface/trl `whiten`,
    with the masked statistics of trl `masked_whiten`.
        n = sum(mask),  mean = sum(mask * x) / n,  var = sum(mask * (x - mean)^2) / n * n / (n - 1)  (unbiased)
        y = (x - mean) / sqrt(var + 1e-8)
        shift_mean=False: y = (x - mean) / sqrt(var + 1e-8) + mean   (scale only)
    Scale-only keeps the mean, so whitened rewards keep their sign on average: the reference code uses it
    for rewards (AlpacaFarm's `whiten_rewards`), where subtracting the mean would erase whether the batch
    did well; advantages are whitened with the mean removed. Padding is 0 in the result.
    reduce: sums a tensor over processes (rlhf.distributed.all_reduce_sum under torchrun), so the statistics
    are those of every rank's batch together; None: this batch alone.
    x, mask: same shape, e.g. (B, T) -> same shape (T may differ between ranks)
    """
    assert x.shape == mask.shape, (x.shape, mask.shape)
    total = (lambda t: t) if reduce is None else reduce
    real = mask > 0
    sums = total(torch.stack([torch.where(real, x * mask, 0.0).sum(), mask.sum()]))
    n = sums[1]
    if n < 2:  # n / (n - 1) would be inf or nan and poison every advantage downstream
        raise ValueError(f"whitening needs at least 2 real entries (got {n.item():g})")
    mean = sums[0] / n
    var = total(torch.where(real, (x - mean) ** 2 * mask, 0.0).sum()) / n * n / (n - 1)
    y = (x - mean) * torch.rsqrt(var + 1e-8)
    if not shift_mean:
        y = y + mean
    return torch.where(real, y, 0.0)


def sequence_kl(logprobs, ref_logprobs, mask):
    """Per-sequence estimate of KL(pi || pi_ref) from a response y sampled from pi: the k1 estimator summed.

    Ref: Schulman 2020, "Approximating KL Divergence" (k1); the sequence KL of Ziegler et al. 2019 eq. 2.
        KL_hat(x, y) = sum_t mask_t * ( log pi(y_t | x, y_<t) - log pi_ref(y_t | x, y_<t) )
    Unbiased for the sequence-level KL when y ~ pi; single samples can be negative.
    logprobs, ref_logprobs, mask (B, T) -> (B,)
    """
    assert logprobs.shape == ref_logprobs.shape == mask.shape, (logprobs.shape, ref_logprobs.shape, mask.shape)
    return torch.where(mask > 0, logprobs - ref_logprobs, 0.0).sum(1)


def gae(rewards, values, mask, gamma: float, lam: float):
    """Generalised advantage estimation over each response.

    Ref: Schulman et al. 2016 (arXiv 1506.02438) eq. 16 (with the TD residual of eq. 10):
        delta_t = r_t + gamma * V_{t+1} - V_t,        V_{t+1} = 0 after the last real token (episode ends)
        A_t     = delta_t + gamma * lam * A_{t+1}     (= sum_l (gamma * lam)^l delta_{t+l})
        returns = A + V                               (the value targets, TD(lambda) returns)
    rewards, values, mask (B, T) -> advantages (B, T), returns (B, T); both 0 on padding.
    """
    B, T = rewards.shape
    assert values.shape == (B, T) and mask.shape == (B, T), (rewards.shape, values.shape, mask.shape)
    _check_right_padded(mask)
    # The value head still outputs numbers on padding; zeroing them makes V_{t+1} = 0 after the last real
    # token of each row (the response has ended, nothing more to collect), and the reversed scan below
    # then carries nothing across padding. torch.where rather than a product: inf * 0 is nan.
    values = torch.where(mask > 0, values, 0.0)
    rewards = torch.where(mask > 0, rewards, 0.0)
    advantages = torch.zeros_like(rewards)
    lastgaelam = torch.zeros_like(rewards[:, 0])  # (B,), A_{t+1}; name kept from cleanrl ppo.py
    for t in reversed(range(T)):
        nextvalues = values[:, t + 1] if t + 1 < T else torch.zeros_like(lastgaelam)  # (B,)
        delta = rewards[:, t] + gamma * nextvalues - values[:, t]
        lastgaelam = delta + gamma * lam * lastgaelam
        advantages[:, t] = lastgaelam
    returns = advantages + values
    return advantages * mask, returns * mask


def policy_loss(logprobs, old_logprobs, advantages, mask, cliprange: float):
    """PPO's clipped surrogate, negated for minimisation, averaged over all real tokens of the batch.

    Ref: Schulman et al. 2017 (arXiv 1707.06347) eq. 7.
        ratio = exp(log pi(y_t) - log pi_old(y_t))
        loss  = masked_mean( max(-A * ratio, -A * clip(ratio, 1 - c, 1 + c)) )
    logprobs, old_logprobs, advantages, mask (B, T) -> (loss scalar, stats) with stats 0-d detached tensors:
        clipfrac   fraction of real tokens where the clipped term was chosen (strictly larger)
        approxkl   masked_mean(0.5 * (log pi - log pi_old)^2), the k2 estimate of KL(pi_old || pi)
        ratio_mean masked_mean(ratio)
    """
    assert logprobs.shape == old_logprobs.shape == advantages.shape == mask.shape, (
        logprobs.shape, old_logprobs.shape, advantages.shape, mask.shape)
    # zero the log-ratio on padding before exp, so padding cannot overflow to inf and send nan gradients back
    logratio = torch.where(mask > 0, logprobs - old_logprobs, 0.0)  # (B, T)
    ratio = torch.exp(logratio)
    pg_losses = -advantages * ratio
    pg_losses2 = -advantages * torch.clamp(ratio, 1.0 - cliprange, 1.0 + cliprange)
    loss = masked_mean(torch.max(pg_losses, pg_losses2), mask)
    with torch.no_grad():
        stats = {"clipfrac": masked_mean((pg_losses2 > pg_losses).to(mask.dtype), mask),
                 "approxkl": masked_mean(0.5 * logratio ** 2, mask),
                 "ratio_mean": masked_mean(ratio, mask)}
    return loss, stats


def value_loss(values, old_values, returns, mask, cliprange_value: float):
    """Clipped value loss: the new prediction may not move more than c from the rollout's prediction.

    Ref: reference code, not in the PPO paper: openai/baselines ppo2 and openai/lm-human-preferences
    train_policy.py (`vf_losses1`, `vf_losses2`).
        V_clip = V_old + clip(V - V_old, -c, c)
        loss   = 0.5 * masked_mean( max((V - R)^2, (V_clip - R)^2) )
    values, old_values, returns, mask (B, T) -> (loss scalar, stats) with stats 0-d detached tensors:
        clipfrac   fraction of real tokens where the clipped error was strictly larger
    """
    assert values.shape == old_values.shape == returns.shape == mask.shape, (
        values.shape, old_values.shape, returns.shape, mask.shape)
    vpredclipped = old_values + torch.clamp(values - old_values, -cliprange_value, cliprange_value)
    vf_losses1 = (values - returns) ** 2
    vf_losses2 = (vpredclipped - returns) ** 2
    loss = 0.5 * masked_mean(torch.max(vf_losses1, vf_losses2), mask)
    with torch.no_grad():
        stats = {"clipfrac": masked_mean((vf_losses2 > vf_losses1).to(mask.dtype), mask)}
    return loss, stats


def rloo_advantages(scores):
    """REINFORCE leave-one-out: each sample's score minus the mean score of the other k - 1 samples of its prompt.

    Ref: Ahmadian et al. 2024 (arXiv 2402.14740), "Back to Basics" §3.2 (RLOO; Kool et al. 2019):
        A_i = r_i - 1 / (k - 1) * sum_{j != i} r_j        (= k / (k - 1) * (r_i - mean_j r_j))
    The whole sequence gets A_i (every response token; no critic). train_ppo.py passes r_i = score_i - beta * KL_i,
    the KL-penalised sequence reward, as the paper does.
    scores (P, k), k >= 2 samples of each of P prompts -> (P, k)
    """
    P, k = scores.shape
    if k < 2:
        raise ValueError(f"RLOO needs at least 2 samples per prompt (got k = {k})")
    return scores - (scores.sum(1, keepdim=True) - scores) / (k - 1)


def grpo_advantages(scores, eps: float = 1e-4):
    """GRPO's group-relative advantage (outcome supervision): the score standardised within its prompt's group.

    Ref: Shao et al. 2024 (arXiv 2402.03300), DeepSeekMath §4.1.2 (the advantage in eq. 3):
        A_i = (r_i - mean(r)) / (std(r) + eps)     over the k samples of one prompt; std with Bessel's correction
    (k - 1), as trl's GRPOTrainer computes it; eps keeps a group of equal scores at A = 0. Every response token
    gets A_i (no critic).
    scores (P, k), k >= 2 -> (P, k)
    """
    P, k = scores.shape
    if k < 2:
        raise ValueError(f"GRPO needs at least 2 samples per prompt (got k = {k})")
    return (scores - scores.mean(1, keepdim=True)) / (scores.std(1, keepdim=True) + eps)


def kl_loss(logprobs, ref_logprobs, mask):
    """GRPO's KL term, in the loss rather than in the reward: the k3 estimate of KL(pi || pi_ref), per token.

    Ref: Shao et al. 2024 (arXiv 2402.03300) eq. 4 (Schulman 2020's k3):
        D_KL = pi_ref / pi - log(pi_ref / pi) - 1 = exp(-d) - 1 + d,   d = log pi(y_t) - log pi_ref(y_t)
        loss = masked_mean(D_KL)    (added as beta * loss to the clipped policy loss, eq. 3)
    Averaged over every real token of the minibatch, as rlhf.ppo.policy_loss is; eq. 3 averages each response over
    its own length first, then over the group (a departure the README lists).
    Gradients flow through `logprobs` (the current policy); `ref_logprobs` are constants.
    logprobs, ref_logprobs, mask (B, T) -> scalar
    """
    return masked_mean(kl_penalty(logprobs, ref_logprobs.detach(), "k3"), mask)


class AdaptiveKLController:
    """Proportional controller that steers the measured KL towards a target.

    Ref: Ziegler et al. 2019 (arXiv 1909.08593) §2.2.
        e = clip(KL_current / KL_target - 1, -0.2, 0.2);   beta <- beta * (1 + e * n_steps / horizon)
    """

    def __init__(self, init_kl_coef: float, target: float, horizon: int):
        self.value, self.target, self.horizon = float(init_kl_coef), float(target), int(horizon)

    def update(self, current_kl: float, n_steps: int) -> None:
        proportional_error = min(max(float(current_kl) / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + proportional_error * n_steps / self.horizon


class FixedKLController:
    """A constant KL coefficient, with the AdaptiveKLController interface so the loop need not branch."""

    def __init__(self, init_kl_coef: float, target: float | None = None, horizon: int | None = None):
        self.value = float(init_kl_coef)

    def update(self, current_kl: float, n_steps: int) -> None:
        pass
