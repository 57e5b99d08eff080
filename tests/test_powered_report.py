"""experiments/powered_report.py on a hand-made reproduce.py output: the rows, the detectable difference by hand,
the paper's figures beside them, the mechanism logs at the first KL coefficient only."""
import json
import sys

from helpers import ROOT

sys.path.insert(0, str(ROOT / "experiments"))
import powered_report  # noqa: E402


def test_report_by_hand(tmp_path):
    win = {"mean": 0.03, "lo": -0.02, "hi": 0.08, "per_unit": [0.01, 0.03, 0.05], "decision": "inconclusive"}
    gold = {"mean": 0.01, "lo": -0.01, "hi": 0.03, "per_unit": [0.0, 0.01, 0.02]}
    res = {"methods": {"ppo": {"gold/win_rate": {"mean": 0.6, "std": 0.05}}},
           "paired": {"rlp_spg": {"win": win, "gold": gold, "units": 3, "unit": "seeds"}},
           "stage_seconds": {"s0_sft": 1800.0, "s0_ppo": 1800.0}}
    cfg = {"preset": "tiny", "delta": 0.03, "kl_coefs": "0.05,0.2", "out": "runs/x", "seeds": 3, "methods": ["sft", "ppo", "rlp_spg"],
           "pack": True, "jobs": 2, "threads": 1, "provenance": {"git_commit": "abcdef1234567890", "git_dirty": False}}
    (tmp_path / "results.json").write_text(json.dumps(res))
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    head = "flip_rate,method,kl_coef,seed,rm,advantage_var_last10,advantage_var_first10,value_eos_error_first10,onpolicy_acc_last,first_rm_onpolicy_acc_last\n"
    (tmp_path / "runs.csv").write_text(head + ",ppo,0.05,0,rm,1.0,2.0,0.5,0.6,\n,ppo,0.05,1,rm,3.0,4.0,0.7,0.8,\n"
                                       ",ppo,0.2,0,rm,99,99,99,99,\n,rlp_spg,0.05,0,rm_rlp_spg,1.0,1.0,0.1,0.7,0.6\n")
    md = powered_report.report(tmp_path)
    row = next(line for line in md.splitlines() if line.startswith("| RLP-SPG (primary)"))
    # sd of 0.01, 0.03, 0.05 is 0.02; (t_.975,2 4.303 + t_.8,2 1.061) * 0.02 / sqrt(3) = 0.0619
    assert "+0.030 [-0.020, +0.080] | inconclusive | 0.062 | +0.010 [-0.010, +0.030]" in row
    assert "+3.4 points over PPO (50.2 against 46.8)" in row
    ppo = next(line for line in md.splitlines() if line.startswith("| PPO |"))
    assert ppo == "| PPO | 3.000 ± 1.414 | 2.000 ± 1.414 | 0.600 ± 0.141 | 0.700 ± 0.141 | - |"  # the 0.2 run left out
    assert "1.0 hours of stage time over its 3 seeds" in md and "commit abcdef123456;" in md
    assert md.rstrip().endswith("`python3 reproduce.py --kl-coefs 0.05,0.2 --out runs/x --seeds 3 --methods sft,ppo,rlp_spg "
                                "--pack --jobs 2 --threads 1`")  # the defaults (preset tiny, delta 0.03) left out
    assert "| PPO + contrastive rewards" not in md  # not among the run's methods: no row
    cfg["methods"].append("contrastive")
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    assert "| PPO + contrastive rewards (primary) | missing" in powered_report.report(tmp_path)
