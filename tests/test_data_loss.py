"""No lost data: --overwrite never deletes a command's own inputs, no output replaces an input, a continued
samples file equals the uninterrupted one byte for byte (and other weights at the same path are refused), and a
failed write (a full disk, simulated with a file-size limit) keeps the last good checkpoint and ends in one line."""
import json
import shutil
import subprocess
import sys
import textwrap

import pytest
import torch
from helpers import ROOT, run

from rlhf.checkpoint import load_checkpoint, save_checkpoint


def _last_line(p) -> str:
    assert p.returncode == 1 and "Traceback" not in p.stderr, p.stderr[-2000:]
    return p.stderr.strip().splitlines()[-1]


def test_overwrite_never_deletes_the_commands_own_inputs(algo, tmp_path):
    run_dir = tmp_path / "R"  # an SFT run whose checkpoint the RM reads, then asked to be overwritten by that RM
    shutil.copytree(algo / "sft", run_dir)
    data = tmp_path / "D"
    shutil.copytree(algo / "data", data)
    before = sorted(p.name for p in (run_dir / "ckpt").iterdir())
    p = run("train_rm.py", "--preset", "smoke", "--data", str(data), "--sft", str(run_dir / "ckpt"), "--out", str(run_dir),
            "--overwrite", check=False)
    assert _last_line(p) == (f"error: --overwrite would delete {run_dir}, but --sft {run_dir / 'ckpt'}, an input of this "
                             "command, lies inside it; choose another --out (or move the input out of it)")
    p = run("train_sft.py", "--preset", "smoke", "--data", str(data), "--out", str(data), "--overwrite", check=False)
    assert "an input of this command, is that directory" in _last_line(p)
    (data / "run").mkdir()
    (data / "run" / "metrics.jsonl").write_text('{"step": 1}\n')
    p = run("train_sft.py", "--preset", "smoke", "--data", str(data), "--out", str(data / "run"), "--overwrite", check=False)
    assert f"--data {data}, an input of this command, holds it" in _last_line(p)
    assert sorted(p.name for p in (run_dir / "ckpt").iterdir()) == before  # nothing read was touched
    assert sorted(p.name for p in data.iterdir()) == sorted([p.name for p in (algo / "data").iterdir()] + [".lock", "run"])
    assert (data / "run" / "metrics.jsonl").read_text() == '{"step": 1}\n'
    # an output file that is an input (or inside an input directory) is refused before anything is written
    prompts = data / "prompts_eval.jsonl"
    text = prompts.read_text()
    p = run("evaluate.py", "--policy", str(run_dir / "ckpt"), "--data", str(data), "--prompts", str(prompts),
            "--out", str(prompts), check=False)
    assert _last_line(p) == f"error: {prompts} would be written over --prompts {prompts}, which this command reads; choose another --out"
    p = run("sample_baselines.py", "--policy", str(run_dir / "ckpt"), "--rm", str(algo / "rm" / "ckpt"), "--prompts", str(prompts),
            "--out", str(run_dir / "ckpt" / "samples.jsonl"), check=False)
    assert f"would be written inside --policy {run_dir / 'ckpt'}" in _last_line(p)
    assert prompts.read_text() == text and not (run_dir / "ckpt" / "samples.jsonl").exists()


