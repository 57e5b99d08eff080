"""Directory checkpoints: safetensors + JSON only, written atomically, never pickle.

A checkpoint is a directory:

    model.safetensors      the weights (plain tensors: loading runs no code)
    config.json            the dict the caller passes (model config, run arguments, task and tokenizer
                           info) plus "kind": "policy" | "rm" | "value"
    tokenizer.json         optional: the tokenizer as the `tokenizers` library serialises it
    optimizer.safetensors  for resume: optimizer tensors as "state.{param index}.{name}"
    state.json             for resume: the caller's train_state (step, RNG states from rng_state(), ...)
                           plus "optimizer_param_groups" and "optimizer_state_scalars"

Crash safety: everything is written into "<path>.tmp" and fsynced; then "<path>" is renamed to
"<path>.old", "<path>.tmp" to "<path>", and "<path>.old" is removed. At every instant a complete
checkpoint exists at "<path>" or "<path>.old", and load_checkpoint falls back to the latter.
A run that saves two checkpoints per step (PPO's value model, then its policy) saves the first with
save_companion, which keeps the one it replaces as "<path>.prev" until the second is written; on resume,
find_companion picks whichever of the two matches the main checkpoint's step.

Tied weights: safetensors refuses tensors that share memory. A state-dict entry that is the very same
tensor as an earlier one (e.g. a tied `lm_head.weight` beside `wte.weight`) is stored once, under the
first name, and recorded in config.json as "_aliases": {"lm_head.weight": "wte.weight"};
load_checkpoint puts the alias back (the same tensor object) and drops "_aliases" from the config it
returns. Other tensors that merely overlap in memory are saved as copies.
"""
from __future__ import annotations

import base64
import contextlib
import json
import os
import random
import shutil
import warnings
from pathlib import Path

import numpy as np
import safetensors.torch
import torch

from rlhf.data import DataError, atomic_write_bytes, fsync_dir, read_json, write_json

KINDS = ("policy", "rm", "value", "aux")  # aux: extra trainable parts (e.g. RLP-UML heads)
_PICKLE_SUFFIXES = {".pt", ".pth", ".bin", ".pkl", ".pickle", ".ckpt"}
_PICKLE_MSG = ("looks like a pickle file; this project loads safetensors + JSON only, never pickle, "
               "so no code runs on load")
_OPT_KEYS = ("optimizer_param_groups", "optimizer_state_scalars")


class CheckpointError(ValueError):
    """A checkpoint is missing, incomplete, corrupt, of the wrong kind or does not fit the model."""


# ---- saving ------------------------------------------------------------------------------------

def _dedupe(state_dict: dict) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    tensors: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    seen: dict[tuple, str] = {}
    for name, t in state_dict.items():
        if not isinstance(t, torch.Tensor):
            raise CheckpointError(f"state dict entry {name!r} is a {type(t).__name__}, not a tensor")
        t = t.detach()
        key = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), t.stride(), t.dtype, t.device)
        if t.numel() and key in seen:  # the same view of the same memory: an alias (tied weight)
            aliases[name] = seen[key]
            continue
        seen.setdefault(key, name)
        tensors[name] = t
    ptr_count: dict[int, int] = {}
    for t in tensors.values():
        ptr = t.untyped_storage().data_ptr()
        ptr_count[ptr] = ptr_count.get(ptr, 0) + 1
    # safetensors wants contiguous tensors with memory of their own
    for name, t in tensors.items():
        if t.numel() and (ptr_count[t.untyped_storage().data_ptr()] > 1 or not t.is_contiguous()):
            tensors[name] = t.contiguous().clone()
    return tensors, aliases


def _write_safetensors(tensors: dict[str, torch.Tensor], file: Path) -> None:
    # the file lives in the fresh "<path>.tmp" directory, so a plain write + fsync is enough
    safetensors.torch.save_file(tensors, str(file), metadata={"format": "pt"})
    with open(file, "rb+") as f:
        os.fsync(f.fileno())


