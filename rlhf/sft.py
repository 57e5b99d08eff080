"""Supervised fine-tuning: the batch layout and the loss on response tokens only.

Shapes: B batch, T sequence (prompt + SEP + response + EOS, right-padded), V vocab.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from rlhf.data import pad_right


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


def sft_loss(logits, ids, response_mask):
    """Next-token cross-entropy on response tokens only (prompt and padding carry no loss).

    loss = sum_t m_{t+1} * -log p(x_{t+1} | x_{<=t}) / sum_t m_{t+1}
    logits (B, T, V), ids (B, T), response_mask (B, T) -> scalar.
    """
    logp = F.log_softmax(logits[:, :-1].float(), dim=-1)  # (B, T-1, V) predictions of ids[:, 1:]
    nll = -logp.gather(-1, ids[:, 1:, None]).squeeze(-1)  # (B, T-1)
    m = response_mask[:, 1:]
    return (nll * m).sum() / m.sum().clamp(min=1.0)
