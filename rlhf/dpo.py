"""Direct preference optimisation: the DPO loss, its implicit reward, and summed response log-probabilities.

Shapes: B pairs; the summed log-probs are (B,). Rafailov et al. 2023 (arXiv 2305.18290).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from rlhf.sft import join_prompt_response, response_nll


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
    log p(y_t | x, y_<t), from one forward over prompt + response rows right-padded as SFT lays them out
    (rlhf.sft.join_prompt_response), so a row is never longer than its own pair. Column t predicts token t + 1.
        sequence_logps = sum_t m_{t+1} * log softmax(logits_t)[ids_{t+1}],   m: the response tokens
    (B prompts, B responses) -> (B,)"""
    ids, mask, rmask = join_prompt_response(tok.encode_prompts(prompts), tok.encode_responses(responses), tok.pad_id)
    ids, mask, rmask = ids.to(device), mask.to(device), rmask.to(device)
    nll, _ = response_nll(model(ids, mask), ids, rmask)  # (B, T), the SFT loss's per-token terms
    return -nll.sum(1)
