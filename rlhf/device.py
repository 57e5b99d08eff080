"""Where a run computes: --device auto | cpu | cuda | cuda:N, the CUDA switches, peak GPU memory, out-of-memory.

Models, batches, the KV cache, the torch.Generators and the sampling noise live on the device; tokenisation,
the gold judge and JSONL I/O stay on the CPU. On CUDA: TF32 matmuls are allowed (`--dtype fp32` then runs its
matrix multiplies in TF32), SDPA picks its fused flash / memory-efficient kernels (rlhf/model.py passes
`is_causal` or a boolean mask and no other constraint), and `--dtype auto` means bf16 autocast with fp32 master
weights (rlhf/precision.py). On the CPU `auto` is fp32, so the CPU numbers stay what they were.
"""
from __future__ import annotations

import contextlib
import os
import time

import torch


def device_error(name: str) -> str | None:
    """None when `name` can be used here, else a message naming what is available (for rlhf.config.arg(check=))."""
    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    have = "no CUDA GPU is visible to torch" if n == 0 else f"{n} CUDA GPU{'s' if n > 1 else ''} visible (cuda:0..cuda:{n - 1})"
    if name in ("auto", "cpu"):
        return None
    if name == "cuda" or (name.startswith("cuda:") and name[5:].isdigit()):
        index = int(name[5:]) if name != "cuda" else 0
        return None if index < n else f"is {name!r} but {have}; use --device cpu or auto"
    return f"must be auto, cpu, cuda or cuda:N (got {name!r}); {have}"


