"""Resume state: everything besides the weights that a training step needs to continue exactly.

    save_step(ckpt, step, {"policy": policy, "value": value}, {"policy": opt, "value": vopt}, config, tok_json)
    state = resume(ckpt, {"policy": policy, "value": value}, {"policy": opt, "value": vopt})   # -> {"step": ..., ...}

The first module is the checkpoint's main model (model.safetensors + config.json, loadable by
rlhf.checkpoint.load_model, its name the checkpoint's kind); every other module is <name>.safetensors
beside it. optimizer.safetensors holds every optimiser's per-parameter tensors as
"<optimiser>.state.<param index>.<name>"; state.json holds the step, the RNG states (python, numpy, torch,
CUDA), the caller's extra values (e.g. PPO's KL coefficient) and each optimiser's param groups. All of it is
one checkpoint directory, written into "<ckpt>.tmp" and committed by renaming it into place (the replaced one waits
as "<ckpt>.old" for that instant; rlhf/checkpoint.py), so a crash at any moment leaves a consistent step to resume from.
"""
from __future__ import annotations

import base64
import random
import warnings

import numpy as np
import torch

from rlhf.checkpoint import CheckpointError, _resolve, check_state_dict, load_checkpoint, load_json, load_tensors, save_checkpoint

_RESERVED = ("step", "rng", "optimizers")


# ---- RNG state ---------------------------------------------------------------------------------

def _b64(t: torch.Tensor) -> str:
    return base64.b64encode(t.numpy().tobytes()).decode("ascii")


def _unb64(s: str) -> torch.Tensor:
    return torch.frombuffer(bytearray(base64.b64decode(s)), dtype=torch.uint8)


def rng_state(generators: dict[str, torch.Generator] | None = None) -> dict:
    """A JSON-able snapshot of python's, numpy's and torch's global RNGs (CUDA's too) and the named generators."""
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"python": [version, list(internal), gauss],
             "numpy": [name, keys.tolist(), int(pos), int(has_gauss), float(cached)],
             "torch": _b64(torch.get_rng_state()),
             "generators": {k: _b64(g.get_state()) for k, g in (generators or {}).items()}}
    if torch.cuda.is_available() and torch.cuda.is_initialized():  # a CPU run on a GPU machine leaves CUDA alone
        state["torch_cuda"] = [_b64(s) for s in torch.cuda.get_rng_state_all()]
    return state