def _write_optimizer(optimizer, directory: Path) -> dict:
    """Per-parameter tensors to optimizer.safetensors; returns the JSON part for state.json."""
    sd = optimizer.state_dict()
    tensors, scalars = {}, {}
    for idx, per_param in sd["state"].items():
        for name, v in per_param.items():
            if isinstance(v, torch.Tensor):
                tensors[f"state.{idx}.{name}"] = v.detach().contiguous()
            else:  # e.g. a `step` kept as a Python number by an older or custom optimizer
                scalars[f"state.{idx}.{name}"] = v
    _write_safetensors(tensors, directory / "optimizer.safetensors")
    # floats, bools, None stay; tuples (Adam's betas) become lists; a tensor lr becomes a number
    groups = [{k: (v.tolist() if isinstance(v, torch.Tensor) else v) for k, v in g.items()} for g in sd["param_groups"]]
    return {"optimizer_param_groups": groups, "optimizer_state_scalars": scalars}


def save_checkpoint(path, state_dict: dict[str, torch.Tensor], config: dict, kind: str,
                    tokenizer_json: str | None = None, optimizer=None, train_state: dict | None = None) -> None:
    """Write a checkpoint directory at `path`, crash-safe as a whole (see the module docstring).

    optimizer: a torch.optim.Optimizer whose state is saved for resume; train_state: a JSON-able
    dict merged into state.json. state.json is written when either is given.
    """
    if kind not in KINDS:
        raise CheckpointError(f"unknown checkpoint kind {kind!r}; choose from: {', '.join(KINDS)}")
    clash = [k for k in _OPT_KEYS if k in (train_state or {})]
    if clash:
        raise CheckpointError(f"train_state may not use the reserved key {clash[0]!r}")
    path = Path(path)
    tmp, old = path.with_name(path.name + ".tmp"), path.with_name(path.name + ".old")
    tensors, aliases = _dedupe(state_dict)
    config = {k: v for k, v in config.items() if k != "_aliases"} | {"kind": kind}
    if aliases:
        config["_aliases"] = aliases
    if tmp.exists():  # left by an earlier crash mid-save: never trust it
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        _write_safetensors(tensors, tmp / "model.safetensors")
        write_json(tmp / "config.json", config)
        if tokenizer_json is not None:
            atomic_write_bytes(tmp / "tokenizer.json", [tokenizer_json.encode("utf-8")])
        if optimizer is not None or train_state is not None:
            extra = _write_optimizer(optimizer, tmp) if optimizer is not None else {}
            write_json(tmp / "state.json", {**(train_state or {}), **extra})
        fsync_dir(tmp)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, DataError):  # e.g. a config value that is not JSON-able
            raise CheckpointError(str(e)) from None
        raise
    if path.exists():
        if old.exists():
            shutil.rmtree(old)
        path.rename(old)
    tmp.rename(path)
    fsync_dir(path.parent)
    if old.exists():
        shutil.rmtree(old)


def save_companion(path, *args, **kwargs) -> None:
    """save_checkpoint(path, ...) for a checkpoint saved just before the run's main one (PPO's value model,
    RLP-UML's heads), with a train_state holding the same "step". The one it replaces is kept as
    "<path>.prev" until drop_previous(path) runs after the main save, so a crash between the two saves
    still leaves the companion that matches the main checkpoint; find_companion picks it."""
    path = Path(path)
    prev = path.with_name(path.name + ".prev")
    if path.is_dir():
        if prev.exists():
            shutil.rmtree(prev)
        path.rename(prev)
        fsync_dir(path.parent)
    save_checkpoint(path, *args, **kwargs)


def drop_previous(path) -> None:
    """Remove "<path>.prev" once the main checkpoint matching the new companion at `path` is saved."""
    prev = Path(path).with_name(Path(path).name + ".prev")
    if prev.exists():
        shutil.rmtree(prev)


