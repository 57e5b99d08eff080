"""A run's life cycle, shared by every script: run directory, seeding, metrics.jsonl, the CLI wrapper.

    out, resuming, dev = start_run(args) # process group, config print, threads, run directory, seeds
    if resuming and run_finished(out, out / "ckpt", steps, "eval.json"): return   # nothing left to do
    ... build data, models, optimisers; resume(ckpt, ...) when resuming (rlhf/resume.py) ...
    with MetricsWriter(out / "metrics.jsonl", resume_step=...) as metrics: loop, metrics.log(step, {...})
    run_cli(main)                        # bad input -> one "error: ..." line and exit status 1
"""
from __future__ import annotations

import dataclasses
import fcntl
import json
import math
import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch

from rlhf import distributed
from rlhf.config import config_to_dict, print_config, read_paths
from rlhf.data import named_os_error, read_json, read_metrics, write_json, write_jsonl
from rlhf.device import cpu_threads, keep_freed_memory, resolve_device, resolve_dtype
from rlhf.resume import load_train_state


class RunDirError(ValueError):
    """The run directory already holds a run and neither resume nor overwrite was asked for, or another process
    is writing it."""


LOCK = ".lock"  # inside every run directory: an OS file lock held by the one process that writes it
_held_locks: dict = {}  # run directory -> its open lock file, kept until the process ends (released by the OS then)


