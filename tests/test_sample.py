"""sample.py: prompts from flags, files and standard input; greedy, temperature, top-k / top-p, --n, RM scores;
JSONL (the samples format with --rm) or text; bad input is one line."""
import io
import json

import pytest
import torch
from test_reliability import _err

import sample
from rlhf.checkpoint import load_model
from rlhf.data import read_jsonl
from rlhf.model import generate
from rlhf.sampling import encode_queries

PROMPTS = ["reverse : a b c .", "sort : c a b d ."]


@pytest.fixture(autouse=True)
def _restore_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def _run(capsys, argv):
    sample.main(argv + ["--threads", "1"])
    return capsys.readouterr()


def test_greedy_is_the_argmax_decode_and_ignores_the_seed(algo, capsys):
    ckpt = str(algo / "sft" / "ckpt")
    greedy = ["--policy", ckpt, "--prompt", *PROMPTS, "--temperature", "0", "--max-new-tokens", "16"]
    a = [json.loads(x) for x in _run(capsys, greedy).out.splitlines()]
    b = [json.loads(x) for x in _run(capsys, greedy + ["--seed", "7"]).out.splitlines()]
    assert a == b and [r["prompt"] for r in a] == PROMPTS and all(len(r["responses"]) == 1 for r in a)
    policy, tok, _ = load_model(ckpt, "policy")
    q, qm = encode_queries(tok, PROMPTS, policy.config.block_size, 16)
    r, m = generate(policy.eval(), q, qm, 16, tok.eos_id, tok.pad_id, temperature=0.0)
    assert [row["responses"][0] for row in a] == [tok.decode_response(x[mm.bool()].tolist()) for x, mm in zip(r, m)]


def test_n_samples_with_rm_scores_write_a_samples_file(algo, tmp_path, capsys):
    out = tmp_path / "s.jsonl"
    _run(capsys, ["--policy", str(algo / "sft" / "ckpt"), "--rm", str(algo / "rm" / "ckpt"), "--prompts",
                  str(algo / "data" / "prompts_eval.jsonl"), "--n", "3", "--temperature", "1.0", "--top-k", "20", "--top-p", "0.9",
                  "--max-new-tokens", "12", "--out", str(out)])
    rows = read_jsonl(out, "samples")  # the samples format, as sample_baselines.py writes it
    assert len(rows) == 64 and all(len(r["responses"]) == len(r["rewards"]) == 3 for r in rows)
    assert len({t for r in rows for t in r["responses"]}) > 64  # sampled, not one answer repeated


def test_prompts_from_standard_input_and_text_output(algo, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO(PROMPTS[0] + "\n\n" + PROMPTS[1] + "\n"))
    text = _run(capsys, ["--policy", str(algo / "sft" / "ckpt"), "--n", "2", "--temperature", "1.0", "--format", "text"]).out
    lines = text.splitlines()
    assert lines[0] == f"> {PROMPTS[0]}" and lines[1].startswith("[1] ") and lines[2].startswith("[2] ") and lines[4] == f"> {PROMPTS[1]}"
    plain = tmp_path / "p.txt"
    plain.write_text("\ufeff" + PROMPTS[1] + "\n")
    assert json.loads(_run(capsys, ["--policy", str(algo / "sft" / "ckpt"), "--prompts", str(plain)]).out)["prompt"] == PROMPTS[1]


def test_sample_bad_input(algo, tmp_path, capsys):
    ckpt = str(algo / "sft" / "ckpt")
    for flags, message in ((["--temperature", "0", "--n", "3"], "--temperature 0 is greedy: --n 3 would repeat one answer"),
                           (["--prompt", "x", "--prompts", "p.txt"], "give prompts with --prompt or with --prompts, not both"),
                           (["--format", "csv"], "--format must be one of: jsonl, text (got 'csv')"),
                           (["--top-p", "1.5"], "--top-p must be <= 1.0 (got 1.5)")):
        with pytest.raises(SystemExit) as e:
            sample.main(["--policy", ckpt, *flags])
        assert e.value.code == 2 and message in capsys.readouterr().err
    long = tmp_path / "long.txt"
    long.write_text(PROMPTS[0] + "\n" + "copy : " + "a b " * 200 + ".\n")
    assert _err(sample.main, ["--policy", ckpt, "--prompts", str(long), "--max-new-tokens", "16"]).startswith(
        f"{long}:2: the prompt is ")
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"ok\n\xff\xfe\n")
    assert _err(sample.main, ["--policy", ckpt, "--prompts", str(bad)]) == f"{bad}:2: bytes are not valid UTF-8 (at byte 1)"
    assert _err(sample.main, ["--policy", ckpt, "--prompt", "x", "--out", str(algo / "sft" / "ckpt" / "x.jsonl")]) == (
        f"{algo / 'sft' / 'ckpt' / 'x.jsonl'} would be written inside --policy {ckpt}, which this command reads; choose another --out")
