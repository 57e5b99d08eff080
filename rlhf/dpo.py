"""Direct preference optimisation: the DPO loss, its implicit reward, and summed response log-probabilities.

Shapes: B pairs; the summed log-probs are (B,). Rafailov et al. 2023 (arXiv 2305.18290).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from rlhf.data import pad_left, pad_right
from rlhf.sampling import response_logprobs


def dpo_loss(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta: float):
    """The DPO loss, averaged over pairs.

    Ref: Rafailov et al. 2023 (arXiv 2305.18290) eq. 7:
        L = -mean( log sigmoid( beta * [ (log pi(y_w|x) - log pi_ref(y_w|x)) - (log pi(y_l|x) - log pi_ref(y_l|x)) ] ) )
    with y_w the chosen and y_l the rejected response; each log pi(y|x) is the sum of the response tokens' log-probs
    (sequence_logps). At equal log-ratios the loss is ln 2; it falls as the policy raises the chosen response's
    log-ratio above the rejected one's. logsigmoid keeps it finite for any margin.
    all four (B,) -> scalar
    """
    margin = (policy_chosen_logps - ref_chosen_logps) - (policy_rejected_logps - ref_rejected_logps)  # (B,)
    return -F.logsigmoid(beta * margin).mean()


def implicit_reward(policy_logps, ref_logps, beta: float):
    """DPO's implicit reward of a response, up to a term of the prompt alone.

    Ref: Rafailov et al. 2023 eq. 5:  r_hat(x, y) = beta * (log pi(y|x) - log pi_ref(y|x))
    The train/val `dpo/margin` is r_hat(chosen) - r_hat(rejected); `dpo/accuracy` the share of pairs where it is > 0.
    (B,), (B,) -> (B,)
    """
    return beta * (policy_logps - ref_logps)


def sequence_logps(model, tok, prompts: list[str], responses: list[str], device) -> torch.Tensor:
    """log pi(y|x) of each response given its prompt: the sum over the response tokens (EOS included) of
    rlhf.sampling.response_logprobs, one forward over the left-padded prompts and right-padded responses.
    (B prompts, B responses) -> (B,)"""
    q, qm = pad_left(tok.encode_prompts(prompts), tok.pad_id)
    r, rm = pad_right(tok.encode_responses(responses), tok.pad_id)
    q, qm, r, rm = (t.to(device) for t in (q, qm, r, rm))
    return response_logprobs(model, q, qm, r, rm.to(torch.float32)).sum(1)
