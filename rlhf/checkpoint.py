"""Checkpoint I/O: directories of safetensors + JSON, written atomically as a whole, never pickle.

A checkpoint is a directory:

    model.safetensors      the main model's weights (plain tensors: loading runs no code)
    config.json            the dict the caller passes (model config, run arguments, task and tokenizer
                           info) plus "kind": "policy" | "rm" | "value" | "aux"
    tokenizer.json         optional: the tokenizer as the `tokenizers` library serialises it
    <name>.safetensors     optional further tensor files (a PPO value model, RLP-UML heads, optimiser state)
    <name>.json            optional further JSON files (state.json: the resume state, rlhf/resume.py)

Crash safety: the whole directory is written into "<path>.tmp" and fsynced; then "<path>" is renamed to
"<path>.old", "<path>.tmp" to "<path>", and "<path>.old" is removed. At every instant one complete
checkpoint exists at "<path>" or "<path>.old", and loading falls back to the latter. Everything a
training step owns (every trainable module, the optimisers, the step and RNG states) goes into one such
directory, so the parts of a checkpoint can never be from different steps.

Tied weights: safetensors refuses tensors that share memory. A state-dict entry that is the very same
tensor as an earlier one (e.g. a tied `lm_head.weight` beside `wte.weight`) is stored once, under the
first name, and recorded in config.json as "_aliases": {"lm_head.weight": "wte.weight"};
load_checkpoint puts the alias back (the same tensor object) and drops "_aliases" from the config it
returns. Other tensors that merely overlap in memory are saved as copies.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import warnings
from pathlib import Path

import safetensors.torch
import torch

from rlhf.data import DataError, atomic_write_bytes, fsync_dir, read_json, write_json

KINDS = ("policy", "rm", "value", "aux")  # aux: extra trainable parts (e.g. RLP-UML heads)
_PICKLE_SUFFIXES = {".pt", ".pth", ".bin", ".pkl", ".pickle", ".ckpt"}
_PICKLE_MSG = ("looks like a pickle file; this project loads safetensors + JSON only, never pickle, "
               "so no code runs on load")


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


def save_checkpoint(path, state_dict: dict[str, torch.Tensor], config: dict, kind: str,
                    tokenizer_json: str | None = None, *, tensors: dict[str, dict[str, torch.Tensor]] | None = None,
                    json_files: dict[str, dict] | None = None) -> None:
    """Write a checkpoint directory at `path`, crash-safe as a whole (see the module docstring).

    tensors: further safetensors files, {"value": state_dict} -> value.safetensors (tied weights as above);
    json_files: further JSON files, {"state": {...}} -> state.json. All of it lands together (the rename of "<path>.tmp").
    """
    if kind not in KINDS:
        raise CheckpointError(f"unknown checkpoint kind {kind!r}; choose from: {', '.join(KINDS)}")
    files = {"model": (state_dict, config | {"kind": kind}), **{n: (sd, None) for n, sd in (tensors or {}).items()}}
    if any(n in ("config", "tokenizer") for n in (json_files or {})):
        raise CheckpointError("json_files may not replace config.json or tokenizer.json")
    path = Path(path)
    tmp, old = path.with_name(path.name + ".tmp"), path.with_name(path.name + ".old")
    try:
        if tmp.exists():  # left by an earlier crash mid-save: never trust it
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        for name, (sd, cfg) in files.items():
            deduped, aliases = _dedupe(sd)
            _write_safetensors(deduped, tmp / f"{name}.safetensors")
            if cfg is not None:  # the main model: its aliases live in config.json
                cfg = {k: v for k, v in cfg.items() if k != "_aliases"} | ({"_aliases": aliases} if aliases else {})
                write_json(tmp / "config.json", cfg)
            elif aliases:
                raise CheckpointError(f"{name}.safetensors: tied weights are only supported in the main model")
        if tokenizer_json is not None:
            atomic_write_bytes(tmp / "tokenizer.json", [tokenizer_json.encode("utf-8")])
        for name, obj in (json_files or {}).items():
            write_json(tmp / f"{name}.json", obj)
        fsync_dir(tmp)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, DataError):  # e.g. a config value that is not JSON-able
            raise CheckpointError(str(e)) from None
        if isinstance(e, (OSError, safetensors.SafetensorError)):  # a full disk, a file-size limit, a read-only directory
            raise CheckpointError(f"could not write the checkpoint {path} ({_reason(e)}); nothing of it was kept; "
                                  f"{last_good(path)}") from e
        raise
    try:
        if path.exists():
            if old.exists():
                shutil.rmtree(old)
            path.rename(old)
        tmp.rename(path)
    except OSError as e:  # a complete checkpoint is at <path> or <path>.old (loading tries both), the new one at .tmp
        raise CheckpointError(f"could not put the checkpoint {path} in place ({_reason(e)}); the complete previous one "
                              f"is at {path if path.exists() else old}, the new one at {tmp}") from e
    fsync_dir(path.parent)  # best effort
    shutil.rmtree(old, ignore_errors=True)  # the new checkpoint is in place; a leftover .old goes at the next save


def _reason(e: BaseException) -> str:
    """What the OS said: "File too large (errno 27)"; safetensors wraps it in its own message."""
    if isinstance(e, OSError) and e.strerror:
        return f"{e.strerror} (errno {e.errno})" + (f": {e.filename}" if e.filename else "")
    return str(e).replace("Error while serializing: ", "")


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


def weights_digest(path) -> str:
    """The first 16 hex digits of the sha256 of a checkpoint's model.safetensors (the file load_model reads): names
    the weights themselves, so other weights saved at the same path (a later step, a rerun) are told apart."""
    h = hashlib.sha256()
    with open(_resolve(path) / "model.safetensors", "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


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
    bad = next((k for k, t in state_dict.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())), None)
    if bad is not None:  # evaluating or training from such weights would report NaN as if it were a result
        raise CheckpointError(f"{model_file}: parameter {bad!r} holds NaN or inf values; this checkpoint cannot be used")
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


def load_tensors(path, name: str, map_location="cpu") -> dict[str, torch.Tensor]:
    """A further tensor file of a checkpoint, <path>/<name>.safetensors (saved with save_checkpoint(tensors=...))."""
    file = _resolve(path) / f"{name}.safetensors"
    if not file.is_file():
        raise CheckpointError(f"{file.parent}: no {file.name} (saved without it)")
    return _load_safetensors(file, map_location)


def load_json(path, name: str) -> dict:
    """A further JSON file of a checkpoint, <path>/<name>.json; CheckpointError when missing or unreadable."""
    file = _resolve(path) / f"{name}.json"
    if not file.is_file():
        raise CheckpointError(f"{file.parent}: no {file.name}")
    return _read_json(file)


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
    tok = load_tokenizer(path)
    saved = config.get("tokenizer")  # the fingerprint of the tokenizer the weights were trained with
    if saved is not None and saved != tok.fingerprint:
        raise CheckpointError(f"{path}: tokenizer.json is not the tokenizer these weights were trained with (its fingerprint "
                              f"is {tok.fingerprint}, config.json records {saved!r}); restore the checkpoint's own tokenizer.json")
    model.load_state_dict(state)
    return model, tok, config
