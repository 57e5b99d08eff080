"""Reliability: crash-safe resume after SIGKILL, determinism, every bad input answered with a clear
message, numerical guards, no pickle, fuzzed readers.

Crash tests start a script in a subprocess, SIGKILL it once the filesystem shows it is mid-way, rerun it and
compare with an uninterrupted run: exactly on CPU (same thread count), wall-clock keys left out.
Bad-input tests mostly call a script's main() in-process (no interpreter start-up; the project's errors are
ValueErrors that run_cli turns into one line "error: ...") and a few run the script to check that the user
sees that one line and no traceback. README lists every case with its test.
"""
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
import warnings

import pytest
import torch
from helpers import ROOT, run
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

if str(ROOT) not in sys.path:  # the scripts are imported below to call their main() in-process
    sys.path.insert(0, str(ROOT))

import evaluate  # noqa: E402
import prepare_data  # noqa: E402
import sample_baselines  # noqa: E402
import train_ppo  # noqa: E402
import train_rm  # noqa: E402
import train_sft  # noqa: E402
import rlhf.checkpoint  # noqa: E402
from rlhf.checkpoint import CheckpointError, load_checkpoint, save_checkpoint  # noqa: E402
from rlhf.resume import load_train_state, resume, save_step  # noqa: E402
from rlhf.data import read_metrics  # noqa: E402
from rlhf.data import SCHEMAS, DataError, append_jsonl, read_json, read_jsonl, read_objects  # noqa: E402
from rlhf.reward import pairs_fitting  # noqa: E402
from rlhf.tokenizer import Tokenizer  # noqa: E402

TIMING = ("time/", "per_s", "seconds")
ONE_THREAD = ["--threads", "1"]  # in-process runs: 1 thread (a busy 2-core machine punishes 2), restored below


@pytest.fixture(autouse=True)
def _restore_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)  # wall-clock keys: the only ones allowed to differ between two runs


def untimed(rows):
    return [{k: v for k, v in r.items() if not any(t in k for t in TIMING)} for r in rows]


def metrics(run_dir):
    return untimed(read_metrics(run_dir / "metrics.jsonl"))


def kill_when(proc, ready, timeout=180.0):
    """SIGKILL `proc` as soon as ready() is true; returns True if it was killed before finishing on its own."""
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        try:
            if ready():
                break
        except (OSError, ValueError):  # a file caught mid-rename or mid-write: look again
            pass
        time.sleep(0.005)
    killed = proc.poll() is None
    if killed:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    return killed


def popen(*args, **kw):
    return subprocess.Popen([sys.executable, *args], cwd=ROOT, stdout=kw.pop("stdout", subprocess.DEVNULL),
                            stderr=subprocess.DEVNULL, **kw)


def state_step(ckpt):
    return json.loads((ckpt / "state.json").read_text())["step"] if (ckpt / "state.json").exists() else -1


# ---- 1. crash safety: SIGKILL mid-way, then --resume (or a rerun) gives the uninterrupted result ----------

def test_prepare_data_killed_leaves_whole_files_and_rerun_matches(tmp_path):
    args = ["prepare_data.py", "--task", "algo", "--n-sft", "10000", "--n-pairs", "10000", "--n-rl", "500",
            "--n-unlabelled", "200", "--n-eval", "100"]
    run(*args, "--out", str(tmp_path / "full"))
    killed = tmp_path / "killed"
    kill_when(popen(*args, "--out", str(killed)), lambda: (killed / "sft.jsonl").exists())  # the first of six files
    for f in killed.iterdir():  # whatever a kill leaves is whole: atomic writes (temp files are hidden)
        if not f.name.startswith("."):
            assert f.read_bytes() == (tmp_path / "full" / f.name).read_bytes() or f.name == "meta.json", f.name
    assert _err(prepare_data.main, [*args[1:], "--out", str(killed)]) == \
        f"error: {killed} already holds files; pass --overwrite to replace them"
    run(*args, "--out", str(killed), "--overwrite")  # generation is deterministic: a rerun is the resume
    for f in (tmp_path / "full").iterdir():
        if f.name == "meta.json":
            a, b = read_json(f), read_json(killed / f.name)
            a["args"].pop("out"), b["args"].pop("out"), a["args"].pop("overwrite"), b["args"].pop("overwrite")
            assert a == b
        else:
            assert f.read_bytes() == (killed / f.name).read_bytes(), f.name