def lock_run_dir(path) -> None:
    """Take an exclusive lock on the run directory (creating it) for the rest of this process, so a second writer
    (say, --resume started while the run still trains) is refused instead of interleaving metrics.jsonl or racing
    for the checkpoint. The lock is flock(2) on <path>/.lock: released by the OS when the process ends, however it
    ends, so a killed run never leaves a stale lock."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise RunDirError(f"{path} exists and is not a directory")
    p.mkdir(parents=True, exist_ok=True)
    key = str(p.resolve())
    if key in _held_locks:  # this process holds it already (a script's main() called twice in one process)
        return
    f = open(p / LOCK, "a+", encoding="utf-8")
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        holder = f.read().strip() or "?"
        f.close()
        raise RunDirError(f"{path} is being written by another running process (pid {holder}); wait for it to end, "
                          "or choose another --out") from None
    f.truncate(0)
    f.write(f"{os.getpid()}\n")
    f.flush()
    _held_locks[key] = f


# ---- run directories, seeding ------------------------------------------------------------------

# what --resume may change: the length of the run (upwards), its evaluation, logging and checkpoint cadence, and
# where and how fast it computes; every other flag is part of the run's identity
RESUME_MAY_CHANGE = {"steps", "eval_every", "n_eval", "log_every", "sample_every", "ckpt_every", "max_val_pairs",
                     "threads", "device", "compile", "grad_checkpoint", "resume", "overwrite", "out", "tensorboard"}


def check_resume(out: Path, args, ckpt: Path) -> None:
    """Refuse a --resume whose flags change the run's identity (naming each flag, old and new value), or whose
    --steps is below the checkpoint's step; the saved config.json is the run's own, written when it started."""
    saved_path = out / "config.json"
    if not saved_path.is_file():
        return  # a run directory from before config.json was written: nothing to compare with
    saved, new = read_json(saved_path), config_to_dict(args)
    for k, v in new.items():  # a hand-edited or foreign config.json: one line naming the field
        if k in saved and saved[k] is not None and v is not None and not _same_type(saved[k], v):
            raise RunDirError(f"{saved_path}: field {k!r} is {saved[k]!r} ({type(saved[k]).__name__}), but the flag takes "
                              f"a {type(v).__name__}; the file was not written by this script: start a new run")
    # a flag added after the run started has its default there: a resume that sets it otherwise changes the run
    defaults = {f.name: f.default if f.default is not dataclasses.MISSING else f.default_factory()
                for f in dataclasses.fields(args) if (f.default, f.default_factory) != (dataclasses.MISSING,) * 2}
    saved = {**{k: defaults[k] for k in new if k not in saved and k in defaults}, **saved}
    changed = [k for k in new if k not in RESUME_MAY_CHANGE and k in saved and saved[k] != new[k]]
    if changed:
        shown = ", ".join(f"--{k.replace('_', '-')} {new[k]!r} (the run has {saved[k]!r})" for k in changed[:6])
        raise RunDirError(f"--resume of {out} with other settings than it was started with: {shown}; only --steps "
                          "(upwards), the evaluation, logging and checkpoint cadence, --threads, --device, --compile and "
                          "--grad-checkpoint may change. Start a new run (another --out, or --overwrite) instead")
    step = load_train_state(ckpt).get("step") if (ckpt.exists() or Path(f"{ckpt}.old").exists()) else None
    if isinstance(step, int) and hasattr(args, "steps") and args.steps < step:
        raise RunDirError(f"--resume with --steps {args.steps}, but the checkpoint in {out} is at step {step}; "
                          f"pass --steps {step} or more")


def run_finished(out: Path, ckpt: Path, steps: int, report: str | None = None, more_steps: bool = True) -> bool:
    """True (and says so) when a resumed run has nothing left to do: its checkpoint is at step `steps` or later and
    its final report (`report` inside `out`, when the script writes one after the last step) exists. more_steps: the
    script has a --steps flag that a resume may raise."""
    step = load_train_state(ckpt).get("step")
    if not isinstance(step, int) or step < steps or (report is not None and not (out / report).is_file()):
        return False
    print(f"{out} already finished (step {step} of {steps}" + (f", {report} written" if report else "") + "): nothing to "
          "do" + ("; resume with a larger --steps to train further" if more_steps else ""))
    return True


def _same_type(saved, new) -> bool:
    if isinstance(new, float) and isinstance(saved, int) and not isinstance(saved, bool):
        return True  # JSON writes 1.0 as 1.0, but a hand-written 1 means the same
    if isinstance(new, list):
        return isinstance(saved, list)
    return type(saved) is type(new)


def release_run_dirs() -> None:
    """Give up every run-directory lock this process holds (run_cli does at the end of a script)."""
    while _held_locks:
        _held_locks.popitem()[1].close()


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
    existing = sorted(n for n in os.listdir(p) if n != LOCK) if p.is_dir() else []  # the lock is not a run's file
    if existing and not (resume or overwrite):
        shown = ", ".join(existing[:5]) + (", ..." if len(existing) > 5 else "")
        raise RunDirError(f"{path} already holds a run ({shown}); pass --resume to continue it "
                          "or --overwrite to replace it")
    if existing and overwrite:
        here = Path.cwd().resolve()
        if p.resolve() in (here, *here.parents, Path.home().resolve()):  # never wipe a working tree
            raise RunDirError(f"refusing to delete the contents of {path} (the current directory, "
                              "one above it, or home); choose a run directory of its own")
        for flag, inp in read_paths(cfg):  # never wipe what this very command reads
            if overlaps(p, inp):
                q = Path(inp).resolve()
                where = "is that directory" if q == p.resolve() else "lies inside it" if p.resolve() in q.parents else "holds it"
                raise RunDirError(f"--overwrite would delete {path}, but {flag} {inp}, an input of this command, {where}; "
                                  "choose another --out (or move the input out of it)")
        for name in existing:
            child = p / name
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()
    p.mkdir(parents=True, exist_ok=True)
    old = read_json(p / "config.json").get("provenance") if resume and (p / "config.json").is_file() else None
    history = (old if isinstance(old, list) else []) + [provenance()]  # one entry per start or resume of the run
    write_json(p / "config.json", config_to_dict(cfg) | {"provenance": history})
    return p


def provenance() -> dict:
    """What a run ran with: the git commit of this code (and whether the tree had uncommitted changes; None outside
    a git checkout), the time, and the versions of python, torch, tokenizers and numpy."""
    import platform
    import subprocess
    import time

    import tokenizers
    repo = Path(__file__).resolve().parents[1]

    def git(*argv):
        try:
            p = subprocess.run(["git", "-C", str(repo), *argv], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return p.stdout.strip() if p.returncode == 0 else None
    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no") if commit else None
    return {"git_commit": commit, "git_dirty": None if status is None else bool(status),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "python": platform.python_version(),
            "torch": torch.__version__, "tokenizers": tokenizers.__version__, "numpy": np.__version__}


def overlaps(a, b) -> bool:
    """True when paths a and b (resolved, symlinks followed) are the same, or one lies inside the other."""
    a, b = Path(a).resolve(), Path(b).resolve()
    return a == b or a in b.parents or b in a.parents


def refuse_writing_inputs(args, outputs, reads=()) -> None:
    """Refuse an output that is a file or directory the script reads (its reads=True flags, plus `reads`: (flag, path)
    of files it reads inside an input directory, e.g. ("--data", "data/story/meta.json")), or that lies inside an
    input checkpoint (a directory holding model.safetensors, which a save replaces whole)."""
    inputs = [*read_paths(args), *((flag, str(p)) for flag, p in reads)]
    for out in outputs:
        o = Path(out).resolve()
        for flag, inp in inputs:
            i = Path(inp).resolve()
            if o == i or (i in o.parents and (i / "model.safetensors").is_file()):
                raise ValueError(f"{out} would be written {'over' if o == i else 'inside'} {flag} {inp}, which this command "
                                 "reads; choose another --out")


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
    tensorboard: a directory that also receives every number as a TensorBoard scalar under the same key and step
    (torch.utils.tensorboard; the optional requirements-tensorboard.txt). A resumed run appends events there.
    """

    def __init__(self, path, resume_step: int | None = None, tensorboard=None):
        self.path = Path(path)
        self._f = self._tb = None
        if not distributed.is_main():
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step is not None and self.path.exists():
            write_jsonl(self.path, [r for r in read_metrics(self.path) if r["step"] <= resume_step])
        self._f = open(self.path, "w" if resume_step is None else "a", encoding="utf-8")
        if tensorboard is not None:
            self._tb = tensorboard_writer(tensorboard)

    def log(self, step: int, metrics: dict) -> None:
        """Write {"step": step, **metrics} as one line and flush it; tensors become numbers via .item()."""
        if "step" in metrics:
            raise ValueError("metrics may not use the key 'step'; it is the step argument")
        row = {"step": int(step), **{k: _scalar(k, v) for k, v in metrics.items()}}
        if self._f is None:  # not rank 0
            return
        try:
            self._f.write(json.dumps(row, ensure_ascii=False, allow_nan=False) + "\n")
            self._f.flush()
        except OSError as e:  # a full disk: the error names the file (a partial last line is dropped on resume)
            raise named_os_error(e, self.path) from e
        if self._tb is not None:
            for k, v in row.items():
                if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool):
                    self._tb.add_scalar(k, v, row["step"])

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
        if self._tb is not None:
            self._tb.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _summary_writer():
    """torch.utils.tensorboard's SummaryWriter class, or a clear error when the optional tensorboard package is missing."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ValueError("--tensorboard needs the tensorboard package: pip install -r requirements-tensorboard.txt "
                         "(optional; metrics.jsonl holds the same numbers)") from None
    return SummaryWriter


def tensorboard_writer(log_dir):
    """A SummaryWriter writing TensorBoard events into log_dir."""
    return _summary_writer()(log_dir=str(log_dir))


def run_cli(main) -> None:
    """Run a script's main(): a bad input (the project's errors are all ValueErrors: DataError,
    CheckpointError, RunDirError, a task's or a model's refusal) ends with one line "error: ..." and exit
    status 1 instead of a traceback, and so does any OSError, TypeError, KeyError, IndexError, OverflowError,
    MemoryError or RuntimeError (CUDA out of memory among them); Ctrl-C says where to resume. RLHF_DEBUG=1 shows
    the traceback."""
    import sys
    try:
        main()
    except ValueError as e:
        if os.environ.get("RLHF_DEBUG"):
            raise
        sys.exit(f"error: {e}")
    except KeyboardInterrupt:
        sys.exit("interrupted: finished checkpoints and files are intact; rerun with --resume to continue")
    except torch.OutOfMemoryError as e:  # outside a training step's oom_guard: an evaluation, sampling, scoring
        if os.environ.get("RLHF_DEBUG"):
            raise
        sys.exit(f"error: CUDA out of memory ({str(e).splitlines()[0]}); lower --batch-size (evaluations and sampling: "
                 "--batch-size, --n-eval or --max-new-tokens), or add --grad-checkpoint to training; checkpoints already "
                 "written are intact")
    except (OSError, TypeError, KeyError, IndexError, OverflowError, MemoryError, RuntimeError) as e:
        # what the checks above did not foresee (a full disk, a path through a file, an absurd size): still one line,
        # with what Python says (an OSError names its path); RLHF_DEBUG=1 shows where it came from
        if os.environ.get("RLHF_DEBUG"):
            raise
        sys.exit(f"error: {type(e).__name__}: {e} (RLHF_DEBUG=1 shows the traceback); finished checkpoints and files are intact")
    finally:
        distributed.cleanup()  # leave a torchrun process group (nothing to do in a single process)
        release_run_dirs()


def _start(args, config_file=None) -> torch.device:
    """Resolve --device and --dtype (stored back into args, so the printed and saved config says what ran), join a
    torchrun process group when there is one, set CPU threads (--threads 0: rlhf.device.cpu_threads, stored back too),
    print the config."""
    dev = resolve_device(args.device)
    args.device, args.dtype = str(dev), resolve_dtype(args.dtype, dev)
    distributed.init(args.device)
    args.threads = args.threads or cpu_threads()
    torch.set_num_threads(args.threads)
    keep_freed_memory()
    print_config(args, config_file)
    return dev


def start_script(args, writes=(), reads=(), config_file=None) -> torch.device:
    """The opening of a script that writes no run directory (_start, then seed everything with args.seed).
    writes: the files it will write, none of which may be an input or lie inside an input checkpoint; reads: the files
    it reads inside input directories, as (flag, path) (refuse_writing_inputs); config_file: where the config is
    printed (sys.stderr for a script whose standard output is its result). Returns the device."""
    refuse_writing_inputs(args, writes, reads)
    dev = _start(args, config_file)
    seed_everything(args.seed)
    return dev


def start_run(args, ckpt_name: str = "ckpt") -> tuple[Path, bool, torch.device]:
    """The opening every training script shares: _start, prepare the run directory (args.out, args.resume,
    args.overwrite; rank 0 only), seed everything (args.seed, offset per rank).
    Returns (run directory, True when --resume finds a checkpoint `ckpt_name` in it to continue from, device)."""
    dev = _start(args)
    out = Path(args.out)
    ckpt = out / ckpt_name
    resuming = bool(args.resume) and (ckpt.exists() or Path(f"{ckpt}.old").exists())
    if getattr(args, "tensorboard", False):
        _summary_writer()  # before any work: the optional package must be there
    if distributed.is_main():
        lock_run_dir(out)  # before anything in it is read, wiped or written
        if resuming:
            check_resume(out, args, ckpt)
        prepare_run_dir(out, args, resume=args.resume, overwrite=args.overwrite)
    distributed.barrier()  # the others wait until rank 0 has checked (or cleared) the run directory
    seed_everything(distributed.rank_seed(args.seed))
    return out, resuming, dev
