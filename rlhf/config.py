"""Script configuration: dataclass -> argparse flags, presets, run directories, seeding, metrics.

Each script declares one @dataclass of arguments; every field carries its help line and limits:

    lr: float = field(default=1e-4, metadata={"help": "learning rate", "min": 0, "min_exclusive": True})
    kl_estimator: str = field(default="k1", metadata={"help": "...", "choices": ["k1", "k2", "k3", "abs"]})

parse_args turns it into flags (--kl-estimator, also --kl_estimator; bools as --flag/--no-flag;
Optional fields also accept "none"), applies a preset (a plain dict of overrides) before the explicit
flags, checks the limits and exits with argparse's status 2 and a one-line message when one is broken.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import random
import shutil
import types
import typing
from pathlib import Path, PurePath

import numpy as np
import torch

from rlhf import distributed
from rlhf.data import DataError, read_objects, write_json, write_jsonl


class RunDirError(ValueError):
    """The run directory already holds a run and neither resume nor overwrite was asked for."""


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
        choices = meta.get("choices")
        if choices is not None and v not in choices:
            return f"{_flag(name)} must be one of: {', '.join(map(str, choices))} (got {v!r})"
        lo, hi = meta.get("min"), meta.get("max")
        if lo is not None and not (v > lo if meta.get("min_exclusive") else v >= lo):
            return f"{_flag(name)} must be {'>' if meta.get('min_exclusive') else '>='} {lo} (got {v})"
        if hi is not None and not (v < hi if meta.get("max_exclusive") else v <= hi):
            return f"{_flag(name)} must be {'<' if meta.get('max_exclusive') else '<='} {hi} (got {v})"
    return None


def parse_args(cls, argv=None, presets: dict[str, dict] | None = None, description: str | None = None):
    """Parse command-line flags into an instance of the dataclass `cls` (see the module docstring).

    With `presets`, `--preset NAME` applies presets[NAME] first and explicit flags win; the name is
    stored in the instance's `preset` field when it has one (whose default is the default preset).
    Exits with status 2 and a message on stderr for a bad flag, value, preset or limit.
    """
    fields = [f for f in dataclasses.fields(cls) if f.init]
    hints = typing.get_type_hints(cls)
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


def config_to_dict(cfg) -> dict:
    """The dataclass as a plain JSON-able dict (paths become strings)."""
    return {k: (str(v) if isinstance(v, PurePath) else v) for k, v in dataclasses.asdict(cfg).items()}


def print_config(cfg) -> None:
    """Print one aligned "name = value" line per field."""
    d = config_to_dict(cfg)
    width = max((len(k) for k in d), default=0)
    for k, v in d.items():
        print(f"{k:<{width}} = {v}")


# ---- run directories, seeding ------------------------------------------------------------------

def prepare_run_dir(path, cfg, resume: bool = False, overwrite: bool = False) -> Path:
    """Create the run directory and write config.json into it (atomically).

    A directory that already has contents is refused unless `resume` (keep them) or `overwrite`
    (delete them first) is given, so a typo never appends to or wipes another run.
    """
    p = Path(path)
    if resume and overwrite:
        raise RunDirError("pass only one of --resume and --overwrite")
    if p.exists() and not p.is_dir():
        raise RunDirError(f"{path} exists and is not a directory")
    existing = sorted(os.listdir(p)) if p.is_dir() else []
    if existing and not (resume or overwrite):
        shown = ", ".join(existing[:5]) + (", ..." if len(existing) > 5 else "")
        raise RunDirError(f"{path} already holds a run ({shown}); pass --resume to continue it "
                          "or --overwrite to replace it")
    if existing and overwrite:
        here = Path.cwd().resolve()
        if p.resolve() in (here, *here.parents, Path.home().resolve()):  # never wipe a working tree
            raise RunDirError(f"refusing to delete the contents of {path} (the current directory, "
                              "one above it, or home); choose a run directory of its own")
        for name in existing:
            child = p / name
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()
    p.mkdir(parents=True, exist_ok=True)
    write_json(p / "config.json", config_to_dict(cfg))
    return p


def seed_everything(seed: int) -> torch.Generator:
    """Seed python's, numpy's and torch's global RNGs; return a fresh torch.Generator seeded with `seed`.

    torch.use_deterministic_algorithms is deliberately not set: it raises on some CUDA kernels and
    needs CUBLAS_WORKSPACE_CONFIG. CPU runs are reproducible without it; GPU runs may differ in the
    last bits from run to run.
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)  # numpy only takes 32-bit seeds
    torch.manual_seed(seed)  # seeds CUDA too
    g = torch.Generator()
    g.manual_seed(seed)
    return g


