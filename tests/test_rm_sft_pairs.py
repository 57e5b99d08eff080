"""train_rm.py --sft-pairs: pairs of two SFT samples labelled by the task's annotator join the training pairs."""
import json
import shutil

from helpers import run


def test_sft_pairs_are_added_and_counted(algo, tmp_path):
    p = run("train_rm.py", "--preset", "smoke", "--data", str(algo / "data"), "--sft", str(algo / "sft" / "ckpt"),
            "--sft-pairs", "40", "--epochs", "0.05", "--n-policy-pairs", "0", "--out", str(tmp_path / "rm"))
    line = next(l for l in p.stdout.splitlines() if "pairs of two SFT samples added" in l)
    added = int(line.split()[0])
    assert 0 < added <= 40
    base = next(l for l in p.stdout.splitlines() if "training pairs" in l)
    cfg = json.loads((tmp_path / "rm" / "config.json").read_text())
    assert cfg["sft_pairs"] == 40 and int(base.split()[0]) > added


def test_sft_pairs_need_a_task(algo, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(algo / "data", data)
    (data / "meta.json").unlink()
    p = run("train_rm.py", "--preset", "smoke", "--data", str(data), "--sft", str(algo / "sft" / "ckpt"),
            "--sft-pairs", "10", "--out", str(tmp_path / "rm"), check=False)
    assert p.returncode != 0 and "--sft-pairs" in p.stderr and "meta.json" in p.stderr


def test_rm_errors_reproduces_train_rm_sft_pair_accuracy(algo):
    """experiments/rm_errors.py samples the same pairs as train_rm.py's sft_pairs report, so its overall gold
    accuracy must equal the figure in the RM's diagnostics."""
    diag = json.loads((algo / "rm" / "diagnostics.json").read_text())
    p = run("experiments/rm_errors.py", "--rm", str(algo / "rm" / "ckpt"), "--sft", str(algo / "sft" / "ckpt"),
            "--data", str(algo / "data"), "--task", "algo", "--show", "1", check=False)
    if diag["sft_pairs/gold_accuracy"] != diag["sft_pairs/gold_accuracy"]:  # NaN: gold tied on every pair
        assert p.returncode != 0 and "no pair with a gold difference" in p.stderr
        return
    assert p.returncode == 0, p.stderr[-2000:]
    first = p.stdout.splitlines()[0]
    assert first.endswith(f"RM gold accuracy {diag['sft_pairs/gold_accuracy']:.3f}"), (first, diag["sft_pairs/gold_accuracy"])
    assert "by component that differs" in p.stdout


def test_task_from_meta_keeps_the_annotator(algo):
    """Labels drawn after prepare_data (train_rm.py --sft-pairs and its sft_pairs report) must use the data's own
    annotator, not the task defaults: a noisier data directory gives a noisier task."""
    from rlhf import tasks
    meta = json.loads((algo / "data" / "meta.json").read_text())
    assert tasks.task_from_meta(meta).annotator_settings() == meta["annotator"]
    noisy = {**meta, "annotator": {**meta["annotator"], "flip_rate": 0.4}}
    assert tasks.task_from_meta(noisy).annotator_settings()["flip_rate"] == 0.4
    assert tasks.task_from_meta(None) is None


def test_pairs_from_sft_replaces_d_with_sft_sample_pairs(algo, tmp_path):
    """--pairs-from sft: the pairs file gives the prompts and the split; every training and held-out pair is two SFT
    samples ordered by the annotator (its counts are printed, and the held-out diagnostics are on those pairs)."""
    data = tmp_path / "data"
    shutil.copytree(algo / "data", data)
    lines = (data / "preferences.jsonl").read_text().splitlines(keepends=True)
    (data / "preferences.jsonl").write_text("".join(lines[:80]))
    p = run("train_rm.py", "--preset", "smoke", "--data", str(data), "--sft", str(algo / "sft" / "ckpt"), "--pairs-from", "sft",
            "--epochs", "0.5", "--n-policy-pairs", "0", "--out", str(tmp_path / "rm"))
    made = {l.split()[3]: int(l.split()[2]) for l in p.stdout.splitlines() if l.startswith("--pairs-from sft:")}
    assert set(made) == {"training", "held-out"} and 0 < made["held-out"] < made["training"] <= 80
    assert next(l for l in p.stdout.splitlines() if "training pairs," in l).startswith(f"{made['training']} training pairs")
    diag = json.loads((tmp_path / "rm" / "diagnostics.json").read_text())
    assert diag["rm/n_pairs"] == made["held-out"]
    bad = run("train_rm.py", "--preset", "smoke", "--data", str(data), "--sft", str(algo / "sft" / "ckpt"), "--pairs-from", "sft",
              "--sft-pairs", "10", "--out", str(tmp_path / "bad"), check=False)
    assert bad.returncode == 2 and "--pairs-from sft" in bad.stderr
