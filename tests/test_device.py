"""The device flag, gradient accumulation, activation checkpointing and the out-of-memory message, on the CPU
(tests/test_cuda.py runs the pipeline on a GPU where there is one)."""
import json
import os
import subprocess
import sys

import pytest
import torch
from helpers import ROOT, run

from rlhf.device import device_error, oom_guard, resolve_device, resolve_dtype
from rlhf.model import GPT, GPTConfig

TIMING = ("time/", "per_s", "seconds")


def untimed(path):
    return [{k: v for k, v in json.loads(line).items() if not any(t in k for t in TIMING)} for line in open(path)]


def test_device_flag_values():
    assert device_error("auto") is None and device_error("cpu") is None
    assert "must be auto, cpu, cuda or cuda:N (got 'tpu')" in device_error("tpu")
    assert "is 'cuda:99' but" in device_error("cuda:99")
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_dtype("auto", torch.device("cpu")) == "fp32" and resolve_dtype("auto", torch.device("cuda", 0)) == "bf16"
    assert resolve_dtype("bf16", torch.device("cpu")) == "bf16"


@pytest.mark.parametrize("device", ["cuda:99", "tpu"] + ([] if torch.cuda.is_available() else ["cuda"]))
def test_unavailable_device_exits_2_naming_the_flag(algo, tmp_path, device):
    p = run("train_sft.py", "--preset", "smoke", "--data", str(algo / "data"), "--out", str(tmp_path / "x"), "--device", device,
            check=False)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert f"--device " in p.stderr and ("no CUDA GPU is visible" in p.stderr or "visible (cuda:0" in p.stderr)
    assert not (tmp_path / "x").exists()  # refused before any work


def test_device_cpu_gives_the_default_metrics(algo, tmp_path):
    common = ["train_sft.py", "--preset", "smoke", "--data", str(algo / "data"), "--steps", "12", "--n-eval", "4", "--threads", "1"]
    if torch.cuda.is_available():
        pytest.skip("the default is cuda on this machine")
    run(*common, "--out", str(tmp_path / "default"))
    run(*common, "--out", str(tmp_path / "cpu"), "--device", "cpu")
    assert untimed(tmp_path / "default" / "metrics.jsonl") == untimed(tmp_path / "cpu" / "metrics.jsonl")


def _close(a, b, tol=1e-5):
    for x, y in zip(a, b):
        for k in x:
            if isinstance(x[k], float) and k != "rm/reward_mean":
                assert y[k] == pytest.approx(x[k], rel=tol, abs=tol), (x["step"], k)


def test_grad_accum_equals_the_larger_batch(algo, tmp_path):
    """SFT and RM: 2 forwards of 8 accumulated = one forward of 16, to 1e-5 (float sums in another order)."""
    sft = ["train_sft.py", "--preset", "smoke", "--data", str(algo / "data"), "--steps", "6", "--n-eval", "0", "--threads", "1"]
    run(*sft, "--batch-size", "16", "--out", str(tmp_path / "big"))
    run(*sft, "--batch-size", "8", "--grad-accum", "2", "--out", str(tmp_path / "acc"))
    big, acc = untimed(tmp_path / "big" / "metrics.jsonl"), untimed(tmp_path / "acc" / "metrics.jsonl")
    assert len(big) == len(acc) == 7  # 6 steps and the final report
    _close(big, acc)
    rm = ["train_rm.py", "--preset", "smoke", "--data", str(algo / "data"), "--sft", str(algo / "sft" / "ckpt"), "--epochs", "0.04",
          "--n-policy-pairs", "0", "--eval-every", "1000", "--threads", "1"]
    run(*rm, "--batch-size", "16", "--out", str(tmp_path / "rm_big"))
    run(*rm, "--batch-size", "8", "--grad-accum", "2", "--out", str(tmp_path / "rm_acc"))
    big, acc = untimed(tmp_path / "rm_big" / "metrics.jsonl"), untimed(tmp_path / "rm_acc" / "metrics.jsonl")
    assert len(big) == len(acc) > 2
    _close(big, acc)  # every step's loss and accuracy, and the final row's held-out diagnostics
    # ... except the reward's mean: the BT loss ignores a constant offset, so the head's bias has a zero gradient up
    # to rounding, and Adam turns rounding noise of either summation order into lr-sized steps of that bias



def test_grad_checkpoint_gives_the_same_gradients():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=50, block_size=16, n_layer=3, n_head=2, n_embd=16, dropout=0.1))
    ids = torch.randint(0, 50, (4, 12))
    mask = (torch.arange(12)[None] < torch.tensor([12, 9, 5, 12])[:, None]).float()  # right padding: the masked path

    def grads(checkpointed: bool):
        model.grad_checkpoint = checkpointed
        model.zero_grad()
        torch.manual_seed(1)  # the same dropout masks: checkpoint replays the RNG state for the recomputation
        model(ids, mask).square().mean().backward()
        return [p.grad.clone() for p in model.parameters()]
    for a, b in zip(grads(False), grads(True)):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_oom_becomes_one_line_naming_stage_batch_and_checkpoint(tmp_path):
    with pytest.raises(SystemExit) as e:
        with oom_guard(lambda: "SFT step 7", "--batch-size 64", tmp_path / "ckpt"):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    assert str(e.value) == (f"error: CUDA out of memory in SFT step 7; lower --batch-size 64, or add --grad-checkpoint; "
                            f"no checkpoint was saved before it ({tmp_path / 'ckpt'} does not exist yet)")


