"""Generate from any policy checkpoint: prompts from the command line, a file or standard input.

Usage:
    python sample.py --policy runs/ppo/ckpt --prompt "write a happy story about mia and a red kite ."
    python sample.py --policy runs/ppo/ckpt --prompts data/story/prompts_eval.jsonl --n 4 --temperature 1.0 --out s.jsonl
    python sample.py --policy runs/sft/ckpt --temperature 0 --format text < my_prompts.txt     # greedy, one prompt a line
    python sample.py --policy runs/ppo/ckpt --prompts p.txt --n 8 --rm runs/rm/ckpt --top-p 0.9   # with RM scores

Prompts: --prompt TEXT (one or more), or --prompts FILE (a .jsonl prompts file, {"prompt": ...} a line, or plain
text, one prompt a line), or standard input (one prompt a line) when neither is given or --prompts is "-". The
template adds the separator after each prompt, as in training. Output, to --out or standard output: jsonl, one line
a prompt, {"prompt", "responses": [n texts]} plus "rewards" (the RM's score of each response's sampled ids) with
--rm, which is the samples format sample_baselines.py writes; or text, for reading.
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

from rlhf.config import DataArgs, DeviceArgs, answer_help, arg, parse_args


@dataclass
class Args(DataArgs, DeviceArgs):
    policy: str = arg("runs/ppo/ckpt", "policy checkpoint to sample from", reads=True)
    prompt: list[str] | None = arg(None, "prompt text(s) given on the command line")
    prompts: str | None = arg(None, "prompts file: .jsonl ({\"prompt\": ...} a line) or plain text (one prompt a line); "
                              "'-': standard input (also the default when no --prompt is given)", reads=True)
    n: int = arg(1, "samples per prompt", ge=1, le=4096)
    temperature: float = arg(0.7, "sampling temperature; 0: greedy (the most likely token at every step)", ge=0.0, le=100.0)
    top_k: int | None = arg(None, "sample among the k most likely tokens only", ge=1, le=2**20)
    top_p: float | None = arg(None, "nucleus sampling: among the most likely tokens holding this probability", gt=0.0, le=1.0)
    max_new_tokens: int | None = arg(None, "longest response (default: what the longest prompt leaves of the context, at most 96)",
                                     ge=1, le=65536)
    rm: str | None = arg(None, "reward model checkpoint: its score beside each sample", reads=True)
    format: str = arg("jsonl", "output: jsonl (one line a prompt) or text", choices=["jsonl", "text"])
    out: str | None = arg(None, "output file (default: standard output)")
    batch_size: int = arg(64, "sequences per generate call", ge=1, le=2**20)
    seed: int = arg(0, "sampling seed", ge=0, le=2**32 - 1)

    def __post_init__(self):  # flag relations, checked before any work (exit status 2)
        if self.temperature == 0 and self.n > 1:
            raise ValueError(f"--temperature 0 is greedy: --n {self.n} would repeat one answer; sample at a temperature above 0")
        if self.temperature == 0 and (self.top_k is not None or self.top_p is not None):
            raise ValueError("--top-k and --top-p shape sampling; --temperature 0 (greedy) does not sample")
        if self.prompt is not None and self.prompts is not None:
            raise ValueError("give prompts with --prompt or with --prompts, not both")

# `--help` answers here, from Args alone: the imports below load torch and take seconds
answer_help(__name__, Args, description=__doc__.split("\n")[0])

import torch

from rlhf.checkpoint import load_model
from rlhf.formats import data_format
from rlhf.data import DataError, atomic_write_bytes, read_jsonl, read_text_lines
from rlhf.evaluation import check_same_tokenizer
from rlhf.precision import autocast
from rlhf.reward import score_rollout
from rlhf.run import run_cli, start_script
from rlhf.sampling import sample
from rlhf.tokenizer import too_long


def read_prompts(args) -> list[tuple[str, str]]:
    """-> [(where, prompt)]: "--prompt 2", "file:line" or "<stdin>:line" for each prompt, in order."""
    if args.prompt is not None:
        rows = [(f"--prompt {i + 1}", p) for i, p in enumerate(args.prompt)]
    elif args.prompts not in (None, "-"):
        path = Path(args.prompts)
        if path.suffix == ".jsonl":
            rows = [(f"{path}: record {i + 1}", r["prompt"]) for i, r in enumerate(read_jsonl(path, "prompts", fmt=data_format(args)))]
        else:
            rows = read_text_lines(path)
    else:
        if sys.stdin.isatty():
            print("reading prompts from standard input, one a line; end with Ctrl-D", file=sys.stderr)
        rows = [(f"<stdin>:{i + 1}", line.rstrip("\r\n")) for i, line in enumerate(sys.stdin) if line.strip()]
    bad = next((w for w, p in rows if not p.strip()), None)
    if bad is not None:
        raise DataError(f"{bad}: the prompt is empty")
    if not rows:
        raise DataError(f"no prompts in {args.prompts or 'standard input'}")
    return rows


def main(argv=None):
    args = parse_args(Args, argv, description=__doc__.split("\n")[0])
    dev = start_script(args, writes=[args.out] if args.out else [], config_file=sys.stderr)  # stdout: the samples only
    rows = read_prompts(args)
    prompts = [p for _, p in rows]

    policy, tok, _ = load_model(args.policy, "policy")
    rm = None
    if args.rm:
        rm, rm_tok, _ = load_model(args.rm, "rm")
        check_same_tokenizer({"policy": tok, "rm": rm_tok})
        rm.to(dev).eval()
    policy.to(dev).eval()
    ids = tok.encode_prompts(prompts)
    block = policy.config.block_size
    max_new = args.max_new_tokens or max(1, min(96, block - max(len(q) for q in ids)))
    for i in too_long(ids, max_new, block)[:1]:  # every prompt checked before any sampling
        raise DataError(f"{rows[i][0]}: the prompt is {len(ids[i])} tokens (separator included), but the model's context of "
                        f"{block} tokens leaves {max(block - max_new, 0)} with --max-new-tokens {max_new}; shorten it "
                        "or lower --max-new-tokens")

    g = torch.Generator(dev).manual_seed(args.seed)
    rep = [p for p in prompts for _ in range(args.n)]  # prompt-major: prompt i's samples are rows i*n .. i*n+n-1
    with autocast(args.dtype, dev):
        roll = sample(policy, tok, rep, max_new, temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                      generator=g, batch_size=args.batch_size)
        scores = score_rollout(rm, tok, roll, batch_size=args.batch_size).tolist() if rm is not None else None

    lines = []
    for i, p in enumerate(prompts):
        texts = roll.texts[i * args.n:(i + 1) * args.n]
        rewards = scores[i * args.n:(i + 1) * args.n] if scores is not None else None
        if args.format == "jsonl":
            lines.append(json.dumps({"prompt": p, "responses": texts} | ({"rewards": rewards} if rewards else {}),
                                    ensure_ascii=False))
        else:
            lines += [f"> {p}"] + [f"[{j + 1}] {t}" + (f"   (RM {rewards[j]:.3f})" if rewards else "")
                                   for j, t in enumerate(texts)] + [""]
    text = "\n".join(lines) + "\n"
    if args.out:
        atomic_write_bytes(args.out, [text.encode("utf-8")])
        print(f"wrote {args.out}: {len(prompts)} prompts x {args.n} samples", file=sys.stderr)
    else:
        sys.stdout.write(text)


if __name__ == "__main__":
    run_cli(main)
