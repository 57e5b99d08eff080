"""Data parallelism under torchrun (rlhf/distributed.py): 2 CPU processes (gloo) against 1 process.

--batch-size is per rank, so 2 ranks of B must train exactly as 1 process of 2B: the same examples per
step, the same averaged gradient, the same logged loss (up to float summation order).
"""
import json
import os
import subprocess
import sys

import pytest
import torch
from helpers import ROOT, run

from rlhf import distributed
from rlhf.ppo import whiten


def torchrun(*args, nproc: int = 2):
    """python -m torch.distributed.run --standalone (a free port) --nproc_per_node N <args>; fails with its output."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    p = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc), *args],
                       cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    if p.returncode != 0:
        raise AssertionError(f"torchrun {args[0]} failed ({p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    return p


def losses(run_dir, key):
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").open()]
    return {r["step"]: r[key] for r in rows if key in r}


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """Small algo data and a 1-process SFT policy (the RM and PPO start from it)."""
    d = tmp_path_factory.mktemp("ddp")
    run("prepare_data.py", "--task", "algo", "--out", str(d / "data"), "--n-sft", "400", "--n-pairs", "400",
        "--n-rl", "32", "--n-unlabelled", "8", "--n-eval", "8")
    return d


WORKER = r'''
import json, os, sys, torch
from rlhf import distributed
from rlhf.ppo import whiten
distributed.init()
r, w = distributed.rank(), distributed.world_size()
assert w == 2 and list(distributed.batch_positions(3, 4)) == list(range(24 + 4 * r, 28 + 4 * r))
assert distributed.rank_seed(7) == 7 + r * distributed.RANK_STRIDE
# whitening over both ranks' rows equals ppo.whiten over the concatenated batch (rank 1's rows are shorter)
g = torch.Generator().manual_seed(0)
x = torch.randn(6, 5, generator=g)
mask = (torch.arange(5)[None] < torch.tensor([5, 3, 1, 4, 2, 3])[:, None]).float()
full = whiten(x, mask)
mine = whiten(x[3 * r:3 * r + 3, :5 - r], mask[3 * r:3 * r + 3, :5 - r], reduce=distributed.all_reduce_sum)
torch.testing.assert_close(mine, full[3 * r:3 * r + 3, :5 - r], atol=1e-5, rtol=0)
# gradients averaged; parameters and strings come from rank 0
m = torch.nn.Linear(2, 1)
m.weight.grad, m.bias.grad = torch.full((1, 2), float(r)), torch.full((1,), 2.0 * r)
distributed.all_reduce_grads(m.parameters())
assert m.weight.grad.tolist() == [[0.5, 0.5]] and m.bias.grad.tolist() == [1.0]
with torch.no_grad():
    m.weight.fill_(float(r))
distributed.broadcast_params(m)
assert m.weight.tolist() == [[0.0, 0.0]]
assert distributed.broadcast_str("héllo" if r == 0 else None) == "héllo"
# rank 0 has 1 item of loss 1.0, rank 1 has 3 items of loss 3.0: the global mean is (1 + 9) / 4 = 2.5
n, loss = torch.tensor(1.0 + 2 * r), torch.tensor(1.0 + 2 * r)
assert float(distributed.all_reduce_mean(distributed.mean_weight(n) * loss)) == 2.5
assert distributed.all_reduce_mean_dict({"a": float(r), "b": "x"}) == {"a": 0.5, "b": "x"}
print("only rank 0 prints this")
open(os.path.join(sys.argv[1], f"ok{r}"), "w").write("ok")
distributed.cleanup()
'''


def test_helpers_under_torchrun(tmp_path):
    (tmp_path / "worker.py").write_text(WORKER)
    p = torchrun(str(tmp_path / "worker.py"), str(tmp_path))
    assert (tmp_path / "ok0").exists() and (tmp_path / "ok1").exists()
    assert p.stdout.count("only rank 0 prints this") == 1  # the other rank's stdout goes to /dev/null


def test_single_process_is_untouched():
    # no torchrun environment: rank 0 of 1, the old batch positions and seeds, ppo.whiten itself, no copies
    assert (distributed.rank(), distributed.world_size(), distributed.is_main()) == (0, 1, True)
    assert distributed.batch_positions(3, 4) == range(12, 16) and distributed.rank_seed(5) == 5
    x, mask = torch.randn(3, 4), torch.ones(3, 4)
    assert torch.equal(whiten(x, mask, reduce=distributed.all_reduce_sum), whiten(x, mask))
    assert distributed.all_reduce_mean(x) is x and distributed.mean_weight(mask.sum()) == 1.0


def test_sft_and_rm_two_ranks_match_one_process_on_the_doubled_batch(small):
    d = small
    sft = ["train_sft.py", "--preset", "smoke", "--data", str(d / "data"), "--steps", "4", "--warmup-steps", "2",
           "--n-eval", "0", "--threads", "1"]
    run(*sft, "--batch-size", "16", "--out", str(d / "sft1"))
    p = torchrun(*sft, "--batch-size", "8", "--out", str(d / "sft2"))
    one, two = losses(d / "sft1", "sft/loss"), losses(d / "sft2", "sft/loss")
    assert sorted(one) == sorted(two) == [1, 2, 3, 4]  # one writer: each step logged once
    assert all(abs(one[s] - two[s]) < 1e-5 for s in one), (one, two)
    assert p.stdout.count("model: ") == 1  # only rank 0 prints
    assert (d / "sft2" / "ckpt" / "model.safetensors").exists()

    rm = ["train_rm.py", "--preset", "smoke", "--data", str(d / "data"), "--sft", str(d / "sft1" / "ckpt"), "--epochs", "0.15",
          "--warmup-steps", "2", "--n-policy-pairs", "0", "--max-val-pairs", "40", "--threads", "1"]
    run(*rm, "--batch-size", "16", "--out", str(d / "rm1"))
    torchrun(*rm, "--batch-size", "8", "--out", str(d / "rm2"))
    one, two = losses(d / "rm1", "rm/loss"), losses(d / "rm2", "rm/loss")
    assert len(one) >= 3 and sorted(one) == sorted(two)
    assert all(abs(one[s] - two[s]) < 1e-5 for s in one), (one, two)
    diag = [json.loads((d / r / "diagnostics.json").read_text())["rm/accuracy"] for r in ("rm1", "rm2")]
    assert abs(diag[0] - diag[1]) < 1e-6


def test_ppo_runs_on_two_ranks(small):
    d = small
    if not (d / "sft1" / "ckpt").exists():  # when run alone
        run("train_sft.py", "--preset", "smoke", "--data", str(d / "data"), "--steps", "4", "--n-eval", "0",
            "--batch-size", "16", "--threads", "1", "--out", str(d / "sft1"))
    torchrun("train_ppo.py", "--preset", "smoke", "--data", str(d / "data"), "--sft", str(d / "sft1" / "ckpt"),
             "--reward", "gold", "--steps", "2", "--batch-size", "4", "--max-new-tokens", "8", "--n-eval", "4",
             "--eval-every", "2", "--whiten-rewards", "--threads", "1", "--out", str(d / "ppo"))
    rows = [json.loads(line) for line in (d / "ppo" / "metrics.jsonl").open()]
    assert [r["step"] for r in rows] == [0, 1, 2]  # one writer; the held-out evaluation at 0 and 2
    assert "gold/score" in rows[0] and "gold/score" in rows[2] and rows[2]["objective/kl_coef"] == 0.05
    assert (d / "ppo" / "ckpt" / "model.safetensors").exists() and (d / "ppo" / "ckpt" / "value.safetensors").exists()


def test_dpo_two_ranks_match_one_process_and_grpo_runs_on_two_ranks(small):
    d = small
    if not (d / "sft1" / "ckpt").exists():  # when run alone
        run("train_sft.py", "--preset", "smoke", "--data", str(d / "data"), "--steps", "4", "--n-eval", "0",
            "--batch-size", "16", "--threads", "1", "--out", str(d / "sft1"))
    dpo = ["train_dpo.py", "--preset", "smoke", "--data", str(d / "data"), "--sft", str(d / "sft1" / "ckpt"), "--epochs", "0.15",
           "--warmup-steps", "2", "--max-val-pairs", "40", "--threads", "1"]
    run(*dpo, "--batch-size", "16", "--out", str(d / "dpo1"))
    torchrun(*dpo, "--batch-size", "8", "--out", str(d / "dpo2"))
    one, two = losses(d / "dpo1", "dpo/loss"), losses(d / "dpo2", "dpo/loss")
    assert len(one) >= 3 and sorted(one) == sorted(two)
    assert all(abs(one[s] - two[s]) < 1e-5 for s in one), (one, two)
    # GRPO: each rank samples its own groups of k; no critic on any rank
    torchrun("train_ppo.py", "--preset", "smoke", "--data", str(d / "data"), "--sft", str(d / "sft1" / "ckpt"),
             "--reward", "gold", "--advantage", "grpo", "--group-size", "2", "--steps", "2", "--batch-size", "4",
             "--max-new-tokens", "8", "--n-eval", "4", "--eval-every", "2", "--threads", "1", "--out", str(d / "grpo"))
    rows = [json.loads(line) for line in (d / "grpo" / "metrics.jsonl").open()]
    assert [r["step"] for r in rows] == [0, 1, 2] and "ppo/loss/kl" in rows[1] and "ppo/loss/value" not in rows[1]
    assert not (d / "grpo" / "ckpt" / "value.safetensors").exists()
