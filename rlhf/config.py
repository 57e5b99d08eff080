"""Script configuration: dataclass -> argparse flags, presets, limits. (A run's life cycle is rlhf/run.py.)

Each script declares one @dataclass of arguments; every field carries its help line and limits:

    lr: float = arg(1e-4, "learning rate", gt=0)
    kl_estimator: str = arg("k1", "per-token KL estimator", choices=["k1", "k2", "k3", "abs"])

parse_args turns it into flags (--kl-estimator, also --kl_estimator; bools as --flag/--no-flag;
Optional fields also accept "none"), applies a preset (a plain dict of overrides) before the explicit
flags, checks the limits and exits with argparse's status 2 and a one-line message when one is broken.
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import math
import operator
import types
import sys
import typing
from dataclasses import dataclass
from pathlib import PurePath

_LIMITS = {"ge": (">=", operator.ge), "gt": (">", operator.gt), "le": ("<=", operator.le), "lt": ("<", operator.lt)}


def arg(default=dataclasses.MISSING, help: str = "", *, choices=None, ge=None, gt=None, le=None, lt=None, check=None,
        reads: bool = False):
    """A dataclass field with its help line and limits: `kl_coef: float = arg(0.05, "KL coefficient", ge=0)`.

    No default: the flag is required. A list default is copied for every instance. The limits apply to
    every element of a list field; None (an Optional field's "none") passes every check. check: a function
    of the value that returns an error message (naming what is allowed) or None, e.g. rlhf.device.device_error.
    reads: the field is a path (file or directory) the script reads, so that no output of the run may
    replace or delete it (read_paths; rlhf.run refuses).
    """
    meta = {"help": help} | ({"check": check} if check is not None else {}) | ({"reads": True} if reads else {})
    if choices is not None:
        meta["choices"] = list(choices)
    meta.update({k: v for k, v in (("ge", ge), ("gt", gt), ("le", le), ("lt", lt)) if v is not None})
    if isinstance(default, (list, dict, set)):
        return dataclasses.field(default_factory=lambda: copy.deepcopy(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


# ---- dataclass -> argparse ---------------------------------------------------------------------

def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _converter(tp, optional: bool):
    """argparse `type=` for a field type; Optional fields also take "none"."""
    if not optional:
        return tp

    def convert(s: str):
        return None if s.lower() == "none" else tp(s)
    convert.__name__ = tp.__name__  # argparse names it in "invalid int value: 'x'"
    return convert


def _unwrap(tp) -> tuple[type, bool, bool]:
    """(base type, optional?, list?) for int, float, str, bool, Path, X | None, list[X]."""
    optional = False
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) != 1:
            raise TypeError(f"unsupported field type {tp} (only X | None unions)")
        tp, optional = args[0], True
    if typing.get_origin(tp) is list:
        return typing.get_args(tp)[0], optional, True
    return tp, optional, False


def _default(f: dataclasses.Field):
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def _check(name: str, value, meta: dict) -> str | None:
    """The first broken limit of a field's metadata, as a message, or None."""
    for v in (value if isinstance(value, list) else [value]):
        if v is None:
            continue
        if isinstance(v, float) and not math.isfinite(v):  # "inf" and "nan" parse as floats; no flag means them
            return f"{_flag(name)} must be a finite number (got {v})"
        choices = meta.get("choices")
        if choices is not None and v not in choices:
            return f"{_flag(name)} must be one of: {', '.join(map(str, choices))} (got {v!r})"
        for key, (symbol, holds) in _LIMITS.items():
            if key in meta and not holds(v, meta[key]):
                return f"{_flag(name)} must be {symbol} {meta[key]} (got {v})"
        if meta.get("check") is not None and (msg := meta["check"](v)):
            return f"{_flag(name)} {msg}"
    return None


def parse_args(cls, argv=None, presets: dict[str, dict] | None = None, description: str | None = None):
    """Parse command-line flags into an instance of the dataclass `cls` (see the module docstring).

    With `presets`, `--preset NAME` applies presets[NAME] first and explicit flags win; the name is
    stored in the instance's `preset` field when it has one (whose default is the default preset).
    Exits with status 2 and a message on stderr for a bad flag, value, preset or limit.
    """
    fields = [f for f in dataclasses.fields(cls) if f.init]
    hints = typing.get_type_hints(cls)
    shown = _preset_in(argv, presets)  # --preset X --help: the defaults shown are the preset's
    # SUPPRESS as every default: the namespace then holds only the flags actually given
    parser = argparse.ArgumentParser(description=description, allow_abbrev=False,
                                     argument_default=argparse.SUPPRESS)
    default_preset = None
    for f in fields:
        if presets is not None and f.name == "preset":
            default_preset = _default(f) if _default(f) is not dataclasses.MISSING else None
            continue
        tp, optional, many = _unwrap(hints[f.name])
        default, meta = _default(f), f.metadata
        help_text = meta.get("help", "")
        if shown is not None and f.name in presets[shown]:
            help_text += f" (default: {presets[shown][f.name]} with --preset {shown}; {default} without)"
        else:
            help_text += " (required)" if default is dataclasses.MISSING else f" (default: {default})"
        kwargs = {"dest": f.name, "help": help_text.replace("%", "%%")}
        if "choices" in meta:
            kwargs["metavar"] = "{" + ",".join(map(str, meta["choices"])) + "}"
        if tp is bool and not many:
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs.update(type=_converter(tp, optional), nargs="+" if many else None)
        parser.add_argument(_flag(f.name), **kwargs)
        if "_" in f.name:  # --field_name works too, but only --field-name is shown in --help
            parser.add_argument(f"--{f.name}", **{**kwargs, "help": argparse.SUPPRESS})
    if presets is not None:
        parser.add_argument("--preset", dest="preset", metavar="NAME",
                            help=f"named overrides applied before explicit flags: {', '.join(presets)} "
                                 f"(default: {default_preset})")
    given = vars(parser.parse_args(argv))

    values = {f.name: _default(f) for f in fields}
    preset = given.pop("preset", default_preset) if presets is not None else None
    if preset is not None:
        if preset not in presets:
            parser.error(f"unknown preset {preset!r}; choose from: {', '.join(presets)}")
        unknown = [k for k in presets[preset] if k not in values]
        if unknown:  # a bug in the script, not in the command line
            raise ValueError(f"preset {preset!r} sets {unknown[0]!r}, which is not a field of {cls.__name__}")
        values.update(presets[preset])
    values.update(given)
    if "preset" in values and presets is not None:
        values["preset"] = preset
    for f in fields:
        if values[f.name] is dataclasses.MISSING:
            parser.error(f"{_flag(f.name)} is required")
        err = _check(f.name, values[f.name], f.metadata)
        if err:
            parser.error(err)
    try:
        return cls(**values)
    except ValueError as e:  # a __post_init__ check, e.g. sizes that do not divide
        parser.error(str(e))


def answer_help(module_name: str, cls, presets: dict[str, dict] | None = None, description: str | None = None) -> None:
    """`python SCRIPT.py --help` (or -h) prints the flags and exits here. A script calls this right below its Args
    and PRESETS, above its imports of torch and the model code, so that help comes in a fraction of a second instead
    of the seconds those imports take. Does nothing when the script is imported or run without -h/--help."""
    if module_name == "__main__" and any(a in ("-h", "--help") for a in sys.argv[1:]):
        parse_args(cls, sys.argv[1:], presets=presets, description=description)


def device_error(name: str) -> str | None:
    """The check behind --device (rlhf.device.device_error), importing torch only when a --device is checked."""
    from rlhf import device
    return device.device_error(name)


def read_paths(cfg) -> list[tuple[str, str]]:
    """(flag, path) of each input path of a script's arguments that is set (fields declared with arg(..., reads=True))."""
    return [(_flag(f.name), str(getattr(cfg, f.name))) for f in dataclasses.fields(cfg)
            if f.metadata.get("reads") and getattr(cfg, f.name) is not None]


def _preset_in(argv, presets) -> str | None:
    """The preset named on the command line (--preset X or --preset=X), when it is one of `presets`."""
    args = list(sys.argv[1:] if argv is None else argv)
    for i, a in enumerate(args):
        name = args[i + 1] if a == "--preset" and i + 1 < len(args) else a[9:] if a.startswith("--preset=") else None
        if presets and name in presets:
            return name
    return None


def config_to_dict(cfg) -> dict:
    """The dataclass as a plain JSON-able dict (paths become strings)."""
    return {k: (str(v) if isinstance(v, PurePath) else v) for k, v in dataclasses.asdict(cfg).items()}


def print_config(cfg, file=None) -> None:
    """Print one aligned "name = value" line per field (to `file`, default standard output)."""
    d = config_to_dict(cfg)
    width = max((len(k) for k in d), default=0)
    for k, v in d.items():
        print(f"{k:<{width}} = {v}", file=file)


# ---- the flags every script shares --------------------------------------------------------------

@dataclass
class DeviceArgs:
    """Where and how a script computes (rlhf/device.py, rlhf/precision.py); every script's Args extends it."""
    device: str = arg("auto", "where to compute: auto (cuda when available, else cpu), cpu, cuda or cuda:N", check=device_error)
    dtype: str = arg("auto", "forward passes in fp32, or under bf16 autocast with fp32 weights (log-probs, ratios and losses "
                     "stay fp32); auto: bf16 on CUDA, fp32 on the CPU", choices=["auto", "fp32", "bf16"])
    threads: int = arg(0, "torch CPU threads (0: the CPUs this process may use, rlhf.device.cpu_threads)", ge=0, le=4096)


@dataclass
class PackArgs:
    """--pack, for the trainers whose forwards can run on packed rows (SFT, RM, the PPO family)."""
    pack: bool = arg(False, "training forwards run on the rows' real tokens packed into fewer rows (rlhf.padding.pack_rows; each "
                     "sequence attends only within itself): the same loss up to float rounding, on fewer token slots where "
                     "lengths vary (docs/performance.md); part of the run's identity")


@dataclass
class DataArgs:
    """How a script reads the field's JSONL formats (rlhf/formats.py): other key names and the chat template."""
    prompt_key: str = arg("prompt", "field holding the prompt (text or a list of turns)")
    response_key: str | None = arg(None, "SFT: field holding the response (default: 'response', or trl's 'completion')")
    chosen_key: str = arg("chosen", "preferences: field holding the preferred response")
    rejected_key: str = arg("rejected", "preferences: field holding the other response")
    chat_template: str = arg("plain", "how a list of turns becomes prompt text: plain ('role: content' lines) or hh "
                             "('\n\nHuman: ...\n\nAssistant:', for GPT-2 imports)", choices=["plain", "hh"])


@dataclass
class TrainArgs(DeviceArgs):
    """DeviceArgs plus what only training scripts need."""
    compile: bool = arg(False, "torch.compile the transformer blocks (slow first steps; see docs/performance.md)")
    grad_checkpoint: bool = arg(False, "activation checkpointing of the transformer blocks: the same gradients, less memory, "
                                "about one more forward per step")
    tensorboard: bool = arg(False, "also write every logged number as TensorBoard scalars into OUT/tensorboard "
                            "(optional package: pip install -r requirements-tensorboard.txt)")
