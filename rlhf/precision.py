"""Mixed precision and compilation, shared by the training scripts and bench.py.

`--dtype bf16` runs the forward passes under `torch.autocast(bfloat16)`: matrix multiplies and attention
in bf16, weights, gradients and optimiser state in fp32. Whatever feeds a loss stays fp32: the callers
cast logits with `.float()` before `log_softmax` (rlhf.sft.sft_loss, rlhf.sampling.response_logprobs),
and the RM and value heads read fp32 through `ScalarModel.read`, so log-probabilities, ratios, KL,
advantages and losses are computed in fp32. Backward runs outside the autocast context, as PyTorch advises.
No loss scaling: bf16 has fp32's exponent range.

`--compile` compiles each transformer block in place (`Block.compile()`), so every path through the
trunk gains (`forward`, `hidden`, `ScalarModel.score`, `response_logprobs`) while parameter names,
optimisers and checkpoints stay as they are. `generate` runs its blocks eagerly: its KV cache grows by one
slot a step, and the guards on that would recompile at every step.
"""
from __future__ import annotations

import contextlib

import torch

DTYPES = ("fp32", "bf16")


def check_dtype(dtype: str) -> str:
    if dtype not in DTYPES:
        raise ValueError(f"--dtype must be one of: {', '.join(DTYPES)} (got {dtype!r})")
    return dtype


def autocast(dtype: str = "fp32", device="cpu"):
    """A context manager: bf16 autocast on `device` ("cpu" or "cuda") for dtype "bf16", nothing for "fp32"."""
    check_dtype(dtype)
    if dtype == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)


def maybe_compile(module: torch.nn.Module, compile: bool) -> torch.nn.Module:
    """Compile every transformer block inside `module` in place when asked; return the module.

    The first calls are slow (tracing and compiling each new input shape, tens of seconds on a CPU);
    later calls reuse the compiled code. A module without blocks (a linear value head) is left alone.
    """
    if compile:
        from rlhf.model import Block
        for m in module.modules():
            if isinstance(m, Block):
                m.compile(dynamic=None)
    return module