def set_rng_state(state: dict, generators: dict[str, torch.Generator] | None = None) -> None:
    """Restore what rng_state() captured; each named generator must be in the snapshot."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(_unb64(state["torch"]))
    if "torch_cuda" in state and torch.cuda.is_available() and torch.cuda.is_initialized():
        if len(state["torch_cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all([_unb64(s) for s in state["torch_cuda"]])
        else:  # resuming on a different number of GPUs: the streams cannot match anyway
            warnings.warn("CUDA RNG state saved for a different number of GPUs; not restored")
    for k, g in (generators or {}).items():
        if k not in state.get("generators", {}):
            raise CheckpointError(f"no RNG state saved for generator {k!r} (saved: {sorted(state.get('generators', {}))})")
        g.set_state(_unb64(state["generators"][k]))


# ---- optimiser state ---------------------------------------------------------------------------

def _optimizer_parts(name: str, optimizer) -> tuple[dict, dict]:
    """(tensors for optimizer.safetensors, JSON part for state.json) of one optimiser."""
    sd = optimizer.state_dict()
    tensors, scalars = {}, {}
    for idx, per_param in sd["state"].items():
        for key, v in per_param.items():
            if isinstance(v, torch.Tensor):
                tensors[f"{name}.state.{idx}.{key}"] = v.detach().contiguous()
            else:  # e.g. a `step` kept as a Python number by an older or custom optimizer
                scalars[f"state.{idx}.{key}"] = v
    # floats, bools, None stay; tuples (Adam's betas) become lists; a tensor lr becomes a number
    groups = [{k: (v.tolist() if isinstance(v, torch.Tensor) else v) for k, v in g.items()} for g in sd["param_groups"]]
    return tensors, {"param_groups": groups, "scalars": scalars}


def _load_optimizer(d, name: str, optimizer, tensors: dict, saved: dict) -> None:
    """Restore one optimiser in place; shapes are checked for element-wise optimisers (Adam, AdamW, SGD, RMSprop)."""
    groups, live = saved["param_groups"], optimizer.param_groups
    params = [p for g in live for p in g["params"]]
    if [len(g["params"]) for g in groups] != [len(g["params"]) for g in live]:
        raise CheckpointError(f"{d}: the checkpoint's {name!r} optimizer has groups of "
                              f"{[len(g['params']) for g in groups]} parameters, this one "
                              f"{[len(g['params']) for g in live]} — is it the same model and optimizer?")
    prefix = f"{name}."
    values = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)} | saved["scalars"]
    per_param: dict[int, dict] = {}
    for key, v in values.items():
        try:
            _, idx, field = key.split(".", 2)
            p = params[int(idx)]
        except (ValueError, IndexError):
            raise CheckpointError(f"{d}: {name!r} optimizer state has an unexpected entry {key!r}") from None
        if isinstance(v, torch.Tensor) and v.dim() > 0 and v.shape != p.shape:
            raise CheckpointError(f"{d}: {name!r} optimizer state {key!r} has shape {tuple(v.shape)} but parameter "
                                  f"{idx} has shape {tuple(p.shape)} — was it trained with another size?")
        per_param.setdefault(int(idx), {})[field] = v
    for g_saved, g in zip(groups, live):
        for k, v in g_saved.items():  # tuples came back as lists; match the live optimizer
            if isinstance(g.get(k), tuple) and isinstance(v, list):
                g_saved[k] = tuple(v)
    optimizer.load_state_dict({"state": per_param, "param_groups": groups})


# ---- one step --------------------------------------------------------------------------------

def save_step(path, step: int, modules: dict, optimizers: dict, config: dict, tokenizer_json: str | None = None,
              extra: dict | None = None, generators: dict[str, torch.Generator] | None = None) -> None:
    """Save everything a training step owns as one checkpoint directory (see the module docstring).

    modules: name -> nn.Module, the first being the main model (its name is the checkpoint's kind);
    optimizers: name -> torch.optim.Optimizer; extra: JSON-able values for state.json (not "step", "rng",
    "optimizers"); generators: named torch.Generators whose states are saved with the global RNGs.
    """
    clash = [k for k in (extra or {}) if k in _RESERVED]
    if clash:
        raise CheckpointError(f"extra may not use the reserved key {clash[0]!r}")
    (kind, main), *others = modules.items()
    opt_tensors, opt_json = {}, {}
    for name, opt in optimizers.items():
        opt_tensors[name], opt_json[name] = _optimizer_parts(name, opt)
    state = {"step": int(step), "rng": rng_state(generators), **(extra or {}), "optimizers": opt_json}
    tensors = {name: m.state_dict() for name, m in others}
    if optimizers:
        tensors["optimizer"] = {k: v for part in opt_tensors.values() for k, v in part.items()}
    save_checkpoint(path, main.state_dict(), config, kind, tokenizer_json, tensors=tensors, json_files={"state": state})


def _read_state(path) -> dict:
    d = _resolve(path)
    if not (d / "state.json").is_file():
        raise CheckpointError(f"{d}: no state.json (saved without training state, so it cannot be resumed)")
    state = load_json(d, "state")
    step, rng = state.get("step"), state.get("rng")
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        raise CheckpointError(f"{d / 'state.json'}: field 'step': expected a non-negative integer, got {step!r}")
    if not isinstance(rng, dict) or not all(k in rng for k in ("python", "numpy", "torch")):
        raise CheckpointError(f"{d / 'state.json'}: field 'rng': expected the RNG states (python, numpy, torch), got "
                              f"{type(rng).__name__}")
    if not isinstance(state.get("optimizers", {}), dict):
        raise CheckpointError(f"{d / 'state.json'}: field 'optimizers': expected an object")
    return state


def load_train_state(path) -> dict:
    """state.json of a checkpoint saved by save_step: {"step", "rng", extra values...}, without optimiser state."""
    state = _read_state(path)
    state.pop("optimizers", None)
    return state


def resume(path, modules: dict, optimizers: dict, generators: dict[str, torch.Generator] | None = None) -> dict:
    """Load what save_step wrote into the live modules and optimisers (in place, shapes checked) and restore
    the RNG states. Returns state.json's values: "step" and the caller's extra values."""
    d = _resolve(path)
    state = _read_state(d)  # first: a checkpoint that cannot be resumed changes nothing
    (kind, main), *others = modules.items()
    sd, _ = load_checkpoint(d, expected_kind=kind)
    for name, module, state_dict in [(kind, main, sd)] + [(n, m, load_tensors(d, n)) for n, m in others]:
        check_state_dict(state_dict, module, d if module is main else d / f"{name}.safetensors")
        module.load_state_dict(state_dict)
    saved = state.pop("optimizers", {})
    missing = [name for name in optimizers if name not in saved]
    if missing:
        raise CheckpointError(f"{d}: holds no state of the {missing[0]!r} optimizer (saved: {', '.join(sorted(saved)) or 'none'})")
    if optimizers:
        tensors = load_tensors(d, "optimizer")
        for name, opt in optimizers.items():
            _load_optimizer(d, name, opt, tensors, saved[name])
    set_rng_state(state.pop("rng"), generators)
    return state
