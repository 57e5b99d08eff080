"""Cached, resumable stages: each one of the repo's scripts run as a subprocess, skipped when its record says the
exact command already finished, resumed (--resume) when it was interrupted. reproduce.py runs its pipeline through
Stages; with --jobs several seeds call one Stages from threads.
"""
from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from tqdm import tqdm

from rlhf.data import read_json, write_json

ROOT = Path(__file__).resolve().parents[1]


def _libc():
    try:
        import ctypes
        return ctypes.CDLL("libc.so.6", use_errno=True)
    except (OSError, AttributeError):
        return None


LIBC = _libc()
PRCTL = getattr(LIBC, "prctl", None)  # looked up here, not in the child: between fork and exec it only calls prctl


def _die_with_parent():
    """In the child, before exec: on Linux, ask for SIGKILL when reproduce.py (the thread that started the stage)
    dies, even by SIGKILL, so a killed run never leaves a stage writing into a directory that the rerun resumes."""
    if PRCTL is not None:
        PRCTL(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


PACKED_SCRIPTS = ("train_sft.py", "train_rm.py", "train_ppo.py")  # the trainers with --pack


class Stages:
    """Runs the repo's scripts as cached, resumable stages behind one progress bar."""

    def __init__(self, out: Path, total: int, threads: int, device: str = "auto", dtype: str = "auto", pack: bool = False):
        self.out, self.threads, self.device, self.dtype, self.pack = out, threads, device, dtype, pack
        (out / "stages").mkdir(parents=True, exist_ok=True)
        (out / "logs").mkdir(parents=True, exist_ok=True)
        self.bar = tqdm(total=total, desc="reproduce", unit="stage")
        self.ran, self.reused = 0, 0
        self.versions: dict[str, str] = {}  # output path -> hash of the command (and inputs) that made it
        self.lock = threading.Lock()  # --jobs: seeds call this object from several threads
        self.failed: str | None = None  # what failed first ("stage s1_rm"): no other seed starts a new stage
        self.error: BaseException | None = None  # its error (a stage's names its log and ends with its last lines)
        self.running: set = set()  # the stages' processes now running

    def __call__(self, name: str, script: str, *argv, out: Path, kind: str = "train") -> Path:
        """Run `python script argv` unless its record says this exact command already finished.
        kind: train (supports --resume / --overwrite), data (--overwrite), samples (resumable file), eval."""
        argv = [str(a) for a in argv]
        if self.threads and kind != "data":
            argv += ["--threads", str(self.threads)]
        if self.device != "auto" and kind != "data":  # left out for auto, so cached commands stay the same
            argv += ["--device", self.device]
        if self.dtype != "auto" and kind == "train":  # likewise left out for auto
            argv += ["--dtype", self.dtype]
        if self.pack and script in PACKED_SCRIPTS:  # left out when off
            argv += ["--pack"]
        with self.lock:
            if self.failed:
                raise SystemExit(f"error: {self.failed} failed; {name} was not started (see that error)")
            # the versions of the earlier stages whose outputs this one reads: a rerun upstream reruns it too
            inputs = sorted({v for a in argv for o, v in self.versions.items() if a == o or a.startswith(o + "/")})
            cmd = {"script": script, "argv": argv, "inputs": inputs}
            self.bar.set_description(f"reproduce [{name}]")
            self.versions[str(out)] = hashlib.sha256(json.dumps(cmd, sort_keys=True).encode()).hexdigest()[:16]
        done, pending = self.out / "stages" / f"{name}.json", self.out / "stages" / f"{name}.pending.json"
        if done.exists() and {k: read_json(done).get(k) for k in cmd} == cmd and out.exists():
            with self.lock:
                self.reused += 1
                self.bar.update(1)
            return out
        same = pending.exists() and read_json(pending) == cmd
        done.unlink(missing_ok=True)
        extra = []
        if kind == "train" and out.exists():
            extra = ["--resume"] if same else ["--overwrite"]
        elif kind == "data" and out.exists():
            extra = ["--overwrite"]
        elif kind == "samples" and out.exists() and not same:  # other settings: start the file again
            out.unlink()
            Path(f"{out}.meta.json").unlink(missing_ok=True)
        write_json(pending, cmd)
        log = self.out / "logs" / f"{name}.log"
        t0 = time.time()
        with open(log, "w") as f:
            f.write(" ".join([sys.executable, script, *argv, *extra]) + "\n")
            f.flush()
            proc = subprocess.Popen([sys.executable, script, *argv, *extra], cwd=ROOT,
                                    stdout=f, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)
            with self.lock:
                self.running.add(proc)
            try:
                rc = proc.wait()
            except BaseException:  # Ctrl-C: the stage stops with the run (checkpoints are atomic; the rerun resumes it)
                proc.kill()
                proc.wait()
                raise
            finally:
                with self.lock:
                    self.running.discard(proc)
        if rc != 0:
            tail = "".join(log.read_text(errors="replace").splitlines(keepends=True)[-15:])
            error = SystemExit(f"error: stage {name} failed (exit {rc}); its log is {log}; last lines:\n{tail}")
            self.fail(f"stage {name}", error)
            raise error
        write_json(done, {**cmd, "seconds": round(time.time() - t0, 1)})
        pending.unlink(missing_ok=True)
        with self.lock:
            self.ran += 1
            self.bar.update(1)
        return out

    def fail(self, what: str, error: BaseException) -> None:
        """Record the first failure (what, its error): the other seeds start no new stage."""
        with self.lock:
            if not self.failed:
                self.failed, self.error = what, error

    def kill_running(self) -> None:
        """Stop every stage now running (Ctrl-C under --jobs): each is resumed or rerun by the next call."""
        with self.lock:
            for proc in self.running:
                proc.kill()

    def seconds(self, name: str) -> float:
        rec = self.out / "stages" / f"{name}.json"
        return read_json(rec).get("seconds", 0.0) if rec.exists() else 0.0


class CountStages:
    """Stands in for Stages and runs nothing: pipeline(CountStages(), ...) counts the stages the real call runs."""

    def __init__(self):
        self.n = 0

    def __call__(self, name: str, script: str, *argv, out: Path, kind: str = "train") -> Path:
        self.n += 1
        return out
