"""Stage 5 of a PPO iteration: epochs of clipped policy and value updates over minibatches of rollouts.

    stats = ppo_update(policy, value, optimizers, batch, hp, generator)   # {"ppo/loss/policy": ..., ...}

Shared by train_ppo.py and bench.py so the benchmark times the update the trainer runs. The equations are
in rlhf.ppo (policy_loss, value_loss); this is only the loop around them, as in cleanrl ppo.py's
"Optimizing the policy and value network" block: for each epoch, a fresh permutation of the batch,
split into minibatches (`mb_` below); one forward per model per minibatch; loss = pg_loss + vf_coef * vf_loss
(no value term without a critic: RLOO, GRPO; + kl_loss_coef * kl_loss for GRPO's KL in the loss);
average gradients over torchrun ranks; clip each model's gradient norm; step every optimiser.

Shapes: B rollouts, Tq query length (left-padded), Tr response length (right-padded), as in rlhf.sampling.
"""
from __future__ import annotations

from dataclasses import dataclass, fields

import torch

from rlhf import distributed
from rlhf.model import ScalarModel
from rlhf.ppo import kl_loss, masked_mean, policy_loss, value_loss
from rlhf.precision import autocast
from rlhf.sampling import response_logprobs, response_values


@dataclass
class Batch:
    """One iteration's rollouts and what stages 3-4 computed from them (the b_ tensors of cleanrl)."""
    queries: torch.Tensor         # (B, Tq) prompt ids, left-padded
    query_mask: torch.Tensor      # (B, Tq)
    responses: torch.Tensor       # (B, Tr) sampled ids, right-padded
    response_mask: torch.Tensor   # (B, Tr) 1.0 on real response tokens
    logprobs: torch.Tensor        # (B, Tr) log pi_old of the sampled tokens
    values: torch.Tensor          # (B, Tr) V_old (zeros without a critic)
    advantages: torch.Tensor      # (B, Tr)
    returns: torch.Tensor         # (B, Tr) value targets (zeros without a critic)
    ref_logprobs: torch.Tensor | None = None  # (B, Tr) log pi_ref: needed only for a KL term in the loss (GRPO)

    def __len__(self) -> int:
        return self.queries.shape[0]

    def __getitem__(self, idx) -> Batch:
        """The minibatch of rows `idx` (a LongTensor of row indices)."""
        return Batch(*(None if getattr(self, f.name) is None else getattr(self, f.name)[idx] for f in fields(self)))


@dataclass(frozen=True)
class PPOHParams:
    """The update's hyperparameters, with the field's names (lm-human-preferences, trl, cleanrl)."""
    cliprange: float = 0.2          # policy ratio clip c
    cliprange_value: float = 0.2    # value clip
    vf_coef: float = 0.1            # loss = pg_loss + vf_coef * vf_loss
    ppo_epochs: int = 2             # passes over the batch
    minibatches: int = 2            # minibatches per pass (must divide B)
    temperature: float = 1.0        # the rollout temperature, so log-probs match the sampling distribution
    grad_clip: float = 1.0          # each model's gradient norm (0: off)
    dtype: str = "fp32"             # "bf16": forwards under bf16 autocast; log-probs, ratios and losses stay fp32
    kl_loss_coef: float = 0.0       # GRPO: loss += beta * kl_loss(log pi, log pi_ref) (rlhf.ppo.kl_loss; needs batch.ref_logprobs)
    pack: bool = False              # forwards on packed rows (rlhf.sampling.response_hidden): fewer slots, the same maths


def ppo_update(policy, value, optimizers, batch: Batch, hp: PPOHParams, generator: torch.Generator) -> dict:
    """Run hp.ppo_epochs passes over the batch in hp.minibatches minibatches; return the statistics averaged
    over all minibatches, under their metrics.jsonl keys:

        ppo/loss/policy, ppo/loss/value, ppo/policy/clipfrac, ppo/policy/approxkl, ppo/val/clipfrac, objective/entropy
        (and ppo/loss/kl with hp.kl_loss_coef > 0; without a critic no ppo/loss/value or ppo/val/clipfrac)

    policy: GPT; value: a ScalarModel (a separate value model), a head on the policy's hidden states (a
    Linear: one forward gives log-probs and values), or None (no critic: RLOO, GRPO; the loss is the policy's).
    Raises FloatingPointError on a non-finite loss, before any optimiser step on it.
    """
    B = len(batch)
    if B % hp.minibatches:
        raise ValueError(f"minibatches ({hp.minibatches}) must divide the batch ({B})")
    if hp.kl_loss_coef and batch.ref_logprobs is None:
        raise ValueError("kl_loss_coef > 0 needs batch.ref_logprobs")
    critic = value is not None
    shared = critic and not isinstance(value, ScalarModel)
    models = [policy] + ([value] if critic else [])
    params = [p for m in models for p in m.parameters()]
    device = batch.queries.device
    for m in models:
        m.train()
    stats = []
    for _ in range(hp.ppo_epochs):
        for idx in torch.randperm(B, generator=generator, device=generator.device).split(B // hp.minibatches):
            mb = batch[idx.to(device)]
            with autocast(hp.dtype, device):
                rows = (mb.queries, mb.query_mask, mb.responses, mb.response_mask)
                if shared:  # one forward: log-probs, entropy and values from the same hidden states
                    logprobs, entropy, vpred = response_logprobs(policy, *rows, hp.temperature, return_entropy=True,
                                                                 value_head=value, pack=hp.pack)
                else:
                    logprobs, entropy = response_logprobs(policy, *rows, hp.temperature, return_entropy=True, pack=hp.pack)
                    vpred = response_values(value, *rows, pack=hp.pack) if critic else None
            pg_loss, pg_stats = policy_loss(logprobs, mb.logprobs, mb.advantages, mb.response_mask, hp.cliprange)
            loss, st = pg_loss, {"ppo/loss/policy": pg_loss.detach()}
            if critic:
                vf_loss, vf_stats = value_loss(vpred.float(), mb.values, mb.returns, mb.response_mask, hp.cliprange_value)
                loss = loss + hp.vf_coef * vf_loss
                st["ppo/loss/value"] = vf_loss.detach()
            if hp.kl_loss_coef:  # GRPO (Shao et al. 2024 eq. 3): the KL to the reference in the loss
                kl = kl_loss(logprobs, mb.ref_logprobs, mb.response_mask)
                loss = loss + hp.kl_loss_coef * kl
            if not torch.isfinite(loss):
                raise FloatingPointError("non-finite PPO loss")
            for o in optimizers:
                o.zero_grad(set_to_none=True)
            loss.backward()
            distributed.all_reduce_grads(params)  # torchrun: the mean gradient over ranks (nothing in one process)
            for model in models:
                torch.nn.utils.clip_grad_norm_(model.parameters(), hp.grad_clip if hp.grad_clip > 0 else float("inf"))
            for o in optimizers:
                o.step()
            st.update({"ppo/policy/clipfrac": pg_stats["clipfrac"], "ppo/policy/approxkl": pg_stats["approxkl"]})
            if critic:
                st["ppo/val/clipfrac"] = vf_stats["clipfrac"]
            stats.append(st | {"objective/entropy": masked_mean(entropy.float(), mb.response_mask).detach()}
                         | ({"ppo/loss/kl": kl.detach()} if hp.kl_loss_coef else {}))
    per_mb = [{k: v.item() for k, v in s.items()} for s in stats]  # one sync at the end, not one per minibatch
    return {k: sum(s[k] for s in per_mb) / len(per_mb) for k in per_mb[0]}
