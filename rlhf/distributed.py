"""Data parallelism across processes started by torchrun (PyTorch's launcher; no launcher of our own).

    torchrun --nproc_per_node N train_sft.py ...        # or: python -m torch.distributed.run --nproc_per_node N ...

Without torchrun's environment (WORLD_SIZE unset or 1) every function here is a no-op: rank 0 of 1, no
process group, tensors returned as they are, so a plain `python train_sft.py` behaves exactly as before.

The conventions train_sft.py, train_rm.py and train_ppo.py share:
- `--batch-size` is per rank: one optimiser step sees world_size * batch_size examples. Rank r takes
  positions [r * B, (r + 1) * B) of each global batch (`batch_positions`), so N ranks of B see exactly the
  examples one process of N * B sees, and their averaged gradient is that process's gradient.
- Gradients are averaged by an explicit all-reduce after backward (`all_reduce_grads`) instead of the
  DistributedDataParallel wrapper: DDP syncs only gradients of calls through a module's forward(), and
  our scripts call `.hidden`, `.score` and `.values` too. The arithmetic is DDP's; what is lost is DDP's
  overlap of communication with the backward pass.
- Every rank starts from rank 0's parameters (`broadcast_params`, as DDP does at construction) and seeds
  its own RNGs with `rank_seed(seed)` (dropout, sampling); rank 0's seed is the single-process seed.
- Only rank 0 writes checkpoints and metrics. `init` points the other ranks' stdout at /dev/null, so
  status lines and printed samples come once; stderr (warnings, errors) stays open on every rank.
- Backend: gloo for CPU tensors, nccl when the script runs on CUDA (one GPU per rank, cuda:LOCAL_RANK).
- All ranks read the same data and write to one run directory: on several machines it must be shared.
"""
from __future__ import annotations

import datetime
import functools
import os
import sys

import torch
import torch.distributed as dist

RANK_STRIDE = 2**31 - 1  # rank_seed offset: a Mersenne prime, so rank streams stay apart for any sane seed


def world_size() -> int:
    """Number of processes in the torchrun job (1 without one)."""
    return dist.get_world_size() if dist.is_initialized() else 1


def rank() -> int:
    """This process's rank, 0 .. world_size - 1 (0 without torchrun)."""
    return dist.get_rank() if dist.is_initialized() else 0


def is_main() -> bool:
    """True on rank 0 (and in a single process): the rank that writes files and prints."""
    return rank() == 0