def test_sigint_ends_with_one_line_and_keeps_the_checkpoint(algo, tmp_path):
    out = tmp_path / "sft"
    proc = subprocess.Popen([sys.executable, "train_sft.py", "--preset", "smoke", "--data", str(algo / "data"), "--out", str(out),
                             "--ckpt-every", "10", "--n-eval", "0", "--threads", "1"], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            # a suite launched in the background (`pytest &`) inherits an ignored SIGINT; Ctrl-C's
                            # default action is what this test is about
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 180
    while time.time() < deadline and proc.poll() is None and state_step(out / "ckpt") < 10:
        time.sleep(0.01)
    assert proc.poll() is None, "the run ended before it could be interrupted"
    os.kill(proc.pid, signal.SIGINT)  # Ctrl-C
    err = proc.communicate(timeout=120)[1]
    assert proc.returncode == 1 and "Traceback" not in err
    assert err.strip().endswith("interrupted: finished checkpoints and files are intact; rerun with --resume to continue")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (an interrupt between a save's two renames leaves ckpt.old: loaded from there)
        load_checkpoint(out / "ckpt", expected_kind="policy")
        assert load_train_state(out / "ckpt")["step"] >= 10


def test_rm_killed_and_resumed_matches_uninterrupted(algo, tmp_path):
    common = ["train_rm.py", "--preset", "smoke", "--data", str(algo / "data"), "--sft", str(algo / "sft" / "ckpt"),
              "--epochs", "0.3", "--ckpt-every", "10", "--eval-every", "25", "--n-policy-pairs", "8", "--threads", "1"]
    run(*common, "--out", str(tmp_path / "full"))
    killed = tmp_path / "killed"
    was_killed = kill_when(popen(*common, "--out", str(killed)), lambda: state_step(killed / "ckpt") >= 20)
    assert was_killed, "the run ended before it could be killed"
    run(*common, "--out", str(killed), "--resume")
    assert metrics(killed) == metrics(tmp_path / "full")  # every step's loss, accuracy, lr, val/* exactly
    full, resumed = read_json(tmp_path / "full" / "diagnostics.json"), read_json(killed / "diagnostics.json")
    assert untimed([resumed]) == untimed([full])
    a, _ = load_checkpoint(tmp_path / "full" / "ckpt")
    b, _ = load_checkpoint(killed / "ckpt")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_ppo_killed_and_resumed_matches_uninterrupted(algo, tmp_path):
    """PPO against the RM with the value model from the RM: policy, value, both optimisers in one checkpoint."""
    common = ["train_ppo.py", "--preset", "smoke", "--data", str(algo / "data"), "--sft", str(algo / "sft" / "ckpt"),
              "--rm", str(algo / "rm" / "ckpt"), "--steps", "15", "--ckpt-every", "3", "--eval-every", "10",
              "--n-eval", "16", "--threads", "1"]
    run(*common, "--out", str(tmp_path / "full"))
    killed = tmp_path / "killed"
    was_killed = kill_when(popen(*common, "--out", str(killed)), lambda: state_step(killed / "ckpt") >= 6)
    assert was_killed, "the run ended before it could be killed"
    run(*common, "--out", str(killed), "--resume")
    assert metrics(killed) == metrics(tmp_path / "full")
    assert [r["step"] for r in metrics(killed)] == list(range(0, 16))
    assert sorted(p.name for p in killed.iterdir() if p.name.startswith("ckpt")) == ["ckpt"]


def test_a_crash_mid_save_leaves_every_module_at_one_step(tmp_path, monkeypatch):
    """PPO's policy and value model (and their optimisers) are one checkpoint: a crash while the value weights
    are being written leaves the previous step whole, never a new policy beside an old value model."""
    ckpt = tmp_path / "ckpt"
    policy, value = torch.nn.Linear(2, 2), torch.nn.Linear(2, 1)

    def save(step):
        with torch.no_grad():
            policy.weight.fill_(step), value.weight.fill_(step)
        save_step(ckpt, step, {"policy": policy, "value": value}, {}, {})
    save(1)
    real = rlhf.checkpoint._write_safetensors

    def crash_on_value(tensors, file):
        if file.name == "value.safetensors":
            raise KeyboardInterrupt  # killed after the policy's weights were written, before the value model's
        real(tensors, file)
    monkeypatch.setattr(rlhf.checkpoint, "_write_safetensors", crash_on_value)
    with pytest.raises(KeyboardInterrupt):
        save(2)
    monkeypatch.undo()
    assert sorted(os.listdir(tmp_path)) == ["ckpt"]  # the half-written ckpt.tmp is gone
    assert resume(ckpt, {"policy": policy, "value": value}, {})["step"] == 1
    assert policy.weight.unique().tolist() == [1.0] and value.weight.unique().tolist() == [1.0]


def test_sample_baselines_killed_then_rerun_completes_the_same_file(algo, tmp_path):
    args = ["sample_baselines.py", "--policy", str(algo / "sft" / "ckpt"), "--rm", str(algo / "rm" / "ckpt"),
            "--prompts", str(algo / "data" / "prompts_rl.jsonl"), "--k", "2", "--max-new-tokens", "16",
            "--batch-size", "4", "--threads", "1"]
    run(*args, "--out", str(tmp_path / "full.jsonl"))
    out = tmp_path / "killed.jsonl"
    kill_when(popen(*args, "--out", str(out)), lambda: out.exists() and out.stat().st_size > 0)
    full = (tmp_path / "full.jsonl").read_text()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a partial last line is allowed (dropped with a warning)
        part = read_jsonl(out, "samples", allow_partial_tail=True) if out.exists() else []
    assert [json.dumps(r) for r in part] == [json.dumps(json.loads(x)) for x in full.splitlines()[:len(part)]]
    assert len(part) < 64, "the run ended before it could be killed"
    p = run(*args, "--out", str(out))  # rerunning with the same settings is the resume
    assert f"{len(part)} of 64 prompts already sampled" in p.stdout or not part
    assert out.read_text() == full


def test_evaluate_killed_leaves_no_partial_output_then_rerun_completes(algo, tmp_path):
    sft = str(algo / "sft" / "ckpt")
    out = tmp_path / "eval.json"
    args = ["evaluate.py", "--policy", sft, "--reference", sft, "--rm", str(algo / "rm" / "ckpt"), "--data",
            str(algo / "data"), "--n-eval", "64", "--max-new-tokens", "24", "--batch-size", "8", "--threads", "1",
            "--out", str(out)]
    proc = popen(*args, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    for line in proc.stdout:  # the line printed just before sampling starts
        if "prompts from" in line:
            break
    assert proc.poll() is None
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stdout.close()
    assert not out.exists()  # the metrics are written last: on disk means finished
    samples = tmp_path / "eval.samples.jsonl"
    assert not samples.exists() or len(read_jsonl(samples, "samples")) == 64
    run(*args)
    report = read_json(out)
    assert report["eval/n"] == 64 and 0 <= report["gold/win_rate"] <= 1
    assert len(read_jsonl(samples, "samples")) == 64


# ---- 2. determinism: same seed, same metrics.jsonl on CPU; another seed differs ---------------------

def test_same_seed_same_metrics_and_weights_other_seed_differs(algo, tmp_path):
    def ppo(name, seed):
        train_ppo.main(["--preset", "smoke", "--data", str(algo / "data"), "--sft", str(algo / "sft" / "ckpt"),
                        "--rm", str(algo / "rm" / "ckpt"), "--steps", "4", "--eval-every", "2", "--n-eval", "16",
                        "--seed", str(seed), "--out", str(tmp_path / name), *ONE_THREAD])
        return metrics(tmp_path / name)
    a, b, c = ppo("a", 0), ppo("b", 0), ppo("c", 1)
    assert a == b and len(a) == 5
    assert (tmp_path / "a" / "ckpt" / "model.safetensors").read_bytes() == (tmp_path / "b" / "ckpt" / "model.safetensors").read_bytes()
    assert a[1]["objective/score"] != c[1]["objective/score"] and a[-1] != c[-1]


# ---- 4. numerical guards: stop naming the stage and step; the last good checkpoint stays --------------

def _poison_after(n_calls, fn):
    """fn with the same outputs, except NaN from its n_calls-th call on."""
    count = [0]

    def wrapped(*a, **kw):
        count[0] += 1
        out = fn(*a, **kw)
        return out * float("nan") if count[0] >= n_calls else out
    return wrapped


def test_sft_nan_loss_stops_and_keeps_last_checkpoint(algo, tmp_path, monkeypatch):
    monkeypatch.setattr(train_sft, "sft_loss", _poison_after(3, train_sft.sft_loss))
    with pytest.raises(SystemExit) as e:
        train_sft.main(["--preset", "smoke", "--data", str(algo / "data"), "--out", str(tmp_path / "sft"), "--steps", "6",
                        "--ckpt-every", "2", "--n-eval", "0", *ONE_THREAD])
    assert str(e.value) == f"error: SFT loss is nan at step 3; the last good checkpoint is {tmp_path / 'sft' / 'ckpt'} (step 2)"
    state, _ = load_checkpoint(tmp_path / "sft" / "ckpt", expected_kind="policy")
    assert all(torch.isfinite(t).all() for t in state.values()) and state_step(tmp_path / "sft" / "ckpt") == 2


def test_rm_nan_loss_stops_and_keeps_last_checkpoint(algo, tmp_path, monkeypatch):
    monkeypatch.setattr(train_rm, "bradley_terry_loss", _poison_after(3, train_rm.bradley_terry_loss))
    with pytest.raises(SystemExit) as e:
        train_rm.main(["--preset", "smoke", "--data", str(algo / "data"), "--sft", str(algo / "sft" / "ckpt"),
                       "--out", str(tmp_path / "rm"), "--ckpt-every", "2", *ONE_THREAD])
    assert str(e.value) == f"error: RM loss is nan at step 3; the last good checkpoint is {tmp_path / 'rm' / 'ckpt'} (step 2)"
    assert state_step(tmp_path / "rm" / "ckpt") == 2


def test_rm_margin_beyond_float32_stops_at_step_one(algo, tmp_path):
    """A margin of 1e300 is a finite JSON number but inf in float32: the loss guard catches it."""
    rows = read_jsonl(algo / "data" / "preferences.jsonl", "preferences")[:200]
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({**r, "margin": 1e300}) + "\n" for r in rows))
    with pytest.raises(SystemExit) as e:
        train_rm.main(["--preset", "smoke", "--data", str(algo / "data"), "--pairs", str(pairs),
                       "--sft", str(algo / "sft" / "ckpt"), "--out", str(tmp_path / "rm")])
    assert str(e.value) == (f"error: RM loss is inf at step 1; no checkpoint was saved before it "
                            f"({tmp_path / 'rm' / 'ckpt'} does not exist yet)")


@pytest.mark.parametrize("fn, stage", [("response_values", "values"), ("response_logprobs", "policy log-probs")])
def test_ppo_non_finite_stage_stops_and_keeps_last_checkpoint(algo, tmp_path, monkeypatch, fn, stage):
    iteration = [0]
    real_sample, real_fn = train_ppo.sample, getattr(train_ppo, fn)

    def sample(*a, **kw):  # train_ppo calls its own `sample` once per iteration (evaluations use another)
        iteration[0] += 1
        return real_sample(*a, **kw)

    def poisoned(*a, **kw):
        out = real_fn(*a, **kw)
        return out * float("nan") if iteration[0] >= 3 else out
    monkeypatch.setattr(train_ppo, "sample", sample)
    monkeypatch.setattr(train_ppo, fn, poisoned)
    out = tmp_path / "ppo"
    with pytest.raises(SystemExit) as e:
        train_ppo.main(["--preset", "smoke", "--data", str(algo / "data"), "--sft", str(algo / "sft" / "ckpt"),
                        "--reward", "gold", "--steps", "6", "--ckpt-every", "2", "--eval-every", "100", "--n-eval", "8",
                        "--out", str(out), *ONE_THREAD])
    assert str(e.value) == f"error: non-finite {stage} at iteration 3; the last good checkpoint is {out / 'ckpt'} (step 2)"
    assert state_step(out / "ckpt") == 2 and (out / "ckpt" / "value.safetensors").is_file()


# ---- 5. no code runs on load -----------------------------------------------------------------------

class _Payload:
    """Unpickling this creates a file: proof that code ran."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickle_checkpoint_refused_and_never_unpickled(algo, tmp_path):
    marker = tmp_path / "code_ran"
    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps({"wte.weight": _Payload(str(marker))}, protocol=4))
    d = tmp_path / "evil_ckpt"  # the same pickle where model.safetensors belongs
    shutil.copytree(algo / "sft" / "ckpt", d)
    shutil.copy(evil, d / "model.safetensors")
    msg = "looks like a pickle file; this project loads safetensors + JSON only, never pickle, so no code runs on load"
    p = run("evaluate.py", "--policy", str(evil), "--reference", "none", "--data", str(algo / "data"),
            "--n-eval", "4", "--out", str(tmp_path / "e.json"), check=False)
    assert p.returncode == 1 and "Traceback" not in p.stderr and p.stderr.strip().endswith(f"error: {evil}: {msg}"), p.stderr
    assert _eval(algo, tmp_path, d) == f"{d / 'model.safetensors'}: {msg}"
    assert _err(train_ppo.main, ["--preset", "smoke", "--data", str(algo / "data"), "--sft", str(d), "--reward", "gold",
                                 "--out", str(tmp_path / "ppo")]) == f"{d / 'model.safetensors'}: {msg}"
    assert not marker.exists()


# ---- 3. bad input: one clear message each ------------------------------------------------------------

def _err(main, argv) -> str:
    """Run a script's main in-process and return its error message (a project ValueError or a SystemExit)."""
    with pytest.raises((ValueError, SystemExit)) as e:
        main(argv)
    return str(e.value)


FLAG_CASES = [  # (script, flags, message): each exits with status 2 before any work
    (train_sft, ["--batch-size", "0"], "--batch-size must be >= 1 (got 0)"),
    (train_sft, ["--batch-size", "-4"], "--batch-size must be >= 1 (got -4)"),
    (train_sft, ["--lr", "0"], "--lr must be > 0.0 (got 0.0)"),
    (train_sft, ["--lr", "-0.001"], "--lr must be > 0.0 (got -0.001)"),
    (train_sft, ["--steps", "0"], "--steps must be >= 1 (got 0)"),
    (train_sft, ["--dropout", "1.5"], "--dropout must be <= 0.99 (got 1.5)"),
    (train_sft, ["--lr-schedule", "exp"], "--lr-schedule must be one of: constant, linear, cosine (got 'exp')"),
    (train_sft, ["--preset", "huge"], "unknown preset 'huge'; choose from: "),  # smoke, tiny, ... (the list grows)
    (train_sft, ["--steps", "ten"], "argument --steps: invalid int value: 'ten'"),
    (train_rm, ["--val-fraction", "0"], "--val-fraction must be > 0.0 (got 0.0)"),
    (train_rm, ["--epochs", "-1"], "--epochs must be >= 0.0 (got -1.0)"),  # 0: scoring only, with --previous-rm
    (train_rm, ["--spg-gamma", "1.5"], "--spg-gamma must be <= 1.0 (got 1.5)"),
    (train_ppo, ["--gamma", "1.5"], "--gamma must be <= 1.0 (got 1.5)"),
    (train_ppo, ["--gamma", "-0.1"], "--gamma must be >= 0.0 (got -0.1)"),
    (train_ppo, ["--lam", "2"], "--lam must be <= 1.0 (got 2.0)"),
    (train_ppo, ["--kl-estimator", "k9"], "--kl-estimator must be one of: k1, k2, k3, abs (got 'k9')"),
    (train_ppo, ["--kl-coef", "-0.1"], "--kl-coef must be >= 0.0 (got -0.1)"),
    (train_ppo, ["--cliprange", "0"], "--cliprange must be > 0.0 (got 0.0)"),
    (train_ppo, ["--batch-size", "1"], "--batch-size must be >= 2 (got 1)"),
    (train_ppo, ["--temperature", "0"], "--temperature must be > 0.0 (got 0.0)"),
    (train_ppo, ["--reward", "best"], "--reward must be one of: rm, contrastive, gold (got 'best')"),
    (sample_baselines, ["--k", "0"], "--k must be >= 1 (got 0)"),
    (sample_baselines, ["--max-new-tokens", "0"], "--max-new-tokens must be >= 1 (got 0)"),
    (evaluate, ["--n-eval", "0"], "--n-eval must be >= 1 (got 0)"),
    (evaluate, ["--best-of-n", "0"], "--best-of-n must be >= 1 (got 0)"),
    (prepare_data, ["--n-sft", "0"], "--n-sft must be >= 1 (got 0)"),
    (prepare_data, ["--task", "chess"], "--task must be one of: story, algo (got 'chess')"),
    (prepare_data, ["--flip-rate", "0.7"], "--flip-rate must be <= 0.5 (got 0.7)"),
    (train_ppo, ["--lr", "inf"], "--lr must be a finite number (got inf)"),
    (train_ppo, ["--kl-coef", "nan"], "--kl-coef must be a finite number (got nan)"),
    (train_rm, ["--epochs", "inf"], "--epochs must be a finite number (got inf)"),
    (train_ppo, ["--reward-clip", "inf"], "--reward-clip must be a finite number (got inf)"),
    # sizes are bounded before anything is allocated, and flag relations are checked before any work
    (train_sft, ["--n-layer", "100000"], "--n-layer must be <= 512 (got 100000)"),
    (train_sft, ["--vocab-size", "9999999999"], "--vocab-size must be <= 1048576 (got 9999999999)"),
    (train_rm, ["--batch-size", "2000000"], "--batch-size must be <= 1048576 (got 2000000)"),
    (sample_baselines, ["--k", "5000"], "--k must be <= 4096 (got 5000)"),
    (evaluate, ["--max-new-tokens", "100000"], "--max-new-tokens must be <= 65536 (got 100000)"),
    (train_ppo, ["--seed", "-1"], "--seed must be >= 0 (got -1)"),
    (train_ppo, ["--seed", str(2**64)], "--seed must be <= 4294967295 (got 18446744073709551616)"),
    (train_sft, ["--max-new-tokens", "200"], "--max-new-tokens 200 leaves no room for a prompt in --block-size 128"),
    (train_sft, ["--n-head", "3"], "--n-embd 256 must be divisible by --n-head 3"),
]


@pytest.mark.parametrize("script, flags, message", FLAG_CASES, ids=[f"{s.__name__}{' '.join(f)}" for s, f, _ in FLAG_CASES])
def test_flag_out_of_range_exits_2_naming_flag_and_limit(capsys, script, flags, message):
    with pytest.raises(SystemExit) as e:
        script.main(flags)
    assert e.value.code == 2 and message in capsys.readouterr().err


def test_flag_combinations_refused(algo, tmp_path):
    data, sft = str(algo / "data"), str(algo / "sft" / "ckpt")
    ppo = ["--preset", "smoke", "--data", data, "--sft", sft]
    assert _err(train_ppo.main, ppo + ["--minibatches", "3", "--out", str(tmp_path / "a")]) == \
        "--minibatches 3 must divide --batch-size 32"
    assert "--reward contrastive needs --baselines FILE" in _err(train_ppo.main, ppo + ["--reward", "contrastive", "--out", str(tmp_path / "b")])
    (tmp_path / "nometa").mkdir()
    for f in ("prompts_rl.jsonl", "prompts_eval.jsonl"):
        shutil.copy(algo / "data" / f, tmp_path / "nometa" / f)
    assert "--reward gold needs a gold judge" in _err(train_ppo.main, ["--preset", "smoke", "--data", str(tmp_path / "nometa"), "--sft", sft,
                                                                       "--reward", "gold", "--out", str(tmp_path / "c")])
    assert _err(train_ppo.main, ppo + ["--value-head", "shared", "--value-init", "rm", "--out", str(tmp_path / "d")]) == \
        "--value-init rm needs --value-head separate (a shared value head sits on the policy trunk)"
    assert "pass --rm" in _err(evaluate.main, ["--policy", sft, "--reference", "none", "--data", data, "--best-of-n", "4",
                                               "--out", str(tmp_path / "e.json")])
    assert _err(train_sft.main, ["--preset", "smoke", "--data", data, "--out", str(tmp_path / "f"), "--resume", "--overwrite"]) == \
        "pass only one of --resume and --overwrite"


def test_output_directory_of_another_run_refused(algo, tmp_path):
    run_dir = tmp_path / "taken"
    run_dir.mkdir()
    (run_dir / "metrics.jsonl").write_text('{"step": 1}\n')
    msg = f"{run_dir} already holds a run (metrics.jsonl); pass --resume to continue it or --overwrite to replace it"
    data, sft = str(algo / "data"), str(algo / "sft" / "ckpt")
    assert _err(train_sft.main, ["--preset", "smoke", "--data", data, "--out", str(run_dir)]) == msg
    assert _err(train_rm.main, ["--preset", "smoke", "--data", data, "--sft", sft, "--out", str(run_dir)]) == msg
    assert _err(train_ppo.main, ["--preset", "smoke", "--data", data, "--sft", sft, "--reward", "gold", "--out", str(run_dir)]) == msg
    assert _err(prepare_data.main, ["--task", "algo", "--out", str(run_dir)]) == \
        f"error: {run_dir} already holds files; pass --overwrite to replace them"
    assert (run_dir / "metrics.jsonl").read_text() == '{"step": 1}\n'  # untouched


@pytest.fixture
def ckpts(algo, tmp_path):
    """Copies of the smoke checkpoints to break: (tmp, policy copy, rm copy)."""
    shutil.copytree(algo / "sft" / "ckpt", tmp_path / "policy")
    shutil.copytree(algo / "rm" / "ckpt", tmp_path / "rm")
    return tmp_path, tmp_path / "policy", tmp_path / "rm"


def _eval(algo, tmp_path, policy, reference="none", rm=None, extra=()):
    return _err(evaluate.main, ["--policy", str(policy), "--reference", str(reference), "--data", str(algo / "data"),
                                "--n-eval", "4", "--max-new-tokens", "8", "--out", str(tmp_path / "e.json"),
                                *(["--rm", str(rm)] if rm else []), *extra])


def test_bad_checkpoints_at_script_level(algo, ckpts):
    tmp, policy, rm = ckpts
    assert _eval(algo, tmp, tmp / "nope") == f"{tmp / 'nope'}: no such checkpoint directory"
    assert _eval(algo, tmp, rm) == f"{rm}: is a 'rm' checkpoint, expected 'policy'"
    assert _eval(algo, tmp, policy, rm=policy) == f"{policy}: is a 'policy' checkpoint, expected 'rm'"
    (tmp / "empty").mkdir()
    assert _eval(algo, tmp, tmp / "empty") == f"{tmp / 'empty'}: not a checkpoint directory (no model.safetensors)"
    # a policy whose tokenizer.json is corrupt, then missing
    (policy / "tokenizer.json").write_text("{not json")
    assert _eval(algo, tmp, policy).startswith(f"{policy / 'tokenizer.json'}: not a valid tokenizer (")
    os.remove(policy / "tokenizer.json")
    assert _eval(algo, tmp, policy) == f"{policy}: no tokenizer.json beside the weights"
    # config.json that is not JSON
    (rm / "config.json").write_text('{"kind": "rm",')
    assert _eval(algo, tmp, algo / "sft" / "ckpt", rm=rm).startswith(f"{rm / 'config.json'}: not valid JSON")
    # truncated weights (a copy cut short, as a crash of a non-atomic copy would leave it)
    shutil.rmtree(rm)
    shutil.copytree(algo / "rm" / "ckpt", rm)
    data = (rm / "model.safetensors").read_bytes()
    (rm / "model.safetensors").write_bytes(data[:len(data) // 2])
    assert _eval(algo, tmp, algo / "sft" / "ckpt", rm=rm).startswith(f"{rm / 'model.safetensors'}: truncated or corrupt safetensors file")


def test_checkpoint_of_another_size_on_resume(algo, tmp_path):
    shutil.copytree(algo / "sft", tmp_path / "sft")
    msg = _err(train_sft.main, ["--preset", "smoke", "--data", str(algo / "data"), "--out", str(tmp_path / "sft"), "--resume",
                                "--n-embd", "32", "--n-eval", "0"])
    assert msg.startswith(f"--resume of {tmp_path / 'sft'} with other settings than it was started with: --n-embd 32 "
                          "(the run has 64)"), msg


def test_resume_without_state_or_with_corrupt_metrics(algo, tmp_path):
    shutil.copytree(algo / "sft", tmp_path / "sft")
    os.remove(tmp_path / "sft" / "eval.json")  # as if it stopped before its final report: a resume has work to do
    args = ["--preset", "smoke", "--data", str(algo / "data"), "--out", str(tmp_path / "sft"), "--resume", "--n-eval", "0"]
    lines = (tmp_path / "sft" / "metrics.jsonl").read_text().splitlines(keepends=True)
    (tmp_path / "sft" / "metrics.jsonl").write_text(lines[0] + '{"step": 2, "sft/lo\n' + "".join(lines[2:]))
    assert _err(train_sft.main, args).startswith(f"{tmp_path / 'sft' / 'metrics.jsonl'}:2: not valid JSON")
    os.remove(tmp_path / "sft" / "ckpt" / "state.json")
    assert _err(train_sft.main, args) == \
        f"{tmp_path / 'sft' / 'ckpt'}: no state.json (saved without training state, so it cannot be resumed)"


def _with_other_tokenizer(ckpt):
    """Make `ckpt` a checkpoint of another tokenizer, consistent in itself (its config.json records the new
    fingerprint: a swapped tokenizer.json alone is refused at load, test_a_swapped_tokenizer_or_nan_weights_...)."""
    other = Tokenizer.train(["the quick brown fox jumps over the lazy dog"] * 20, vocab_size=300)
    (ckpt / "tokenizer.json").write_text(other.to_json())
    config = read_json(ckpt / "config.json")
    (ckpt / "config.json").write_text(json.dumps({**config, "tokenizer": other.fingerprint}))
    return other.fingerprint


def test_tokenizer_mismatch_between_policy_reference_and_rm(algo, ckpts):
    tmp, policy, rm = ckpts
    sft = algo / "sft" / "ckpt"
    fp_sft = Tokenizer.from_json((sft / "tokenizer.json").read_text()).fingerprint
    fp_rm = _with_other_tokenizer(rm)
    tail = "; a policy, its reference and its reward model must share one tokenizer"
    assert _eval(algo, tmp, sft, reference=sft, rm=rm) == f"tokenizer mismatch: policy ({fp_sft}) vs rm ({fp_rm}){tail}"
    assert _err(train_ppo.main, ["--preset", "smoke", "--data", str(algo / "data"), "--sft", str(sft), "--rm", str(rm),
                                 "--out", str(tmp / "ppo")]) == f"tokenizer mismatch: policy ({fp_sft}) vs rm ({fp_rm}){tail}"
    assert _err(sample_baselines.main, ["--policy", str(sft), "--rm", str(rm), "--prompts", str(algo / "data" / "prompts_rl.jsonl"),
                                        "--out", str(tmp / "b.jsonl")]) == f"tokenizer mismatch: policy ({fp_sft}) vs rm ({fp_rm}){tail}"
    fp_ref = _with_other_tokenizer(policy)
    assert _eval(algo, tmp, sft, reference=policy) == f"tokenizer mismatch: policy ({fp_sft}) vs reference ({fp_ref}){tail}"


def _prompts_with_a_long_one(path, n_good=3):
    """Good prompts, a blank line, then one far longer than any context: the long one is on line n_good + 2."""
    good = ["reverse: a b c", "sort: c a b", "copy: x y"][:n_good]
    path.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in good) + "\n"
                    + json.dumps({"prompt": "copy: " + " ".join("abcdefgh" * 40)}) + "\n")
    return n_good + 2


def test_prompt_longer_than_the_context(algo, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(algo / "data", data)
    line = _prompts_with_a_long_one(data / "prompts_rl.jsonl")
    msg = _err(train_ppo.main, ["--preset", "smoke", "--data", str(data), "--sft", str(algo / "sft" / "ckpt"),
                                "--rm", str(algo / "rm" / "ckpt"), "--out", str(tmp_path / "ppo")])
    assert msg.startswith(f"{data / 'prompts_rl.jsonl'}:{line}: field 'prompt': ") and "shorten the prompt" in msg, msg
    line = _prompts_with_a_long_one(tmp_path / "eval_prompts.jsonl", n_good=1)
    msg = _eval(algo, tmp_path, algo / "sft" / "ckpt", extra=["--prompts", str(tmp_path / "eval_prompts.jsonl")])
    assert msg.startswith(f"{tmp_path / 'eval_prompts.jsonl'}:{line}: field 'prompt': "), msg
    # SFT's final evaluation prompts are checked before training, not after it
    shutil.copy(tmp_path / "eval_prompts.jsonl", data / "prompts_eval.jsonl")
    msg = _err(train_sft.main, ["--preset", "smoke", "--data", str(data), "--out", str(tmp_path / "sft")])
    assert msg.startswith(f"{data / 'prompts_eval.jsonl'}:{line}: field 'prompt': "), msg
    assert not (tmp_path / "sft" / "ckpt").exists() and not (tmp_path / "sft" / "metrics.jsonl").exists()
    # the user sees one line, no traceback (sample_baselines.py run as a script)
    p = run("sample_baselines.py", "--policy", str(algo / "sft" / "ckpt"), "--rm", str(algo / "rm" / "ckpt"), "--prompts",
            str(data / "prompts_rl.jsonl"), "--out", str(tmp_path / "b.jsonl"), check=False)
    assert p.returncode == 1 and "Traceback" not in p.stderr
    assert f"error: {data / 'prompts_rl.jsonl'}:5: field 'prompt': " in p.stderr
    assert not (tmp_path / "b.jsonl").exists()


def test_rm_pairs_longer_than_the_context(algo, tmp_path):
    long = {"prompt": "copy: " + " ".join("abcdefgh" * 40), "chosen": "a", "rejected": "b"}
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text((json.dumps(long) + "\n") * 10)
    args = ["--preset", "smoke", "--data", str(algo / "data"), "--sft", str(algo / "sft" / "ckpt"), "--pairs", str(pairs)]
    assert _err(train_rm.main, args + ["--out", str(tmp_path / "rm")]) == \
        f"{pairs}: no pair fits the model's context of 128 tokens (prompt + response, in tokens)"
    tok = Tokenizer.from_json((algo / "sft" / "ckpt" / "tokenizer.json").read_text())
    short = {"prompt": "copy: a b", "chosen": "a b", "rejected": "b a"}
    assert pairs_fitting(tok, [short, long, short], 128, pairs) == [short, short]  # as SFT, long ones are skipped


def test_empty_and_missing_data_files(algo, tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    assert _eval(algo, tmp_path, algo / "sft" / "ckpt", extra=["--prompts", str(empty)]) == f"{empty}: file is empty (no records)"
    data = tmp_path / "data"
    shutil.copytree(algo / "data", data)
    (data / "prompts_rl.jsonl").write_text("")
    assert _err(train_ppo.main, ["--preset", "smoke", "--data", str(data), "--sft", str(algo / "sft" / "ckpt"), "--reward", "gold",
                                 "--out", str(tmp_path / "ppo")]) == f"{data / 'prompts_rl.jsonl'}: file is empty (no records)"
    assert _err(train_sft.main, ["--preset", "smoke", "--data", str(tmp_path / "nodata"), "--out", str(tmp_path / "sft")]) == \
        f"{tmp_path / 'nodata' / 'sft.jsonl'}: no such file"
    bad = tmp_path / "pairs.jsonl"
    bad.write_text('{"prompt": "p", "chosen": "a", "rejected": "b"}\n{"prompt": "p", "chosen": 3, "rejected": "b"}\n')
    assert _err(train_rm.main, ["--preset", "smoke", "--data", str(algo / "data"), "--sft", str(algo / "sft" / "ckpt"),
                                "--pairs", str(bad), "--out", str(tmp_path / "rm")]) == f"{bad}:2: field 'chosen': expected a string, got int"


# ---- 6. fuzzing: the readers raise DataError and nothing else ---------------------------------------

GOOD_LINES = [json.dumps(r).encode() for r in (
    {"prompt": "say hi", "response": "hi"}, {"prompt": "p", "chosen": "a", "rejected": "b", "margin": 0.5},
    {"prompt": "p", "id": 3, "meta": {"k": [1]}}, {"prompt": "p", "responses": ["a", "b"], "rewards": [1, -2.5]},
    {"step": 3, "ppo/loss/policy": 0.1})]
nasty = st.sampled_from([b"NaN", b"Infinity", b"-Infinity", b"1e400", b"\xef\xbb\xbf{}", b"\r", b"[" * 3000, b"9" * 5000,
                         b'"\\ud800"', b'{"prompt": "\\u0000"}', b"\xff\xfe", b'{"step": true}', b'{"step": 1.5}', b"{}"])


@st.composite
def mutated(draw):
    """A valid line cut, spliced or with bytes swapped: the errors a crash or an editor leaves."""
    line = bytearray(draw(st.sampled_from(GOOD_LINES)))
    for _ in range(draw(st.integers(0, 3))):
        i = draw(st.integers(0, len(line)))
        op = draw(st.sampled_from(["cut", "insert", "replace"]))
        if op == "cut":
            line = line[:i]
        elif op == "insert":
            line[i:i] = draw(st.binary(min_size=1, max_size=4) | nasty)
        elif i < len(line):
            line[i] = draw(st.integers(0, 255))
    return bytes(line)


fuzz_line = st.one_of(mutated(), st.sampled_from(GOOD_LINES), nasty, st.binary(max_size=30),
                      st.text(max_size=20).map(lambda s: s.encode("utf-8", "surrogatepass")))


def test_fuzz_every_reader_raises_only_data_error(tmp_path):
    """Several thousand generated lines through read_jsonl (each kind, strict and partial-tail), read_objects,
    read_metrics, read_json and a partial-tail repair by append_jsonl: DataError or a result, nothing else."""
    fed = []
    f = tmp_path / "fuzz.jsonl"

    @settings(max_examples=500, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(lines=st.lists(fuzz_line, min_size=4, max_size=24), newline_at_end=st.booleans(),
           kind=st.sampled_from(list(SCHEMAS)), partial=st.booleans(), limit=st.sampled_from([16, 1 << 20]))
    def check(lines, newline_at_end, kind, partial, limit):
        fed.append(len(lines))
        f.write_bytes(b"\n".join(lines) + (b"\n" if newline_at_end else b""))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for read in (lambda: read_jsonl(f, kind, max_line_bytes=limit, allow_partial_tail=partial),
                         lambda: read_objects(f, max_line_bytes=limit, allow_partial_tail=partial),
                         lambda: read_metrics(f), lambda: read_json(f)):
                try:
                    out = read()
                except DataError:
                    continue
                assert isinstance(out, (list, dict))
            if partial:  # a resumable output is repaired (partial last line dropped) before an append
                append_jsonl(f, [{"prompt": "p", "responses": ["a"], "rewards": [1.0]}])
                try:
                    rows = read_jsonl(f, "samples", allow_partial_tail=True)
                except DataError:
                    return
                assert rows[-1] == {"prompt": "p", "responses": ["a"], "rewards": [1.0]}
    check()
    assert sum(fed) >= 3000, sum(fed)


# ---- inputs that are not what they claim ----------------------------------------------------------------


@pytest.mark.parametrize("kind", ["fifo", "device", "directory"])
def test_a_data_file_that_is_not_a_regular_file_is_refused_without_blocking(tmp_path, kind):
    """A FIFO would block in open() forever and /dev/zero would read forever: both are refused before reading."""
    path = {"fifo": tmp_path / "prompts.jsonl", "device": "/dev/zero", "directory": tmp_path / "d"}[kind]
    if kind == "fifo":
        os.mkfifo(path)
    if kind == "directory":
        path.mkdir()
    what = {"fifo": "a FIFO", "device": "a device or another special file", "directory": "a directory"}[kind]
    for read in (lambda p: read_jsonl(p, "prompts"), read_json):
        with pytest.raises(DataError, match=f"^{path}: is {what}, not a regular file$"):
            read(path)


def test_a_swapped_tokenizer_or_nan_weights_are_refused_at_load(algo, tmp_path):
    from rlhf.checkpoint import load_model
    shutil.copytree(algo / "sft" / "ckpt", tmp_path / "ckpt")
    other = Tokenizer.train(["another corpus entirely, with its own merges"] * 20, vocab_size=300)
    (tmp_path / "ckpt" / "tokenizer.json").write_text(other.to_json(), encoding="utf-8")
    with pytest.raises(CheckpointError, match=r"tokenizer.json is not the tokenizer these weights were trained with"):
        load_model(tmp_path / "ckpt", "policy")
    state, config = load_checkpoint(algo / "sft" / "ckpt")
    state["h.0.attn.c_attn.weight"][0, 0] = float("inf")
    save_checkpoint(tmp_path / "inf", state, config, "policy")
    with pytest.raises(CheckpointError, match=r"parameter 'h.0.attn.c_attn.weight' holds NaN or inf values"):
        load_checkpoint(tmp_path / "inf")


def test_an_os_error_ends_with_one_line(algo, tmp_path):
    (tmp_path / "afile").write_text("x")
    p = run("train_sft.py", "--preset", "smoke", "--data", str(algo / "data"), "--out", str(tmp_path / "afile" / "run"), check=False)
    assert p.returncode == 1 and "Traceback" not in p.stderr
    last = p.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "afile" in last and "RLHF_DEBUG=1 shows the traceback" in last, last


def test_one_writer_per_run_directory_and_no_stale_lock_after_sigkill(algo, tmp_path):
    """A second process on a run directory that is being written (e.g. --resume while the run still trains) is
    refused with one line naming the holder; once the first is SIGKILLed the OS has released the lock."""
    out = tmp_path / "sft"
    common = ["train_sft.py", "--preset", "smoke", "--data", str(algo / "data"), "--out", str(out), "--n-eval", "0",
              "--ckpt-every", "10", "--threads", "1"]
    first = popen(*common)
    deadline = time.time() + 180
    while time.time() < deadline and first.poll() is None and state_step(out / "ckpt") < 10:
        time.sleep(0.01)
    assert first.poll() is None, "the first run ended before a second could be started"
    p = run(*common, "--resume", check=False)
    assert p.returncode == 1 and "Traceback" not in p.stderr
    assert p.stderr.strip() == f"error: {out} is being written by another running process (pid {first.pid}); " \
                               "wait for it to end, or choose another --out"
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    run(*common, "--resume", "--steps", str(state_step(out / "ckpt") + 2))  # no stale lock: the resume proceeds


def test_resume_refuses_flags_that_change_the_run_and_a_step_count_below_the_checkpoint(algo, tmp_path):
    shutil.copytree(algo / "sft", tmp_path / "sft")  # the smoke SFT run: 300 steps, lr 3e-3, seed 0
    base = ["--preset", "smoke", "--data", str(algo / "data"), "--out", str(tmp_path / "sft"), "--resume", "--n-eval", "0"]
    assert _err(train_sft.main, base + ["--lr", "1e-3", "--seed", "3"]) == (
        f"--resume of {tmp_path / 'sft'} with other settings than it was started with: --seed 3 (the run has 0), "
        "--lr 0.001 (the run has 0.003); only --steps (upwards), the evaluation, logging and checkpoint cadence, --threads, "
        "--device, --compile and --grad-checkpoint may change. Start a new run (another --out, or --overwrite) instead")
    assert _err(train_sft.main, base + ["--steps", "10"]) == (
        f"--resume with --steps 10, but the checkpoint in {tmp_path / 'sft'} is at step 300; pass --steps 300 or more")
    state = json.loads((tmp_path / "sft" / "ckpt" / "state.json").read_text())
    (tmp_path / "sft" / "ckpt" / "state.json").write_text(json.dumps({**state, "step": "300"}))
    assert _err(train_sft.main, base) == \
        f"{tmp_path / 'sft' / 'ckpt' / 'state.json'}: field 'step': expected a non-negative integer, got '300'"
    (tmp_path / "sft" / "ckpt" / "state.json").write_text(json.dumps({k: v for k, v in state.items() if k != "rng"}))
    assert _err(train_sft.main, base) == \
        f"{tmp_path / 'sft' / 'ckpt' / 'state.json'}: field 'rng': expected the RNG states (python, numpy, torch), got NoneType"


def test_a_model_the_machine_cannot_hold_is_refused_before_it_is_allocated(algo, tmp_path):
    from rlhf.device import check_memory
    with pytest.raises(ValueError, match=r"--batch-size: a training step at these sizes needs at least 931,322.6 GiB, but the "
                                         r"machine has [\d,.]+ GiB; lower them"):
        check_memory(10**15, torch.device("cpu"), "--batch-size")
    msg = _err(train_sft.main, ["--preset", "smoke", "--data", str(algo / "data"), "--out", str(tmp_path / "big"),
                                "--n-layer", "512", "--n-embd", "65536", "--n-head", "1"])
    assert msg.startswith("--vocab-size, --n-layer, --n-embd, --block-size and --batch-size: a training step at these sizes "
                          "needs at least "), msg
    assert not (tmp_path / "big" / "ckpt").exists()


def test_resuming_a_finished_run_does_nothing_and_a_foreign_config_is_refused(algo, tmp_path, capsys):
    for stage in ("sft", "rm"):
        shutil.copytree(algo / stage, tmp_path / stage)
    files = lambda d: {p.name: p.read_bytes() for p in [*d.iterdir(), *(d / "ckpt").iterdir()]  # noqa: E731
                       if p.is_file() and p.name not in ("config.json", ".lock")}
    before = {stage: files(tmp_path / stage) for stage in ("sft", "rm")}
    sft = ["--preset", "smoke", "--data", str(algo / "data"), "--out", str(tmp_path / "sft"), "--resume"]
    train_sft.main(sft)
    assert f"{tmp_path / 'sft'} already finished (step 300 of 300, eval.json written): nothing to do; resume with a larger " \
           "--steps to train further" in capsys.readouterr().out
    train_rm.main(["--preset", "smoke", "--data", str(algo / "data"), "--sft", str(algo / "sft" / "ckpt"),
                   "--out", str(tmp_path / "rm"), "--resume"])
    assert "already finished" in capsys.readouterr().out
    assert {stage: files(tmp_path / stage) for stage in ("sft", "rm")} == before  # no second report, no new rows
    # a flag the saved config.json does not have (added after the run started) counts as its default there
    cfg = tmp_path / "sft" / "config.json"
    saved = json.loads(cfg.read_text())
    cfg.write_text(json.dumps({k: v for k, v in saved.items() if k != "lr_schedule"}))
    assert _err(train_sft.main, sft + ["--lr-schedule", "linear"]).startswith(
        f"--resume of {tmp_path / 'sft'} with other settings than it was started with: --lr-schedule 'linear' (the run has 'cosine')")
    cfg.write_text(json.dumps(saved))
    # config.json is type-checked on resume; a checkpoint's model config on load
    cfg.write_text(json.dumps({**json.loads(cfg.read_text()), "lr": "0.003"}))
    assert _err(train_sft.main, sft) == (f"{cfg}: field 'lr' is '0.003' (str), but the flag takes a float; the file was not "
                                         "written by this script: start a new run")
    ckpt_cfg = tmp_path / "sft" / "ckpt" / "config.json"
    d = json.loads(ckpt_cfg.read_text())
    ckpt_cfg.write_text(json.dumps({**d, "model": {**d["model"], "n_layer": "2"}}))
    assert _eval(algo, tmp_path, tmp_path / "sft" / "ckpt") == (
        f"{tmp_path / 'sft' / 'ckpt'}: config.json 'model' section is not a valid GPTConfig: GPTConfig.n_layer must be an int (got '2')")


def test_prompts_outside_the_tasks_grammar_never_crash_the_gold_judge(algo, tmp_path, capsys):
    """The RM trains and reports on pairs whose prompts a built-in task cannot judge; gold figures leave them out."""
    rows = [json.loads(x) for x in (algo / "data" / "preferences.jsonl").read_text().splitlines()][:400]
    for i in range(0, len(rows), 5):
        rows[i]["prompt"] = "tell me about your day"
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps(r) + "\n" for r in rows))
    train_rm.main(["--preset", "smoke", "--data", str(algo / "data"), "--pairs", str(pairs), "--sft", str(algo / "sft" / "ckpt"),
                   "--out", str(tmp_path / "rm"), "--sft-pairs", "20", "--n-policy-pairs", "16"])
    out = capsys.readouterr().out
    assert (f"warning: 80 of 400 prompts are outside the algo task's grammar (first: {pairs}:1: 'tell me about your day'); the "
            "gold judge leaves them out") in out
    diag = read_json(tmp_path / "rm" / "diagnostics.json")
    assert 0 < diag["rm/gold_left_out"] < diag["rm/n_pairs"]  # held-out pairs the judge cannot score, counted
    assert 0 <= diag["rm/gold_accuracy"] <= 1 and (tmp_path / "rm" / "ckpt" / "model.safetensors").exists()
    # evaluate: the figures cover the prompts the judge knows; PPO against the gold judge refuses such a prompt up front
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(x + "\n" for x in (algo / "data" / "prompts_eval.jsonl").read_text().splitlines()[:7])
                       + json.dumps({"prompt": "hello there"}) + "\n")
    evaluate.main(["--policy", str(algo / "sft" / "ckpt"), "--reference", str(algo / "sft" / "ckpt"), "--data", str(algo / "data"), "--prompts", str(prompts),
                   "--n-eval", "8", "--max-new-tokens", "8", "--out", str(tmp_path / "e.json")])
    report = read_json(tmp_path / "e.json")
    assert report["gold/left_out"] == 1 and report["eval/n"] == 8 and 0 <= report["gold/win_rate"] <= 1
    data = tmp_path / "data"
    shutil.copytree(algo / "data", data)
    with open(data / "prompts_rl.jsonl", "a") as f:
        f.write(json.dumps({"prompt": "hello there"}) + "\n")
    n = len((data / "prompts_rl.jsonl").read_text().splitlines())
    assert _err(train_ppo.main, ["--preset", "smoke", "--data", str(data), "--sft", str(algo / "sft" / "ckpt"), "--reward", "gold",
                                 "--out", str(tmp_path / "ppo")]) == (
        f"--reward gold: {data / 'prompts_rl.jsonl'}:{n}: the prompt is outside the algo task's grammar, so the gold judge "
        "cannot score it: 'hello there'")
