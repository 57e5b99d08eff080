"""Optimiser and learning-rate schedule shared by the training scripts."""
from __future__ import annotations

import math

import torch


def make_optimizer(params, lr: float, weight_decay: float = 0.0, betas=(0.9, 0.95), eps: float = 1e-8):
    """AdamW with weight decay on matrices only (biases, LayerNorm and 1-D params are not decayed).

    `params` is an iterable of (name, parameter) pairs, e.g. `model.named_parameters()`, or a list of
    such iterables' param-group dicts {"named": ..., "lr": ...} for separate learning rates.
    """
    groups = []
    specs = params if isinstance(params, list) and params and isinstance(params[0], dict) else [{"named": params}]
    for spec in specs:
        named = [(n, p) for n, p in spec["named"] if p.requires_grad]
        glr = spec.get("lr", lr)
        decay = [p for _, p in named if p.dim() >= 2]
        no_decay = [p for _, p in named if p.dim() < 2]
        groups += [{"params": decay, "weight_decay": weight_decay, "lr": glr, "base_lr": glr},
                   {"params": no_decay, "weight_decay": 0.0, "lr": glr, "base_lr": glr}]
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps)


def lr_factor(step: int, total: int, warmup: int = 0, schedule: str = "cosine", min_ratio: float = 0.1) -> float:
    """Multiplier on the base learning rate at `step` (0-based): linear warm-up over `warmup` steps,
    then `constant`, `linear` decay to min_ratio, or `cosine` decay to min_ratio at step `total`."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    if schedule == "constant" or total <= warmup:
        return 1.0
    frac = min(1.0, (step - warmup) / max(1, total - warmup))
    if schedule == "linear":
        return 1.0 - (1.0 - min_ratio) * frac
    if schedule == "cosine":
        return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * frac))
    raise ValueError(f"unknown lr schedule {schedule!r}; choose constant, linear or cosine")


def set_lr(optimizer, factor: float) -> None:
    for g in optimizer.param_groups:
        g["lr"] = g["base_lr"] * factor
