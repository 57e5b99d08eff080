"""Stage 5 of a PPO iteration: epochs of clipped policy and value updates over minibatches of rollouts.

Shared by train_ppo.py and bench.py so the benchmark times the update the trainer runs. The equations are
in rlhf.ppo (policy_loss, value_loss); this is only the loop around them, as in cleanrl ppo.py's
"Optimizing the policy and value network" block: for each epoch, a fresh permutation of the batch,
split into minibatches; one forward per model per minibatch; loss = pg_loss + vf_coef * vf_loss; clip
each model's gradient norm; step every optimiser.

Shapes: B rollouts, Tq query length (left-padded), Tr response length (right-padded), as in rlhf.sampling.
"""
from __future__ import annotations

import torch

from rlhf.ppo import masked_mean, policy_loss, value_loss
from rlhf.precision import autocast
from rlhf.sampling import response_logprobs, response_values


def ppo_update(policy, value, optimizers, q, qm, r, rmask, old_logprobs, old_values, advantages, returns, *,
               ppo_epochs: int, minibatches: int, cliprange: float, cliprange_value: float, vf_coef: float,
               temperature: float, grad_clip: float, generator: torch.Generator, shared: bool, dtype: str = "fp32",
               grad_hook=None):
    """Run `ppo_epochs` passes over the B rollouts in `minibatches` minibatches; return one stats dict per minibatch.

    policy: GPT; value: a ScalarModel (shared=False) or a Linear head on the policy's hidden states (shared=True,
    one forward gives log-probs and values). q, qm (B, Tq); r, rmask, old_logprobs, old_values, advantages,
    returns (B, Tr). dtype "bf16" runs the forwards under bf16 autocast; log-probs, ratios and losses stay fp32.
    grad_hook, when given, is called with the list of all parameters after each backward and before clipping
    (train_ppo.py passes rlhf.distributed.all_reduce_grads). Each stats dict holds floats: pg, vf (losses), clip, akl (policy clipfrac, approxkl), vclip (value clipfrac),
    ent (mean entropy). Raises FloatingPointError on a non-finite loss, before any optimiser step on it.
    """
    B = q.shape[0]
    if B % minibatches:
        raise ValueError(f"minibatches ({minibatches}) must divide the batch ({B})")
    device = q.device
    policy.train(), value.train()
    stats = []
    for _ in range(ppo_epochs):
        for idx in torch.randperm(B, generator=generator).split(B // minibatches):
            idx = idx.to(device)
            with autocast(dtype, device):
                if shared:  # one forward: log-probs, entropy and values from the same hidden states
                    logprobs, entropy, vpred = response_logprobs(policy, q[idx], qm[idx], r[idx], rmask[idx], temperature,
                                                                 return_entropy=True, value_head=value)
                else:
                    logprobs, entropy = response_logprobs(policy, q[idx], qm[idx], r[idx], rmask[idx], temperature,
                                                          return_entropy=True)
                    vpred = response_values(value, q[idx], qm[idx], r[idx], rmask[idx])
            pg_loss, pg_stats = policy_loss(logprobs, old_logprobs[idx], advantages[idx], rmask[idx], cliprange)
            vf_loss, vf_stats = value_loss(vpred.float(), old_values[idx], returns[idx], rmask[idx], cliprange_value)
            loss = pg_loss + vf_coef * vf_loss
            if not torch.isfinite(loss):
                raise FloatingPointError("non-finite PPO loss")
            for o in optimizers:
                o.zero_grad(set_to_none=True)
            loss.backward()
            if grad_hook is not None:
                grad_hook(list(policy.parameters()) + list(value.parameters()))
            for model in (policy, value):
                torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip if grad_clip > 0 else float("inf"))
            for o in optimizers:
                o.step()
            stats.append({"pg": pg_loss.detach(), "vf": vf_loss.detach(), "clip": pg_stats["clipfrac"],
                          "akl": pg_stats["approxkl"], "vclip": vf_stats["clipfrac"],
                          "ent": masked_mean(entropy.float(), rmask[idx]).detach()})
    return [{k: v.item() for k, v in s.items()} for s in stats]  # one sync at the end, not one per minibatch
