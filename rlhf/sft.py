"""Supervised fine-tuning: the batch layout and the loss on response tokens only.

Shapes: B batch, T sequence (prompt + SEP + response + EOS, right-padded), V vocab.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from rlhf.padding import pad_right


def join_prompt_response(prompt_ids: list[list[int]], response_ids: list[list[int]], pad_id: int):
    """Concatenate each prompt with its response and right-pad.

    Returns ids (B, T) long, mask (B, T) float (1 on real tokens), response_mask (B, T) float
    (1 on the response's tokens, EOS included). Used by SFT and by the reward model.
    """
    ids, mask = pad_right([p + r for p, r in zip(prompt_ids, response_ids)], pad_id)
    rmask = torch.zeros_like(mask)
    for i, (p, r) in enumerate(zip(prompt_ids, response_ids)):
        rmask[i, len(p):len(p) + len(r)] = 1.0
    return ids, mask, rmask


def response_nll(logits, ids, response_mask):
    """Per-token next-token NLL on response tokens, 0 on prompt and padding, and the weights it was taken with.

    nll_t = m_{t+1} * -log p(x_{t+1} | x_{<=t}),   m = response_mask shifted one column left
    logits (B, T, V), ids (B, T), response_mask (B, T) -> (nll (B, T), m (B, T)). sft_loss averages it;
    rlhf.dpo.sequence_logps sums it per row.
    """
    # Every column t predicts ids[t + 1]; the last column's target is a dummy (ids[0]) whose weight is 0.
    # Written over all T columns rather than logits[:, :-1] so the (B, T, V) logits are read in place: the
    # slice would cost a copy of the largest tensor of the step, and its backward a zero-filled one (bench.py).
    B, T, V = logits.shape
    targets = ids.roll(-1, dims=1)  # (B, T)
    m = F.pad(response_mask[:, 1:], (0, 1))  # (B, T), 0 in the last column
    nll = F.cross_entropy(logits.float().reshape(B * T, V), targets.reshape(B * T), reduction="none").view(B, T)
    return torch.where(m > 0, nll * m, 0.0), m  # where: a non-finite dummy column stays out


def sft_loss(logits, ids, response_mask):
    """Next-token cross-entropy on response tokens only (prompt and padding carry no loss).

    loss = sum_t m_{t+1} * -log p(x_{t+1} | x_{<=t}) / sum_t m_{t+1}
    logits (B, T, V), ids (B, T), response_mask (B, T) -> scalar.
    """
    nll, m = response_nll(logits, ids, response_mask)
    return nll.sum() / m.sum().clamp(min=1.0)