def init(device: str = "cpu") -> None:
    """Join the process group when started by torchrun with WORLD_SIZE > 1; otherwise do nothing.

    Reads RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT (set by torchrun). device "cuda..." picks
    nccl and binds this rank to GPU LOCAL_RANK; anything else picks gloo. Idempotent.
    """
    if dist.is_initialized() or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return
    missing = [k for k in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing:
        raise ValueError(f"WORLD_SIZE is {os.environ['WORLD_SIZE']} but {', '.join(missing)} not set: "
                         "start data-parallel runs with torchrun (python -m torch.distributed.run)")
    cuda = str(device).startswith("cuda")
    if cuda:
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    # generous timeout: ranks > 0 wait at the next collective while rank 0 alone evaluates
    dist.init_process_group("nccl" if cuda else "gloo", timeout=datetime.timedelta(minutes=60))
    if not is_main():
        sys.stdout = open(os.devnull, "w", encoding="utf-8")


def cleanup() -> None:
    """Leave the process group (when there is one)."""
    if dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    """Wait until every rank gets here (nothing to wait for in a single process)."""
    if dist.is_initialized():
        dist.barrier()


def rank_seed(seed: int) -> int:
    """This rank's seed: `seed` on rank 0 (so one process is unchanged), seed + rank * (2^31 - 1) elsewhere."""
    return seed + rank() * RANK_STRIDE


def batch_positions(step: int, batch_size: int) -> range:
    """Positions in the data stream of this rank's share of step `step`'s global batch of world * B."""
    start = (step * world_size() + rank()) * batch_size
    return range(start, start + batch_size)


def step_indices(n: int, seed: int, step: int, batch_size: int) -> list[int]:
    """The indices (into n training examples) of this rank's share of step `step`: epoch e is a permutation of range(n)
    seeded by seed * 1000003 + e, read in order, so the batches depend on (seed, step) alone and a resumed run sees
    the same ones (train_sft.py, train_rm.py and train_dpo.py share this order)."""
    return [_epoch_order(n, seed, pos // n)[pos % n] for pos in batch_positions(step, batch_size)]


@functools.lru_cache(maxsize=4)
def _epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1000003 + epoch)).tolist()


# ---- collectives (identity in a single process) ------------------------------------------------

def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum of `t` over ranks (a new tensor; `t` itself in a single process)."""
    if world_size() == 1:
        return t
    host = t.device.type == "cpu" and dist.get_backend() == "nccl"  # nccl reduces GPU tensors only
    t = t.detach().clone() if not host else t.detach().to(f"cuda:{torch.cuda.current_device()}")
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.cpu() if host else t


def all_reduce_mean(t: torch.Tensor) -> torch.Tensor:
    """Mean of `t` over ranks (`t` itself in a single process)."""
    return t if world_size() == 1 else all_reduce_sum(t) / world_size()


def all_reduce_mean_dict(d: dict) -> dict:
    """The mean over ranks of every number in `d`, with one all-reduce (other values pass unchanged)."""
    if world_size() == 1:
        return d
    keys = [k for k, v in d.items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    mean = all_reduce_mean(torch.tensor([float(d[k]) for k in keys], dtype=torch.float64)).tolist()
    return {**d, **dict(zip(keys, mean))}


def mean_weight(n_local: torch.Tensor) -> float | torch.Tensor:
    """Factor that turns a rank's mean over its n_local items into its share of the global mean.

        weight = world * n_local / sum_ranks(n_local)
        mean_ranks(weight * loss_local) = sum_ranks(n_local * loss_local) / sum_ranks(n_local) = global mean

    so after gradient averaging, ranks holding different numbers of items (e.g. response tokens) train on
    exactly the loss one process computes over the whole batch. 1.0 in a single process.
    """
    if world_size() == 1:
        return 1.0
    n_local = n_local.detach().float()
    return world_size() * n_local / all_reduce_sum(n_local).clamp(min=1.0)


@torch.no_grad()
def all_reduce_grads(params, bucket_numel: int = 2**24) -> None:
    """Average every parameter's .grad over ranks, as DDP does after backward (one all-reduce per bucket
    of about 16M numbers). Parameters without a gradient are skipped; every rank must have the same ones."""
    if world_size() == 1:
        return
    grads = [p.grad for p in params if p.grad is not None]
    while grads:
        bucket, n = [], 0
        while grads and (not bucket or n + grads[0].numel() <= bucket_numel):
            bucket.append(grads.pop(0))
            n += bucket[-1].numel()
        flat = torch.cat([g.reshape(-1) for g in bucket])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        flat /= world_size()
        for g, part in zip(bucket, flat.split([g.numel() for g in bucket])):
            g.copy_(part.view_as(g))


@torch.no_grad()
def broadcast_params(*modules: torch.nn.Module) -> None:
    """Copy rank 0's parameters and buffers into every rank's modules (in place)."""
    if world_size() == 1:
        return
    for m in modules:
        for t in list(m.parameters()) + list(m.buffers()):
            dist.broadcast(t.data, src=0)


def broadcast_str(s: str | None) -> str:
    """Rank 0's string on every rank (sent as UTF-8 bytes in a tensor: no pickle); `s` in a single process."""
    if world_size() == 1:
        return s
    dev = "cuda" if dist.get_backend() == "nccl" else "cpu"
    data = torch.frombuffer(bytearray(s.encode("utf-8")), dtype=torch.uint8) if is_main() else None
    n = torch.tensor([data.numel() if is_main() else 0], dtype=torch.long, device=dev)
    dist.broadcast(n, src=0)
    buf = data.to(dev) if is_main() else torch.empty(int(n.item()), dtype=torch.uint8, device=dev)
    dist.broadcast(buf, src=0)
    return buf.cpu().numpy().tobytes().decode("utf-8")
