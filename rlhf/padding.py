"""Padding and batching of token lists: the tensor layout every batch of this project uses.

Shapes: B batch, T padded length. Prompts are left-padded (generation continues from the last column),
responses and whole sequences right-padded; masks are float, 1.0 on real tokens.
"""
from __future__ import annotations

import torch


def _pad(seqs: list[list[int]], pad_id: int, left: bool) -> tuple[torch.Tensor, torch.Tensor]:
    B, T = len(seqs), max((len(s) for s in seqs), default=0)
    ids = torch.full((B, T), pad_id, dtype=torch.long)  # (B, T)
    mask = torch.zeros(B, T)  # (B, T), 1.0 on real tokens
    for i, s in enumerate(seqs):
        cols = slice(T - len(s), T) if left else slice(0, len(s))
        ids[i, cols] = torch.as_tensor(list(s), dtype=torch.long)
        mask[i, cols] = 1.0
    return ids, mask


def pad_left(seqs: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad token lists (prompts: generation continues from the last column) to the longest.

    Returns ids LongTensor (B, T) and mask FloatTensor (B, T): 1.0 real, 0.0 pad."""
    return _pad(seqs, pad_id, left=True)


def pad_right(seqs: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad token lists (responses); returns ids (B, T) long and mask (B, T) float as pad_left."""
    return _pad(seqs, pad_id, left=False)


def batches(n: int, batch_size: int, generator: torch.Generator | None, drop_last: bool = False) -> list[list[int]]:
    """Split range(n) into index batches, shuffled with `generator` when one is given."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1 (got {batch_size})")
    order = torch.randperm(n, generator=generator).tolist() if generator is not None else list(range(n))
    out = [order[i:i + batch_size] for i in range(0, n, batch_size)]
    if drop_last and out and len(out[-1]) < batch_size:
        out.pop()
    return out
