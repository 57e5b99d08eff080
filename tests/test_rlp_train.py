"""RLP retraining of the reward model end to end (smoke size, algo): RLP-UML and RLP-SPG switches of train_rm.py."""
import json
import sys

import pytest
from helpers import ROOT, run


@pytest.fixture(scope="module")
def policy_samples(algo, tmp_path_factory):
    d = tmp_path_factory.mktemp("rlp")
    run("sample_baselines.py", "--policy", str(algo / "sft" / "ckpt"), "--rm", str(algo / "rm" / "ckpt"),
        "--prompts", str(algo / "data" / "prompts_unlabelled.jsonl"), "--k", "6", "--max-new-tokens", "16",
        "--out", str(d / "samples.jsonl"))
    return d


def _rm(algo, d, name, *extra, check=True):
    return run("train_rm.py", "--preset", "smoke", "--data", str(algo / "data"), "--sft", str(algo / "sft" / "ckpt"),
               "--epochs", "0.2", "--n-policy-pairs", "0", "--out", str(d / name),
               "--policy-samples", str(d / "samples.jsonl"), *extra, check=check)


def test_uml_trains_mib_heads_and_reports_before_after(algo, policy_samples):
    d = policy_samples
    _rm(algo, d, "uml", "--uml-weight", "0.5")
    rows = [json.loads(line) for line in (d / "uml" / "metrics.jsonl").open()]
    steps = [r for r in rows if "rlp/mib_mi" in r]
    assert steps and all(r["rlp/mib_mi"] == r["rlp/mib_mi"] for r in steps)
    # the logged rm/loss is the Bradley-Terry part alone: about ln 2 = 0.69 with a fresh head, while the total
    # adds 0.5 * L_M, itself about 2 ln 2 = 1.39 before the critic learns (-I_JSD = 2 softplus(0))
    first = steps[0]
    assert first["rm/loss"] < 1.0 and first["rm/loss"] + 0.5 * first["rlp/mib_loss"] > 1.0
    diag = json.loads((d / "uml" / "diagnostics.json").read_text())
    assert 0 <= diag["rlp/onpolicy_gold_accuracy_before"] <= 1 and 0 <= diag["rlp/onpolicy_gold_accuracy_after"] <= 1
    assert (d / "uml" / "ckpt" / "aux.safetensors").exists()


def test_spg_threshold_and_select_all_ablation(algo, policy_samples):
    d = policy_samples
    _rm(algo, d, "spg_half", "--spg-gamma", "0.5")
    _rm(algo, d, "spg_all", "--spg-gamma", "0")
    half = json.loads((d / "spg_half" / "diagnostics.json").read_text())
    every = json.loads((d / "spg_all" / "diagnostics.json").read_text())
    # gamma 0 accepts every prompt with two clusters; gamma 0.5 only the confident ones: never more
    assert every["rlp/spg_pairs"] >= half["rlp/spg_pairs"] and every["rlp/spg_pairs"] > 0
    assert 0 <= every["rlp/spg_acceptance"] <= 1 and "rlp/spg_gold_accuracy" in every
    # the histogram of largest-cluster sizes counts every prompt the pairs came from; |D_hat| / |D|; the gold gap
    hist = {int(k.rsplit("/", 1)[1]): v for k, v in every.items() if k.startswith("rlp/spg_largest_cluster/")}
    n_rows = len([line for line in (d / "samples.jsonl").open()])
    assert sum(hist.values()) == n_rows - max(1, n_rows // 10)  # the held-out tenth is not clustered
    assert every["rlp/spg_pairs_per_human_pair"] == pytest.approx(every["rlp/spg_pairs"] / (every["rm/train_pairs"] - every["rlp/spg_pairs"]))
    assert 0 <= every["rlp/spg_empty_key_share"] <= 1 and -1 <= every["rlp/spg_gold_gap"] <= 1


def test_rlp_flag_errors(algo, policy_samples):
    d = policy_samples
    p = _rm(algo, d, "both", "--uml-weight", "0.5", "--spg-gamma", "0.5", check=False)
    assert p.returncode != 0 and "not both" in p.stderr and "Traceback" not in p.stderr
    p = run("train_rm.py", "--preset", "smoke", "--data", str(algo / "data"), "--sft", str(algo / "sft" / "ckpt"),
            "--out", str(d / "nosamples"), "--uml-weight", "0.5", check=False)
    assert p.returncode != 0 and "need --policy-samples" in p.stderr
    p = _rm(algo, d, "badgamma", "--spg-gamma", "1.5", check=False)
    assert p.returncode == 2 and "--spg-gamma" in p.stderr


def test_spg_with_no_synthetic_pair_warns_loudly_and_reproduce_marks_the_row(algo, policy_samples, tmp_path):
    d = policy_samples
    # gamma 1.0 needs every sample in the largest cluster and a second cluster besides: never, so 0 pairs
    p = _rm(algo, d, "spg_none", "--spg-gamma", "1.0")
    assert json.loads((d / "spg_none" / "diagnostics.json").read_text())["rlp/spg_pairs"] == 0
    assert "WARNING: RLP-SPG made 0 synthetic pairs from" in p.stdout and "the first RM's data" in p.stdout
    sys.path.insert(0, str(ROOT))
    import reproduce
    records = [{"method": "rlp_spg", "rm": d / "spg_none"}, {"method": "rlp_spg", "rm": d / "spg_all"},
               {"method": "ppo", "rm": algo / "rm"}]
    assert reproduce.no_op_warnings(records) == {
        "rlp_spg": "WARNING: 0 synthetic pairs in 1 of 2 runs, so they retrained on the first RM's data"}