def test_a_continued_samples_file_equals_the_uninterrupted_one_and_other_weights_are_refused(algo, tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(line + "\n" for line in (algo / "data" / "prompts_rl.jsonl").read_text().splitlines()[:12]))
    shutil.copytree(algo / "sft" / "ckpt", tmp_path / "policy")
    args = ["sample_baselines.py", "--policy", str(tmp_path / "policy"), "--rm", str(algo / "rm" / "ckpt"), "--prompts", str(prompts),
            "--k", "2", "--max-new-tokens", "12", "--batch-size", "4", "--threads", "1"]
    full = tmp_path / "full.jsonl"
    run(*args, "--out", str(full))
    whole = full.read_bytes()
    lines = whole.splitlines(keepends=True)
    assert len(lines) == 12
    cuts = {"no final newline": whole[:-1],  # a complete record whose newline was not written
            "part of a chunk": b"".join(lines[:5]) + lines[5][:40],  # chunk 2 has 1 of 4 lines and half a line
            "whole chunks": b"".join(lines[:8])}
    for name, cut in cuts.items():
        out = tmp_path / f"{name.replace(' ', '_')}.jsonl"
        out.write_bytes(cut)
        shutil.copy(f"{full}.meta.json", f"{out}.meta.json")
        run(*args, "--out", str(out))
        assert out.read_bytes() == whole, name
    # other weights saved at the same checkpoint path: refused, the partial file kept as it was
    out = tmp_path / "changed.jsonl"
    out.write_bytes(b"".join(lines[:4]))
    shutil.copy(f"{full}.meta.json", f"{out}.meta.json")
    state, config = load_checkpoint(tmp_path / "policy")
    state["wte.weight"] += 0.01
    save_checkpoint(tmp_path / "policy", state, {k: v for k, v in config.items() if k != "kind"}, "policy",
                    (tmp_path / "policy" / "tokenizer.json").read_text())
    p = run(*args, "--out", str(out), check=False)
    assert _last_line(p) == f"error: {out} already exists with other settings (policy_weights); remove it or choose another --out"
    assert out.read_bytes() == b"".join(lines[:4])
    # a file written from other prompts is refused, naming the line
    other = tmp_path / "other.jsonl"
    shutil.copytree(algo / "sft" / "ckpt", tmp_path / "policy", dirs_exist_ok=True)
    row = json.loads(lines[1])
    other.write_bytes(lines[0] + (json.dumps({**row, "prompt": "reverse : a b ."}) + "\n").encode())
    shutil.copy(f"{full}.meta.json", f"{other}.meta.json")
    p = run(*args, "--out", str(other), check=False)
    assert _last_line(p).startswith(f"error: {other}:2: holds prompt 'reverse : a b .' where the prompts file's prompt 2 is")


_SAVE_UNDER_A_SIZE_LIMIT = textwrap.dedent("""
    import resource, sys, torch
    from rlhf.checkpoint import save_checkpoint
    from rlhf.data import write_json
    from rlhf.run import run_cli

    def main():
        path, what = sys.argv[1], sys.argv[2]
        save_checkpoint(path, {"w": torch.ones(4096)}, {}, "aux", json_files={"state": {"step": 1}})  # the last good one
        resource.setrlimit(resource.RLIMIT_FSIZE, (8192, 8192))  # as a full disk: the next big write fails (EFBIG)
        if what == "checkpoint":
            save_checkpoint(path, {"w": torch.full((4096,), 2.0)}, {}, "aux", json_files={"state": {"step": 2}})
        else:
            write_json(path + ".json", {"x": "y" * 10000})
    run_cli(main)
""")


@pytest.mark.parametrize("what", ["checkpoint", "json"])
def test_a_failed_write_keeps_the_last_good_checkpoint_and_ends_in_one_line(tmp_path, what):
    path = tmp_path / "ckpt"
    p = subprocess.run([sys.executable, "-c", _SAVE_UNDER_A_SIZE_LIMIT, str(path), what], cwd=ROOT, capture_output=True, text=True,
                       timeout=120)
    last = _last_line(p)
    if what == "checkpoint":
        assert last == (f"error: could not write the checkpoint {path} (I/O error: File too large (os error 27)); nothing of it "
                        f"was kept; the last good checkpoint is {path} (step 1)")
    else:
        assert last.startswith("error: OSError: [Errno 27] File too large: ") and f"{path}.json" in last, last
        assert not (tmp_path / "ckpt.json").exists()
    state, _ = load_checkpoint(path)
    assert torch.equal(state["w"], torch.ones(4096))  # the last good checkpoint, whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]  # no .tmp directory or temp file left behind
