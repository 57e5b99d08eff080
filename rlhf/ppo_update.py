"""Stage 5 of a PPO iteration: epochs of clipped policy and value updates over minibatches of rollouts.

    stats = ppo_update(policy, value, optimizers, batch, hp, generator)   # {"ppo/loss/policy": ..., ...}

Shared by train_ppo.py and bench.py so the benchmark times the update the trainer runs. The equations are
in rlhf.ppo (policy_loss, value_loss); this is only the loop around them, as in cleanrl ppo.py's
"Optimizing the policy and value network" block: for each epoch, a fresh permutation of the batch,
split into minibatches (`mb_` below); one forward per model per minibatch; loss = pg_loss + vf_coef * vf_loss;
average gradients over torchrun ranks; clip each model's gradient norm; step every optimiser.

Shapes: B rollouts, Tq query length (left-padded), Tr response length (right-padded), as in rlhf.sampling.
"""
from __future__ import annotations

from dataclasses import dataclass, fields

import torch

from rlhf import distributed
from rlhf.model import ScalarModel
from rlhf.ppo import masked_mean, policy_loss, value_loss
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
    values: torch.Tensor          # (B, Tr) V_old
    advantages: torch.Tensor      # (B, Tr)
    returns: torch.Tensor         # (B, Tr) value targets

    def __len__(self) -> int:
        return self.queries.shape[0]

    def __getitem__(self, idx) -> Batch:
        """The minibatch of rows `idx` (a LongTensor of row indices)."""
        return Batch(*(getattr(self, f.name)[idx] for f in fields(self)))


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


def ppo_update(policy, value, optimizers, batch: Batch, hp: PPOHParams, generator: torch.Generator) -> dict:
    """Run hp.ppo_epochs passes over the batch in hp.minibatches minibatches; return the statistics averaged
    over all minibatches, under their metrics.jsonl keys:

        ppo/loss/policy, ppo/loss/value, ppo/policy/clipfrac, ppo/policy/approxkl, ppo/val/clipfrac, objective/entropy

    policy: GPT; value: a ScalarModel (a separate value model) or a head on the policy's hidden states (a
    Linear: one forward gives log-probs and values). Raises FloatingPointError on a non-finite loss, before any
    optimiser step on it.
    """
    B = len(batch)
    if B % hp.minibatches:
        raise ValueError(f"minibatches ({hp.minibatches}) must divide the batch ({B})")
    shared = not isinstance(value, ScalarModel)
    params = list(policy.parameters()) + list(value.parameters())
    device = batch.queries.device
    policy.train(), value.train()
    stats = []
    for _ in range(hp.ppo_epochs):
        for idx in torch.randperm(B, generator=generator, device=generator.device).split(B // hp.minibatches):
            mb = batch[idx.to(device)]
            with autocast(hp.dtype, device):
                if shared:  # one forward: log-probs, entropy and values from the same hidden states
                    logprobs, entropy, vpred = response_logprobs(policy, mb.queries, mb.query_mask, mb.responses, mb.response_mask,
                                                                 hp.temperature, return_entropy=True, value_head=value)
                else:
                    logprobs, entropy = response_logprobs(policy, mb.queries, mb.query_mask, mb.responses, mb.response_mask,
                                                          hp.temperature, return_entropy=True)
                    vpred = response_values(value, mb.queries, mb.query_mask, mb.responses, mb.response_mask)
            pg_loss, pg_stats = policy_loss(logprobs, mb.logprobs, mb.advantages, mb.response_mask, hp.cliprange)
            vf_loss, vf_stats = value_loss(vpred.float(), mb.values, mb.returns, mb.response_mask, hp.cliprange_value)
            loss = pg_loss + hp.vf_coef * vf_loss
            if not torch.isfinite(loss):
                raise FloatingPointError("non-finite PPO loss")
            for o in optimizers:
                o.zero_grad(set_to_none=True)
            loss.backward()
            distributed.all_reduce_grads(params)  # torchrun: the mean gradient over ranks (nothing in one process)
            for model in (policy, value):
                torch.nn.utils.clip_grad_norm_(model.parameters(), hp.grad_clip if hp.grad_clip > 0 else float("inf"))
            for o in optimizers:
                o.step()
            stats.append({"ppo/loss/policy": pg_loss.detach(), "ppo/loss/value": vf_loss.detach(),
                          "ppo/policy/clipfrac": pg_stats["clipfrac"], "ppo/policy/approxkl": pg_stats["approxkl"],
                          "ppo/val/clipfrac": vf_stats["clipfrac"],
                          "objective/entropy": masked_mean(entropy.float(), mb.response_mask).detach()})
    per_mb = [{k: v.item() for k, v in s.items()} for s in stats]  # one sync at the end, not one per minibatch
    return {k: sum(s[k] for s in per_mb) / len(per_mb) for k in per_mb[0]}