def find_companion(path, step: int) -> Path:
    """The companion checkpoint (`path` or "<path>.prev") whose state.json says `step`, the main checkpoint's."""
    path = Path(path)
    found = []
    for p in (path, path.with_name(path.name + ".prev")):
        if (p / "state.json").is_file():
            s = _read_json(p / "state.json").get("step")
            if s == step:
                return p
            found.append(f"{p.name} at step {s}")
    raise CheckpointError(f"{path}: no checkpoint saved at step {step}, the step of the main checkpoint beside it "
                          f"(found: {', '.join(found) or 'none'}); rerun with --overwrite")


def last_good(path) -> str:
    """For a run stopped by a non-finite value: "the last good checkpoint is X (step N)", or that none was saved."""
    path = Path(path)
    for p in (path, path.with_name(path.name + ".old")):
        if (p / "state.json").is_file():
            with contextlib.suppress(CheckpointError):
                return f"the last good checkpoint is {p} (step {_read_json(p / 'state.json').get('step')})"
    return f"no checkpoint was saved before it ({path} does not exist yet)"


# ---- loading -----------------------------------------------------------------------------------

def _looks_like_pickle(file: Path) -> bool:
    if file.suffix.lower() in _PICKLE_SUFFIXES:
        return True
    with open(file, "rb") as f:
        head = f.read(4)
    # pickle protocol >= 2 starts with 0x80; torch.save's default format is a zip holding data.pkl
    return head[:1] == b"\x80" or head == b"PK\x03\x04"


def _resolve(path) -> Path:
    p = Path(path)
    if p.is_dir():
        return p
    if p.is_file():
        if _looks_like_pickle(p):
            raise CheckpointError(f"{p}: {_PICKLE_MSG}")
        raise CheckpointError(f"{p}: is a file; a checkpoint is a directory holding model.safetensors and config.json")
    old = p.with_name(p.name + ".old")
    if old.is_dir():
        warnings.warn(f"{p}: missing; loading {old} (a save was interrupted between its two renames)")
        return old
    raise CheckpointError(f"{p}: no such checkpoint directory")


