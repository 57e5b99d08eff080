"""The whole pipeline on a GPU, at the smoke size: skipped where torch sees no CUDA device (every CPU machine,
CI included); experiments/gpu_check.sh runs it where there is one. Each script runs with --device cuda, so a
tensor left on the CPU (or a CPU generator drawing GPU noise) fails here."""
import json
import math
import shutil
import subprocess
import sys

import pytest
import torch
from helpers import ROOT, run

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device visible to torch")
CUDA = ["--device", "cuda"]


def rows(path):
    return [json.loads(line) for line in open(path)]


@pytest.fixture(scope="module")
def gpu(tmp_path_factory):
    d = tmp_path_factory.mktemp("cuda")
    run("prepare_data.py", "--task", "algo", "--out", str(d / "data"), "--n-sft", "2000", "--n-pairs", "1000",
        "--n-rl", "64", "--n-unlabelled", "32", "--n-eval", "32")
    run("train_sft.py", "--preset", "smoke", "--data", str(d / "data"), "--out", str(d / "sft"), "--steps", "60", *CUDA)
    run("train_rm.py", "--preset", "smoke", "--data", str(d / "data"), "--sft", str(d / "sft" / "ckpt"), "--out", str(d / "rm"),
        "--epochs", "0.3", *CUDA)
    return d


def test_sft_and_rm_on_cuda_report_peak_memory(gpu):
    sft = json.loads((gpu / "sft" / "eval.json").read_text())
    assert sft["memory/peak_gpu_mib"] > 0 and math.isfinite(sft["gold/score"])
    rm = json.loads((gpu / "rm" / "diagnostics.json").read_text())
    assert rm["memory/peak_gpu_mib"] > 0 and 0.0 <= rm["rm/accuracy"] <= 1.0


@pytest.mark.parametrize("reward", ["rm", "contrastive", "gold"])
def test_ppo_on_cuda(gpu, tmp_path, reward):
    d, sft, rm = gpu, str(gpu / "sft" / "ckpt"), str(gpu / "rm" / "ckpt")
    extra = []
    if reward == "contrastive":
        run("sample_baselines.py", "--policy", sft, "--rm", rm, "--prompts", str(d / "data" / "prompts_rl.jsonl"), "--k", "2",
            "--max-new-tokens", "16", "--out", str(tmp_path / "base.jsonl"), *CUDA)
        extra = ["--baselines", str(tmp_path / "base.jsonl")]
    run("train_ppo.py", "--preset", "smoke", "--data", str(d / "data"), "--sft", sft, "--rm", rm, "--reward", reward,
        "--steps", "4", "--eval-every", "2", "--n-eval", "16", "--out", str(tmp_path / "ppo"), *extra, *CUDA)
    last = rows(tmp_path / "ppo" / "metrics.jsonl")[-1]
    assert last["step"] == 4 and math.isfinite(last["ppo/loss/policy"]) and last["memory/peak_gpu_mib"] > 0


def test_ppo_resumes_on_cuda_to_the_same_rows(gpu, tmp_path):
    common = ["train_ppo.py", "--preset", "smoke", "--data", str(gpu / "data"), "--sft", str(gpu / "sft" / "ckpt"),
              "--rm", str(gpu / "rm" / "ckpt"), "--eval-every", "100", "--n-eval", "8", "--ckpt-every", "2", *CUDA]
    run(*common, "--steps", "4", "--out", str(tmp_path / "full"))
    run(*common, "--steps", "2", "--out", str(tmp_path / "half"))
    shutil.copytree(tmp_path / "half", tmp_path / "resumed")
    run(*common, "--steps", "4", "--out", str(tmp_path / "resumed"), "--resume")
    a, b = rows(tmp_path / "full" / "metrics.jsonl"), rows(tmp_path / "resumed" / "metrics.jsonl")
    # CUDA kernels are not bit-exact from run to run (README, determinism): equal to a tolerance
    for x, y in zip(a, b):
        for k in ("objective/score", "objective/kl", "ppo/loss/policy"):
            if k in x:
                assert y[k] == pytest.approx(x[k], rel=1e-3, abs=1e-4), (x["step"], k)


def test_rlp_uml_and_spg_retraining_on_cuda(gpu, tmp_path):
    sft, rm = str(gpu / "sft" / "ckpt"), str(gpu / "rm" / "ckpt")
    run("sample_baselines.py", "--policy", sft, "--rm", rm, "--prompts", str(gpu / "data" / "prompts_unlabelled.jsonl"),
        "--k", "4", "--max-new-tokens", "16", "--temperature", "1.0", "--out", str(tmp_path / "ps.jsonl"), *CUDA)
    for flag in (["--uml-weight", "0.5"], ["--spg-gamma", "0.5"]):
        out = tmp_path / flag[0][2:]
        run("train_rm.py", "--preset", "smoke", "--data", str(gpu / "data"), "--sft", sft, "--epochs", "0.1",
            "--policy-samples", str(tmp_path / "ps.jsonl"), *flag, "--out", str(out), *CUDA)
        assert (out / "diagnostics.json").exists()


def test_evaluate_on_cuda(gpu, tmp_path):
    run("evaluate.py", "--policy", str(gpu / "sft" / "ckpt"), "--reference", str(gpu / "sft" / "ckpt"), "--rm",
        str(gpu / "rm" / "ckpt"), "--data", str(gpu / "data"), "--n-eval", "16", "--out", str(tmp_path / "e.json"), *CUDA)
    m = json.loads((tmp_path / "e.json").read_text())
    # the reference is the policy itself: the same weights give the same log-probs, so the KL estimate is 0
    assert abs(m["objective/kl"]) < 1e-3 and 0.0 <= m["gold/win_rate"] <= 1.0 and m["memory/peak_gpu_mib"] > 0


def test_reproduce_smoke_on_cuda(tmp_path):
    run("reproduce.py", "--task", "algo", "--preset", "smoke", "--methods", "sft,ppo", "--out", str(tmp_path / "r"), *CUDA)
    assert (tmp_path / "r" / "table.md").exists()


def test_torchrun_one_process_on_cuda(gpu, tmp_path):
    p = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1", "train_sft.py",
                        "--preset", "smoke", "--data", str(gpu / "data"), "--out", str(tmp_path / "ddp"), "--steps", "4",
                        "--n-eval", "0", *CUDA], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    assert rows(tmp_path / "ddp" / "metrics.jsonl")[-1]["step"] == 4