def test_grad_accum_refused_with_rlp_uml(algo, tmp_path):
    p = run("train_rm.py", "--preset", "smoke", "--data", str(algo / "data"), "--sft", str(algo / "sft" / "ckpt"), "--out",
            str(tmp_path / "x"), "--policy-samples", str(tmp_path / "none.jsonl"), "--uml-weight", "0.5", "--grad-accum", "2",
            check=False)
    assert p.returncode == 1 and "Traceback" not in p.stderr
    assert p.stderr.strip().endswith("--grad-accum > 1 cannot be used with --uml-weight (RLP-UML's MIB loss contrasts within one "
                                     "batch); use --grad-checkpoint to save memory instead")


def test_cpu_threads_follows_the_cgroup_quota_and_torchrun(tmp_path, monkeypatch):
    from rlhf.device import cpu_threads
    n = torch.get_num_threads()
    v2 = tmp_path / "cpu.max"
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    v2.write_text("max 100000\n")  # no quota: the affinity mask (and torch's default) decide
    assert cpu_threads((str(v2),)) == min(n, len(os.sched_getaffinity(0)))
    v2.write_text("50000 100000\n")  # half a CPU rounds up to 1
    assert cpu_threads((str(v2),)) == 1
    v1 = tmp_path / "cpu.cfs_quota_us"
    v1.write_text("100000\n")
    (tmp_path / "cpu.cfs_period_us").write_text("100000\n")
    assert cpu_threads((str(v1),)) == 1
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(4 * n))  # more torchrun processes than CPUs: one thread each
    assert cpu_threads((str(tmp_path / "absent"),)) == 1


@pytest.mark.parametrize("script", ["train_sft.py", "train_rm.py", "train_dpo.py", "train_ppo.py", "evaluate.py", "sample.py",
                                    "sample_baselines.py", "prepare_data.py", "reproduce.py"])
def test_help_answers_without_importing_torch(script):
    # torch made unimportable: --help must come from the script's Args alone (rlhf.config.answer_help)
    code = ("import runpy, sys; sys.modules['torch'] = None; "
            f"sys.argv = [{script!r}, '--preset', 'smoke', '--help'] if {script!r}.startswith('train_') else [{script!r}, '--help']; "
            f"runpy.run_path({script!r}, run_name='__main__')")
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "usage:" in p.stdout and "--out" in p.stdout
    if script.startswith("train_"):
        assert "with --preset smoke" in p.stdout


FAULTS = """
import resource, torch
from rlhf.device import keep_freed_memory
from rlhf.model import GPT, GPTConfig
from rlhf.sft import sft_loss
kept = keep_freed_memory()
torch.manual_seed(0)
torch.set_num_threads(1)
m = GPT(GPTConfig(vocab_size=8192, n_layer=1, n_embd=64, n_head=2, block_size=64))
opt = torch.optim.AdamW(m.parameters())
ids, rmask = torch.randint(0, 8192, (16, 64)), torch.ones(16, 64)
def step():  # the (16, 64, 8192) logits and their gradient are 32 MiB each
    loss = sft_loss(m(ids), ids, rmask)
    loss.backward()
    opt.step()
    opt.zero_grad()
    return loss.item()
step(), step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
losses = [step() for _ in range(5)]
print(kept, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before, repr(losses))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux") or os.confstr("CS_GNU_LIBC_VERSION") is None,
                    reason="keep_freed_memory sets glibc's malloc options; elsewhere it does nothing")
def test_keep_freed_memory_reuses_pages_instead_of_faulting_them_in_again():
    """Five SFT steps with 32 MiB logits: with glibc's defaults every step maps its large tensors afresh and faults
    them in page by page (tens of thousands of faults a step); kept (every script's default), the pages freed by
    the last step are mostly reused. The losses are the same bit for bit."""
    def measure(keep):
        env = {**os.environ, "RLHF_KEEP_FREED_MEMORY": keep, "PYTHONPATH": str(ROOT)}
        p = subprocess.run([sys.executable, "-c", FAULTS], env=env, capture_output=True, text=True, check=True)
        kept, n, losses = p.stdout.split(maxsplit=2)
        return kept == "True", int(n), losses
    (on, kept_faults, kept_losses), (off, default_faults, default_losses) = measure("1"), measure("0")
    assert on and not off and kept_losses == default_losses
    # kept: 1 to 24,576 faults in five tries (a block now and then does not fit the hole the last step left), default
    # about 170,000
    assert default_faults > 5 * 8_192 and kept_faults < default_faults / 4, (kept_faults, default_faults)
