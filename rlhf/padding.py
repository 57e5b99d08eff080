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


def pack_rows(ids: torch.Tensor, mask: torch.Tensor, pad_id: int = 0, capacity: int | None = None
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pack the real tokens of padded rows into fewer rows: first-fit decreasing, each packed row at most `capacity`
    tokens long (default and at least: T, so the longest row fits; a model's block_size fits more sequences a row).

    ids, mask (B, T): every row's real tokens are one contiguous run (a left-padded prompt followed by a right-padded
    response, as PPO's rows are). Returns
      packed (B', T') ids, the runs one after another, pad_id after them (T' <= capacity: the fullest packed row);
      segments (B', T') long, 1, 2, ... for the runs of each packed row and 0 on padding (GPT.hidden's segments=);
      index (B, T) long, where each token of the input landed in packed.reshape(-1) (a pad: the first slot, 0),
    so `hidden(packed, segments=segments).reshape(B' * T', D)[index]` gives every real token its hidden state in the
    input's layout. Rows of equal length keep their input order (a stable sort), so the packing is deterministic."""
    B, T = ids.shape
    cap = max(T, capacity or T)
    real = mask.bool()
    lengths = real.sum(1).tolist()
    starts = real.long().argmax(1).tolist()  # first real column (0 for an all-pad row)
    for b in range(B):
        if not bool(real[b, starts[b]:starts[b] + lengths[b]].all()):
            raise ValueError(f"pack_rows: row {b}'s real tokens are not one contiguous run")
    fill: list[int] = []  # tokens in each packed row so far
    where = [(0, 0)] * B  # (packed row, offset) of each input row
    for b in sorted(range(B), key=lambda i: -lengths[i]):
        if lengths[b] == 0:
            continue
        row = next((r for r, n in enumerate(fill) if n + lengths[b] <= cap), len(fill))
        if row == len(fill):
            fill.append(0)
        where[b] = (row, fill[row])
        fill[row] += lengths[b]
    Bp, Tp = max(1, len(fill)), max(fill, default=1)
    packed = torch.full((Bp, Tp), pad_id, dtype=ids.dtype, device=ids.device)
    segments = torch.zeros(Bp, Tp, dtype=torch.long, device=ids.device)
    index = torch.zeros(B, T, dtype=torch.long, device=ids.device)
    seg_no = [0] * Bp
    for b in sorted(range(B), key=lambda i: where[i]):  # runs in offset order within each packed row: numbered 1, 2, ...
        if lengths[b] == 0:
            continue
        (row, off), n, s = where[b], lengths[b], starts[b]
        seg_no[row] += 1
        packed[row, off:off + n] = ids[b, s:s + n]
        segments[row, off:off + n] = seg_no[row]
        index[b, s:s + n] = row * Tp + off + torch.arange(n, device=ids.device)
    return packed, segments, index


def pack_like(x: torch.Tensor, mask: torch.Tensor, index: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """Another (B, T) tensor of the same rows (a response mask, targets) laid out as pack_rows packed the ids:
    -> (B', T') with x's real entries in place and 0 elsewhere. shape: the packed ids' (B', T')."""
    out = torch.zeros(shape[0] * shape[1], dtype=x.dtype, device=x.device)
    real = mask.bool()
    out[index[real]] = x[real]
    return out.view(shape)