def cpu_threads(quota_files=("/sys/fs/cgroup/cpu.max", "/sys/fs/cgroup/cpu/cpu.cfs_quota_us")) -> int:
    """Threads for `--threads 0`: the CPUs this process may actually use, shared among torchrun's processes on this
    machine, and never more than torch's own default.

    The CPUs it may use are the fewer of its affinity mask (os.sched_getaffinity: taskset, a container's cpuset) and
    its cgroup CPU quota rounded up (cgroup v2 cpu.max "200000 100000" = 2 CPUs; v1 cfs_quota_us / cfs_period_us).
    torch's default counts the machine's cores and sees neither a quota nor other processes, so in a container
    with a quota, or under torchrun on the CPU, it runs more threads than there are CPUs, and they wait on each other.
    """
    offered = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    for path in quota_files:
        try:
            text = open(path).read().split()
            if path.endswith("cpu.max"):
                quota, period = text[0], text[1]
            else:
                quota, period = text[0], open(path.replace("cfs_quota_us", "cfs_period_us")).read().split()[0]
        except (OSError, IndexError):
            continue
        if quota not in ("max", "-1") and int(period) > 0:
            offered = min(offered, max(1, -(-int(quota) // int(period))))
        break
    procs = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    return max(1, min(torch.get_num_threads(), offered // procs))


M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # glibc's mallopt parameters (malloc.h)


def keep_freed_memory() -> bool:
    """Let the next step's tensors reuse the pages the last step's freed (glibc malloc): CPU speed, the same arithmetic.

    glibc serves each allocation above its mmap threshold (adaptive, at most 32 MiB) with a fresh mmap and unmaps it
    on free, so every training step's large tensors (logits, activations, their gradients) are faulted in again page
    by page: about 100,000 minor page faults (400 MB) per SFT step at bench.py's peer shape. With mmap and trimming
    off (mallopt M_MMAP_MAX 0, M_TRIM_THRESHOLD 2 GiB), freed blocks stay in the process and are reused;
    it then holds its peak memory until it exits. RLHF_KEEP_FREED_MEMORY=0 leaves glibc's defaults (an A/B).
    Returns True when set: Linux with glibc, not turned off."""
    if os.environ.get("RLHF_KEEP_FREED_MEMORY", "1") == "0":
        return False
    try:
        import ctypes
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(libc.mallopt(M_TRIM_THRESHOLD, ctypes.c_int(2**31 - 1)))
    except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to set
        return False


def resolve_device(name: str) -> torch.device:
    """auto -> cuda when available, else cpu. Under torchrun a CUDA run uses GPU LOCAL_RANK (one GPU per rank):
    auto picks the GPUs only when there is one for every process on this machine, and an explicit cuda:N is refused
    (each rank's GPU is its LOCAL_RANK)."""
    err = device_error(name)
    if err:
        raise ValueError(f"--device {err}")
    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and "LOCAL_RANK" in os.environ:
        procs = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        if name.startswith("cuda:"):
            raise ValueError(f"--device {name} under torchrun: pass --device cuda (or auto); rank r runs on cuda:LOCAL_RANK")
        if name == "cuda" and n < procs:
            raise ValueError(f"--device cuda under torchrun: {procs} processes on this machine but {n} GPU(s) visible; "
                             "start at most one process per GPU, or use --device cpu")
        if name == "auto":
            name = "cuda" if n >= procs else "cpu"
        if name == "cuda":
            name = f"cuda:{int(os.environ['LOCAL_RANK'])}"
    elif name == "auto":
        name = "cuda" if n else "cpu"
    dev = torch.device(name)
    if dev.type == "cuda":
        if dev.index is None:
            dev = torch.device("cuda", torch.cuda.current_device())
        torch.cuda.set_device(dev)
        torch.backends.cuda.matmul.allow_tf32 = True  # fp32 matmuls in TF32 (10-bit mantissa), as nanoGPT does
        torch.backends.cudnn.allow_tf32 = True
    return dev


def resolve_dtype(dtype: str, device: torch.device) -> str:
    """--dtype auto -> bf16 on CUDA, fp32 on the CPU; fp32 and bf16 pass through."""
    return ("bf16" if device.type == "cuda" else "fp32") if dtype == "auto" else dtype


def peak_memory(device: torch.device) -> dict:
    """{"memory/peak_gpu_mib": ...} (torch.cuda.max_memory_allocated) on CUDA; {} on the CPU."""
    if device.type != "cuda":
        return {}
    return {"memory/peak_gpu_mib": torch.cuda.max_memory_allocated(device) / 2**20}


@contextlib.contextmanager
def oom_guard(stage, batch: str, ckpt):
    """Turn CUDA out-of-memory inside the block into one line naming the stage, the batch size and the flag to
    lower, and where the last good checkpoint is (checkpoints are only ever replaced whole, so it is intact).

        with oom_guard(lambda: f"PPO iteration {step + 1}", "--batch-size 64", out / "ckpt"): ...

    stage: a string, or a function giving it when the error happens (e.g. the iteration the loop had reached).
    """
    try:
        yield
    except torch.OutOfMemoryError:
        from rlhf.checkpoint import last_good
        raise SystemExit(f"error: CUDA out of memory in {stage() if callable(stage) else stage}; lower {batch}, or add --grad-checkpoint; "
                         f"{last_good(ckpt)}") from None


def total_memory(device: torch.device) -> int | None:
    """Bytes of memory a run on `device` can use at most: the GPU's, or the machine's physical memory (None when
    the OS does not say)."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def check_memory(need: int, device: torch.device, flags: str) -> None:
    """Refuse, before allocating, a size that needs more than the device's whole memory (`need` bytes, a lower
    bound such as GPTConfig.training_bytes), naming the flags that set it."""
    have = total_memory(device)
    if have is not None and need > have:
        raise ValueError(f"{flags}: a training step at these sizes needs at least {need / 2**30:,.1f} GiB, but the "
                         f"{'GPU' if device.type == 'cuda' else 'machine'} has {have / 2**30:,.1f} GiB; lower them")


def clock(device):
    """A clock for intervals (time.perf_counter) that first waits for the GPU's queued work, so per-stage timings on
    CUDA are real. Shared by train_ppo.py and bench.py."""
    device = torch.device(device)

    def now() -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter()
    return now