# ---- metrics -----------------------------------------------------------------------------------

def _scalar(key: str, v):
    if isinstance(v, torch.Tensor):
        if v.numel() != 1:
            raise ValueError(f"metric {key!r}: a tensor of shape {tuple(v.shape)}; log a single number")
        v = v.item()
    elif isinstance(v, np.generic):
        v = v.item()
    if v is None or isinstance(v, (bool, int, str)):
        return v
    if isinstance(v, float):
        return v if math.isfinite(v) else None  # strict JSON has no NaN/inf: written as null
    raise TypeError(f"metric {key!r}: expected a number, got {type(v).__name__}")


class MetricsWriter:
    """Append one JSON object per log() call to metrics.jsonl: {"step": ..., "ppo/loss/policy": ...}.

    Non-finite values (NaN, inf) are written as JSON null: strict JSON cannot hold them, and a
    string "nan" would break every reader that expects numbers.
    resume_step: keep the existing rows with step <= resume_step (rewritten atomically) and append
    after them; None starts a fresh file.
    In a torchrun job only rank 0 writes: on the other ranks log() and close() do nothing.
    """

    def __init__(self, path, resume_step: int | None = None):
        self.path = Path(path)
        self._f = None
        if not distributed.is_main():
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step is not None and self.path.exists():
            write_jsonl(self.path, [r for r in read_metrics(self.path) if r["step"] <= resume_step])
        self._f = open(self.path, "w" if resume_step is None else "a", encoding="utf-8")

    def log(self, step: int, metrics: dict) -> None:
        """Write {"step": step, **metrics} as one line and flush it; tensors become numbers via .item()."""
        if "step" in metrics:
            raise ValueError("metrics may not use the key 'step'; it is the step argument")
        row = {"step": int(step), **{k: _scalar(k, v) for k, v in metrics.items()}}
        if self._f is None:  # not rank 0
            return
        self._f.write(json.dumps(row, ensure_ascii=False, allow_nan=False) + "\n")
        self._f.flush()

    def close(self) -> None:
        if self._f is not None:
            self._f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_metrics(path) -> list[dict]:
    """All rows of a metrics.jsonl; a final partial line (a crash mid-write) is dropped with a warning."""
    rows = read_objects(path, allow_partial_tail=True)
    for i, r in enumerate(rows):
        if not isinstance(r.get("step"), int) or isinstance(r.get("step"), bool):
            raise DataError(f"{path}: row {i + 1} has no integer 'step'")
    return rows


def run_cli(main) -> None:
    """Run a script's main(): a bad input (the project's errors are all ValueErrors: DataError,
    CheckpointError, RunDirError, a task's or a model's refusal) ends with one line "error: ..." and exit
    status 1 instead of a traceback; Ctrl-C says where to resume. RLHF_DEBUG=1 shows the traceback."""
    import sys
    try:
        main()
    except ValueError as e:
        if os.environ.get("RLHF_DEBUG"):
            raise
        sys.exit(f"error: {e}")
    except KeyboardInterrupt:
        sys.exit("interrupted: finished checkpoints and files are intact; rerun with --resume to continue")
    finally:
        distributed.cleanup()  # leave a torchrun process group (nothing to do in a single process)


def start_script(args) -> None:
    """The opening of a script that writes no run directory: print the config, set CPU threads
    (args.threads > 0), seed everything (args.seed)."""
    print_config(args)
    if getattr(args, "threads", 0):
        torch.set_num_threads(args.threads)
    seed_everything(args.seed)


def start_run(args, ckpt_name: str = "ckpt") -> tuple[Path, bool]:
    """The opening every training script shares: join a torchrun process group when there is one
    (rlhf/distributed.py), print the config, set CPU threads (args.threads > 0), prepare the run directory
    (args.out, args.resume, args.overwrite; rank 0 only), seed everything (args.seed, offset per rank).
    Returns (run directory, True when --resume finds a checkpoint `ckpt_name` in it to continue from)."""
    distributed.init(getattr(args, "device", None) or "cpu")
    print_config(args)
    if getattr(args, "threads", 0):
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    ckpt = out / ckpt_name
    resuming = bool(args.resume) and (ckpt.exists() or Path(f"{ckpt}.old").exists())
    if distributed.is_main():
        prepare_run_dir(out, args, resume=args.resume, overwrite=args.overwrite)
    distributed.barrier()  # the others wait until rank 0 has checked (or cleared) the run directory
    seed_everything(distributed.rank_seed(args.seed))
    return out, resuming