def _check_safetensors(file: Path) -> None:
    """Refuse pickles and truncated files before safetensors sees them, with a message a user can act on."""
    size = file.stat().st_size
    with open(file, "rb") as f:
        head = f.read(8)
        if head[:1] == b"\x80" or head[:4] == b"PK\x03\x04":
            raise CheckpointError(f"{file}: {_PICKLE_MSG}")
        n = int.from_bytes(head, "little") if len(head) == 8 else None
        if n is None or n > size - 8:
            raise CheckpointError(f"{file}: truncated or corrupt safetensors file (header runs past the end "
                                  f"of the {size}-byte file)")
        try:
            header = json.loads(f.read(n))
            end = max((int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"), default=0)
        except (ValueError, TypeError, KeyError, IndexError, AttributeError, RecursionError):
            raise CheckpointError(f"{file}: truncated or corrupt safetensors file (unreadable header)") from None
    if 8 + n + end != size:
        raise CheckpointError(f"{file}: truncated or corrupt safetensors file (the header describes "
                              f"{8 + n + end} bytes, the file holds {size})")


def _load_safetensors(file: Path, device) -> dict[str, torch.Tensor]:
    _check_safetensors(file)
    try:
        return safetensors.torch.load_file(str(file), device=str(device))
    except Exception as e:  # safetensors' own error type for anything the header check missed
        raise CheckpointError(f"{file}: cannot load ({type(e).__name__}: {e})") from None


def _read_json(file: Path) -> dict:
    try:
        return read_json(file)
    except DataError as e:
        raise CheckpointError(str(e)) from None


def load_checkpoint(path, expected_kind: str | None = None, map_location="cpu") -> tuple[dict[str, torch.Tensor], dict]:
    """Load (state_dict, config) from a checkpoint directory; never unpickles anything.

    Falls back to "<path>.old" when `path` is missing (a crash between the renames of a save).
    """
    if expected_kind is not None and expected_kind not in KINDS:
        raise ValueError(f"unknown checkpoint kind {expected_kind!r}; choose from: {', '.join(KINDS)}")
    d = _resolve(path)
    model_file = d / "model.safetensors"
    if not model_file.is_file():
        pickles = sorted(f.name for f in d.iterdir() if f.suffix.lower() in _PICKLE_SUFFIXES)
        if pickles:
            raise CheckpointError(f"{d / pickles[0]}: {_PICKLE_MSG}")
        raise CheckpointError(f"{d}: not a checkpoint directory (no model.safetensors)")
    if not (d / "config.json").is_file():
        raise CheckpointError(f"{d}: not a checkpoint directory (no config.json)")
    config = _read_json(d / "config.json")
    kind = config.get("kind")
    if expected_kind is not None and kind != expected_kind:
        raise CheckpointError(f"{d}: is a {kind!r} checkpoint, expected {expected_kind!r}")
    state_dict = _load_safetensors(model_file, map_location)
    for alias, target in (config.pop("_aliases", None) or {}).items():
        if target not in state_dict:
            raise CheckpointError(f"{d}: alias {alias!r} points to {target!r}, which is not in model.safetensors")
        state_dict[alias] = state_dict[target]
    return state_dict, config


def load_tokenizer(path):
    """The checkpoint's tokenizer as an rlhf.tokenizer.Tokenizer; CheckpointError when missing or unreadable."""
    from rlhf.tokenizer import Tokenizer
    file = _resolve(path) / "tokenizer.json"
    if not file.is_file():
        raise CheckpointError(f"{path}: no tokenizer.json beside the weights")
    try:
        return Tokenizer.from_json(file.read_text(encoding="utf-8"))
    except Exception as e:  # the tokenizers library's own error type, bad UTF-8, missing special tokens
        raise CheckpointError(f"{file}: not a valid tokenizer ({type(e).__name__}: {e})") from None


def load_tokenizer_json(path) -> str | None:
    """The checkpoint's tokenizer.json as a string, or None when it was saved without one."""
    file = _resolve(path) / "tokenizer.json"
    return file.read_text(encoding="utf-8") if file.is_file() else None


def load_train_state(path, optimizer=None) -> dict:
    """Return the caller's part of state.json; when `optimizer` is given, restore its state in place.

    Shapes are checked for element-wise optimizers (Adam, AdamW, SGD, RMSprop): every non-scalar
    state tensor must have its parameter's shape.
    """
    d = _resolve(path)
    if not (d / "state.json").is_file():
        raise CheckpointError(f"{d}: no state.json (saved without training state, so it cannot be resumed)")
    state = _read_json(d / "state.json")
    groups, scalars = state.pop("optimizer_param_groups", None), state.pop("optimizer_state_scalars", None) or {}
    if optimizer is None:
        return state
    if groups is None or not (d / "optimizer.safetensors").is_file():
        raise CheckpointError(f"{d}: holds no optimizer state (it was saved without an optimizer)")
    live = optimizer.param_groups
    params = [p for g in live for p in g["params"]]
    if [len(g["params"]) for g in groups] != [len(g["params"]) for g in live]:
        raise CheckpointError(f"{d}: the checkpoint's optimizer has groups of "
                              f"{[len(g['params']) for g in groups]} parameters, this one "
                              f"{[len(g['params']) for g in live]} — is it the same model and optimizer?")
    per_param: dict[int, dict] = {}
    values = {**_load_safetensors(d / "optimizer.safetensors", "cpu"), **scalars}
    for key, v in values.items():
        try:
            _, idx, name = key.split(".", 2)
            p = params[int(idx)]
        except (ValueError, IndexError):
            raise CheckpointError(f"{d}: optimizer state has an unexpected entry {key!r}") from None
        if isinstance(v, torch.Tensor) and v.dim() > 0 and v.shape != p.shape:
            raise CheckpointError(f"{d}: optimizer state {key!r} has shape {tuple(v.shape)} but parameter "
                                  f"{idx} has shape {tuple(p.shape)} — was it trained with another size?")
        per_param.setdefault(int(idx), {})[name] = v
    for saved, g in zip(groups, live):
        for k, v in saved.items():  # tuples came back as lists; match the live optimizer
            if isinstance(g.get(k), tuple) and isinstance(v, list):
                saved[k] = tuple(v)
    optimizer.load_state_dict({"state": per_param, "param_groups": groups})
    return state


def check_state_dict(state_dict: dict, model: torch.nn.Module, path) -> None:
    """Raise CheckpointError unless `state_dict` has exactly the model's keys, each with the model's shape."""
    want = model.state_dict()
    problems = [f"parameter {k!r} is missing from the checkpoint" for k in want if k not in state_dict]
    problems += [f"the checkpoint has parameter {k!r}, which the model does not" for k in state_dict if k not in want]
    problems += [f"parameter {k!r} has shape {tuple(state_dict[k].shape)} in the checkpoint but "
                 f"{tuple(want[k].shape)} in the model — was it trained with another size?"
                 for k in want if k in state_dict and tuple(state_dict[k].shape) != tuple(want[k].shape)]
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise CheckpointError(f"{path}: " + "; ".join(problems[:3]) + more)


# ---- RNG state ---------------------------------------------------------------------------------

def _b64(t: torch.Tensor) -> str:
    return base64.b64encode(t.numpy().tobytes()).decode("ascii")


def _unb64(s: str) -> torch.Tensor:
    return torch.frombuffer(bytearray(base64.b64decode(s)), dtype=torch.uint8)


def rng_state(generators: dict[str, torch.Generator] | None = None) -> dict:
    """A JSON-able snapshot of python's, numpy's and torch's global RNGs and the named generators."""
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"python": [version, list(internal), gauss],
             "numpy": [name, keys.tolist(), int(pos), int(has_gauss), float(cached)],
             "torch": _b64(torch.get_rng_state()),
             "generators": {k: _b64(g.get_state()) for k, g in (generators or {}).items()}}
    if torch.cuda.is_available():
        state["torch_cuda"] = [_b64(s) for s in torch.cuda.get_rng_state_all()]
    return state


def set_rng_state(state: dict, generators: dict[str, torch.Generator] | None = None) -> None:
    """Restore what rng_state() captured; each named generator must be in the snapshot."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(_unb64(state["torch"]))
    if "torch_cuda" in state and torch.cuda.is_available():
        if len(state["torch_cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all([_unb64(s) for s in state["torch_cuda"]])
        else:  # resuming on a different number of GPUs: the streams cannot match anyway
            warnings.warn("CUDA RNG state saved for a different number of GPUs; not restored")
    for k, g in (generators or {}).items():
        if k not in state.get("generators", {}):
            raise CheckpointError(f"no RNG state saved for generator {k!r} (saved: {sorted(state.get('generators', {}))})")
        g.set_state(_unb64(state["generators"][k]))


# ---- models ------------------------------------------------------------------------------------

def load_model(path, kind: str, into: torch.nn.Module | None = None):
    """Load a checkpoint of `kind` as a model with its tokenizer -> (model, tokenizer, config).

    "policy" -> GPT; "rm" / "value" -> ScalarModel. With `into`, the weights are loaded into that
    module (shapes checked) instead of a new one. Another kind, another size or a missing tokenizer
    is a CheckpointError naming the path.
    """
    from rlhf.model import GPT, GPTConfig, ScalarModel  # here, not at the top: model code never needs I/O

    state, config = load_checkpoint(path, expected_kind=kind)
    if "model" not in config:
        raise CheckpointError(f"{path}: config.json has no 'model' section (not written by this project?)")
    try:
        mcfg = GPTConfig(**config["model"])
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: config.json 'model' section is not a valid GPTConfig: {e}") from None
    model = into if into is not None else (GPT(mcfg) if kind == "policy" else ScalarModel(mcfg))
    check_state_dict(state, model, path)
    model.load_state_dict(state)
    return model, load_tokenizer(path), config
