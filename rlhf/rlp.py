"""Reward Learning on Policy (RLP): the multi-view information bottleneck (RLP-UML) and synthetic
preference generation (RLP-SPG).

Ref: Lang, Huang, Li 2024, "Fine-Tuning Language Models with Reward Learning on Policy", arXiv 2403.19279,
Algorithm 1 step 4; the bottleneck after Federici et al. 2020, arXiv 2002.07017.

Shapes: B batch (prompts), D hidden width of the RM trunk, Z latent size, H MLP width, M negatives,
P prompts, n samples per prompt. The two views of a prompt x are two policy responses to it,
v1 = (x, y1) and v2 = (x, y2), each read as the RM's final hidden state at its last real token.
Loss stats are 0-d detached tensors, as in rlhf/ppo.py: the caller calls .item() when it logs.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def _mlp(d_in: int, hidden: int, d_out: int) -> nn.Sequential:
    # 3 linear layers, ReLU between: the shape of Federici et al.'s encoder and critic (mfederici/
    # Multi-View-Information-Bottleneck utils/modules.py @ 72ce0aa), at a smaller width.
    return nn.Sequential(nn.Linear(d_in, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                         nn.Linear(hidden, d_out))


class GaussianHead(nn.Module):
    """The posterior p(z | v) = N(mu(v), diag(sigma(v)^2)) of a view, shared by both views.

    Ref: Lang et al. 2024 (arXiv 2403.19279), the posterior of L_M; Federici et al. 2020 (arXiv 2002.07017),
    the encoder p_theta(z | v).
        mu = MLP_mu(h),   sigma = softplus(MLP_sigma(h)) + 1e-7      (each MLP: D -> H -> H -> Z)
    The 1e-7 keeps sigma > 0 where softplus underflows (raw << 0), so log sigma and 1/sigma^2 in the
    KL stay finite.   h (B, D) -> mu (B, Z), std (B, Z)
    """

    def __init__(self, d_in: int, z_dim: int = 64, hidden: int = 256):
        super().__init__()
        self.z_dim = z_dim
        self.mu = _mlp(d_in, hidden, z_dim)
        self.sigma = _mlp(d_in, hidden, z_dim)

    def forward(self, h):
        assert h.dim() == 2, h.shape
        return self.mu(h), F.softplus(self.sigma(h)) + 1e-7  # (B, Z), (B, Z)


class Critic(nn.Module):
    """The critic T(z1, z2) of the Jensen-Shannon MI estimator: an MLP on the concatenation.

    Ref: Hjelm et al. 2018 (arXiv 1808.06670) eq. 4, the discriminator T_omega; Lang et al. 2024, L_M.
        T(z1, z2) = MLP([z1, z2])      (2Z -> H -> H -> 1)
    z1, z2 (B, Z) -> (B,)
    """

    def __init__(self, z_dim: int = 64, hidden: int = 256):
        super().__init__()
        self.net = _mlp(2 * z_dim, hidden, 1)

    def forward(self, z1, z2):
        assert z1.shape == z2.shape and z1.dim() == 2, (z1.shape, z2.shape)
        return self.net(torch.cat([z1, z2], dim=-1)).squeeze(-1)  # (B, 2Z) -> (B,)


def symmetric_kl_gaussian(mu1, std1, mu2, std2):
    """Symmetric KL divergence of two diagonal Gaussians, in closed form.

    Ref: Federici et al. 2020 (arXiv 2002.07017), the D_SKL term of L_MIB; Lang et al. 2024, L_M.
        D_SKL(p1 || p2) = (KL(p1 || p2) + KL(p2 || p1)) / 2,   summed over the latent dimension, where per dim
        KL(N(m1, s1^2) || N(m2, s2^2)) = log(s2 / s1) + (s1^2 + (m1 - m2)^2) / (2 s2^2) - 1/2
    The reference code estimates the same quantity from one sample (log p1(z1) - log p2(z1), ...); the
    closed form has the same expectation and no sampling noise.
    mu1, std1, mu2, std2 (B, Z) -> (B,)
    """
    assert mu1.shape == std1.shape == mu2.shape == std2.shape, (mu1.shape, std1.shape, mu2.shape, std2.shape)
    var1, var2, d2 = std1 ** 2, std2 ** 2, (mu1 - mu2) ** 2
    kl12 = torch.log(std2 / std1) + (var1 + d2) / (2 * var2) - 0.5  # (B, Z)
    kl21 = torch.log(std1 / std2) + (var2 + d2) / (2 * var1) - 0.5  # (B, Z); the logs cancel in the sum
    return ((kl12 + kl21) / 2).sum(-1)  # (B,)


def jsd_mi_lower_bound(t_pos, t_neg):
    """Jensen-Shannon estimate of the mutual information I(z1; z2) from critic scores.

    Ref: Hjelm et al. 2018 (arXiv 1808.06670) eq. 4, as used in Federici et al. 2020 (arXiv 2002.07017):
        I_JSD = E_joint[ -softplus(-T(z1, z2)) ] - E_marginals[ softplus(T(z1, z2')) ]
              = -softplus(-t_pos).mean() - softplus(t_neg).mean()
    (Hjelm et al. write sp(x) = log(1 + e^x). It is <= 0, equals -2 log 2 when T carries no information,
    and grows towards 0 as the critic separates joint from product-of-marginals pairs.)
    t_pos (B,) critic scores of pairs from the same prompt, t_neg (M,) of pairs from different prompts -> scalar
    """
    assert t_pos.dim() == 1 and t_neg.dim() == 1, (t_pos.shape, t_neg.shape)
    return -F.softplus(-t_pos).mean() - F.softplus(t_neg).mean()


def _negative_pairs(B: int, device=None):
    """All B * (B - 1) ordered pairs (b, b') with b != b': the rows of z1 and z2 that form negatives.
    -> i (M,), j (M,), M = B * (B - 1)."""
    i, j = torch.meshgrid(torch.arange(B, device=device), torch.arange(B, device=device), indexing="ij")
    off = i != j  # (B, B); the diagonal holds the positives
    return i[off], j[off]


def mib_loss(h1, h2, heads: GaussianHead, critic: Critic, kl_weight: float = 1.0,
             generator: torch.Generator | None = None):
    """Multi-view information bottleneck loss L_M on the RM's hidden states of two views per prompt.

    Ref: Federici et al. 2020 (arXiv 2002.07017), the equation for L_MIB (beta = kl_weight); as RLP-UML's L_M
    in Lang et al. 2024 (arXiv 2403.19279):
        L_M = -I_JSD(z1; z2) + kl_weight * mean_B D_SKL(p(z | v1) || p(z | v2)),
        z_i = mu_i + std_i * eps,  eps ~ N(0, I)   (reparameterisation, eps from `generator`)
    The RLP paper has no weight on the KL term (kl_weight = 1, the default); the reference code anneals
    one from 1e-3 to 1 (mfederici/Multi-View-Information-Bottleneck training/mib.py @ 72ce0aa, an
    ExponentialScheduler), so the caller may pass a scheduled value.
    h1, h2 (B, D) -> loss (scalar), stats {"mi", "skl", "loss"} (0-d detached tensors).
    Gradients flow into h1 and h2: L_M can change the reward only through the RM trunk.
    """
    assert h1.shape == h2.shape and h1.dim() == 2, (h1.shape, h2.shape)
    B = h1.shape[0]
    if B < 2:
        raise ValueError("mib_loss needs at least 2 prompts in a batch for negatives")
    # 1. posteriors: one shared encoder for both views, in one forward
    mu, std = heads(torch.cat([h1, h2]))  # (2B, Z) each
    mu1, mu2, std1, std2 = mu[:B], mu[B:], std[:B], std[B:]  # (B, Z) each
    # 2. reparameterised samples, so the MI term's gradient reaches mu, std and through them h1, h2
    eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)  # (2B, Z)
    z = mu + std * eps
    z1, z2 = z[:B], z[B:]  # (B, Z)
    # 3. critic scores. Positives: the two views of one prompt. Negatives: z1 of prompt b with z2 of
    # another prompt b' != b, standing in for the product of marginals p(z1) p(z2). A pair with b' == b
    # would be a joint sample labelled as independent: the estimator would then push T down on exactly
    # the pairs it pushes up, and the bound would reward discarding the shared information.
    # All B(B-1) off-diagonal pairs rather than the reference code's roll by 1 (B negatives): more
    # negatives for the same forward of the trunk, at the cost of B^2 small critic evaluations.
    i, j = _negative_pairs(B, device=z.device)  # (M,), (M,)
    t_pos = critic(z1, z2)  # (B,)
    t_neg = critic(z1[i], z2[j])  # (M,)
    mi = jsd_mi_lower_bound(t_pos, t_neg)
    # 4. symmetric KL between the two views' posteriors: drops what is not shared by both views
    skl = symmetric_kl_gaussian(mu1, std1, mu2, std2).mean()
    loss = -mi + kl_weight * skl
    return loss, {"mi": mi.detach(), "skl": skl.detach(), "loss": loss.detach()}


def cluster_by_key(keys: list[str]) -> list[list[int]]:
    """Indices of `keys` grouped by equal key, largest group first; equal sizes keep the order in which
    their key first appears (stable sort), so the result is deterministic.
    Ref: Lang et al. 2024 (arXiv 2403.19279) §3.2, the semantic clusters of the n responses to a prompt
    (the paper clusters by bidirectional NLI entailment; here the task's equivalence key stands in).
    ["a", "b", "a", "c", "b", "a"] -> [[0, 2, 5], [1, 4], [3]]
    """
    groups: dict[str, list[int]] = {}  # dicts keep insertion order: first occurrence
    for idx, k in enumerate(keys):
        groups.setdefault(k, []).append(idx)
    return sorted(groups.values(), key=len, reverse=True)  # sorted() is stable, also with reverse=True


def synthetic_preferences(keys: list[list[str]], rewards, gamma: float,
                          generator: torch.Generator) -> list[tuple[int, int, int]]:
    """RLP-SPG: one synthetic (prompt, chosen, rejected) pair per confident prompt.

    Ref: Lang et al. 2024 (arXiv 2403.19279) §3.2, synthetic preference generation:
        c(x) = |largest cluster| / n;  keep x iff c(x) >= gamma and another cluster exists
        y_w = argmax_{y in largest cluster} r(x, y)      (first such index on ties)
        y_l ~ Uniform(responses outside the largest cluster)   (torch.randint with `generator`)
    When two clusters tie for largest, the one whose key appears first is "largest" (cluster_by_key).
    keys: P lists of n keys, rewards (P, n) -> list of (p, chosen index, rejected index), p ascending.
    """
    if not 0.0 <= gamma <= 1.0:  # also rejects nan
        raise ValueError(f"gamma must be in [0, 1] (got {gamma})")
    if rewards.dim() != 2 or len(keys) != rewards.shape[0] or any(len(k) != rewards.shape[1] for k in keys):
        raise ValueError(f"keys must be P lists of n keys matching rewards (P, n) = {tuple(rewards.shape)} "
                         f"(got {len(keys)} lists of lengths {sorted({len(k) for k in keys})})")
    n = rewards.shape[1]
    out = []
    for p, (row_keys, row_r) in enumerate(zip(keys, rewards.tolist())):
        clusters = cluster_by_key(row_keys)
        # Divide rather than compare with gamma * n: 0.3 * 10 = 3.0000000000000004 would reject 3 / 10 = 0.3.
        if len(clusters) < 2 or len(clusters[0]) / n < gamma:
            continue
        largest = clusters[0]
        chosen = max(largest, key=lambda idx: row_r[idx])  # max() returns the first of equal maxima
        others = [idx for c in clusters[1:] for idx in c]
        others.sort()  # a fixed order, so a seed picks the same response whatever the cluster order
        rejected = others[int(torch.randint(len(others), (1,), generator=generator).item())]
        out.append((p, chosen, rejected))
    return out


def normalised_key(prompt: str, response: str) -> str:
    """Equivalence key for data without a task: exact match after lower-casing and collapsing spaces."""
    return " ".join(response.lower().split())


def spg_pairs(rows: list[dict], key, gamma: float, generator: torch.Generator,
              random_pair: bool = False) -> list[dict]:
    """Synthetic preference pairs from policy samples (rows in the samples format, `rewards` from the
    previous RM) as {prompt, chosen, rejected} records ready to append to the human pairs.

    key(prompt, response) -> str clusters equivalent responses (the task's key, or normalised_key).
    random_pair: the paper's ablation "RM-labelled pair": two distinct responses at random, the one the
    previous RM scores higher is chosen (no clustering, no confidence filter).
    """
    if random_pair:
        out = []
        for r in rows:
            if len(set(r["responses"])) < 2:
                continue
            while True:
                i, j = torch.randint(len(r["responses"]), (2,), generator=generator).tolist()
                if r["responses"][i] != r["responses"][j]:
                    break
            c, rej = (i, j) if r["rewards"][i] >= r["rewards"][j] else (j, i)
            out.append({"prompt": r["prompt"], "chosen": r["responses"][c], "rejected": r["responses"][rej]})
        return out
    ns = {len(r["responses"]) for r in rows}
    if len(ns) != 1:
        raise ValueError(f"policy samples must have the same number of responses per prompt (got {sorted(ns)})")
    keys = [[key(r["prompt"], y) for y in r["responses"]] for r in rows]
    rewards = torch.tensor([r["rewards"] for r in rows], dtype=torch.float32)
    return [{"prompt": rows[p]["prompt"], "chosen": rows[p]["responses"][c], "rejected": rows[p]["responses"][rej]}
            for p, c, rej in synthetic_preferences(keys, rewards, gamma, generator)]
