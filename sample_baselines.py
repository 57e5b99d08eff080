"""k responses per prompt from a policy, scored once by a reward model, saved as JSONL (the samples format).

Usage:
    # contrastive rewards (Shen et al. 2024): offline baselines from SFT for every RL prompt
    python sample_baselines.py --policy runs/sft/ckpt --rm runs/rm/ckpt --prompts data/story/prompts_rl.jsonl --k 4 --out runs/baselines.jsonl
    # RLP (Lang et al. 2024): n = 10 samples per unlabelled prompt from the PPO policy at temperature 1.0
    python sample_baselines.py --policy runs/ppo/ckpt --rm runs/rm/ckpt --prompts data/story/prompts_unlabelled.jsonl --k 10 --out runs/policy_samples.jsonl

Writes --out, one line per distinct prompt: {"prompt", "responses": [k strings], "rewards": [k RM scores]},
and beside it <out>.meta.json with the settings and the digests of the policy's and the RM's weights.
Prompts are processed in chunks of --batch-size, each appended in one write; each chunk's generator is
seeded by (seed, chunk). Resumable: rerunning with the same settings continues a partial file from its last
whole chunk (an unfinished chunk or line is cut off and sampled again), so on one device the continued file
equals an uninterrupted one byte for byte. Other settings, other weights at the same checkpoint paths, or a
file written from other prompts are refused.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from rlhf.config import DataArgs, DeviceArgs, answer_help, arg, config_to_dict, parse_args


@dataclass
class Args(DataArgs, DeviceArgs):
    policy: str = arg("runs/sft/ckpt", "policy checkpoint to sample from", reads=True)
    rm: str = arg("runs/rm/ckpt", "reward model checkpoint that scores the samples", reads=True)
    prompts: str = arg("data/story/prompts_rl.jsonl", "prompts JSONL", reads=True)
    out: str = arg("runs/baselines.jsonl", "output samples JSONL")
    k: int = arg(4, "responses per prompt", ge=1, le=4096)
    temperature: float = arg(1.0, "sampling temperature", gt=0.0)
    max_new_tokens: int = arg(96, "longest response", ge=1, le=65536)
    batch_size: int = arg(16, "prompts per chunk (k x that many sequences per generate call)", ge=1, le=2**20)
    seed: int = arg(0, "sampling seed", ge=0, le=2**32 - 1)


# settings that must match for a partial output to be continued
_SAME = ("policy", "rm", "prompts", "k", "temperature", "max_new_tokens", "batch_size", "seed", "device", "dtype")

# `--help` answers here, from Args alone: the imports below load torch and take seconds
answer_help(__name__, Args, description=__doc__.split("\n")[0])

import torch
from tqdm import tqdm

from rlhf.checkpoint import load_model, weights_digest
from rlhf.run import run_cli, start_script
from rlhf.formats import data_format
from rlhf.data import DataError, append_jsonl, atomic_write_bytes, read_json, read_jsonl, validate_record, write_json
from rlhf.evaluation import check_same_tokenizer
from rlhf.precision import autocast
from rlhf.reward import score_rollout
from rlhf.sampling import check_prompts_fit, sample


def main(argv=None):
    args = parse_args(Args, argv, description=__doc__.split("\n")[0])
    out, meta_path = Path(args.out), Path(f"{args.out}.meta.json")
    dev = start_script(args, writes=[out, meta_path])

    # 1. models: the RM must read the policy's tokens
    policy, tok, _ = load_model(args.policy, "policy")
    rm, rm_tok, _ = load_model(args.rm, "rm")
    check_same_tokenizer({"policy": tok, "rm": rm_tok})
    policy.to(dev).eval()
    rm.to(dev).eval()

    # 2. prompts, and what a partial output already holds
    prompts = [r["prompt"] for r in read_jsonl(args.prompts, "prompts", fmt=data_format(args))]
    check_prompts_fit(tok, prompts, policy.config.block_size, args.max_new_tokens, args.prompts)
    prompts = list(dict.fromkeys(prompts))  # distinct, in order
    settings = {k: v for k, v in config_to_dict(args).items() if k in _SAME} | {
        "tokenizer": tok.fingerprint, "policy_weights": weights_digest(args.policy), "rm_weights": weights_digest(args.rm)}
    first = 0  # the first chunk to sample
    if out.exists():
        old = read_json(meta_path) if meta_path.exists() else None
        if old != settings:
            diff = sorted(k for k in settings if old is None or old.get(k) != settings[k])
            raise ValueError(f"{out} already exists with other settings ({', '.join(diff) or 'no ' + meta_path.name}); "
                             "remove it or choose another --out")
        first = keep_whole_chunks(out, prompts, args.batch_size)
        print(f"continuing {out}: {min(first * args.batch_size, len(prompts))} of {len(prompts)} prompts already sampled")
    else:
        write_json(meta_path, settings)

    # 3. sample k per prompt, score once, append chunk by chunk (each chunk's generator seeded by its index)
    n_chunks = math.ceil(len(prompts) / args.batch_size)
    for c in tqdm(range(first, n_chunks), desc="baselines", initial=first, total=n_chunks):
        chunk = prompts[c * args.batch_size:(c + 1) * args.batch_size]
        g = torch.Generator(dev).manual_seed(args.seed * 1000003 + c)
        rep = [p for p in chunk for _ in range(args.k)]  # (len(chunk) * k,) prompt i's samples are rows i*k .. i*k+k-1
        with autocast(args.dtype, dev):
            roll = sample(policy, tok, rep, args.max_new_tokens, temperature=args.temperature, generator=g, batch_size=len(rep))
            rewards = score_rollout(rm, tok, roll).view(len(chunk), args.k)  # the sampled ids themselves
        append_jsonl(out, [{"prompt": p, "responses": roll.texts[i * args.k:(i + 1) * args.k], "rewards": rewards[i].tolist()}
                           for i, p in enumerate(chunk)])
    print(f"wrote {out}: {len(prompts)} prompts x {args.k} responses")


def keep_whole_chunks(out: Path, prompts: list[str], chunk: int) -> int:
    """Cut a partial output back to its last whole chunk, so that the continued file equals an uninterrupted one
    byte for byte; -> the number of whole chunks kept. A chunk is whole when all its lines are there, each ending
    with its newline (a last line without one is dropped, even when it parses: the write it came from did not
    finish). Line i must hold prompts[i]: a file written from other prompts is refused."""
    data = out.read_bytes() if out.is_file() else b""
    ends, i = [], data.find(b"\n")  # the byte offset after each complete line
    while i != -1:
        ends.append(i + 1)
        i = data.find(b"\n", i + 1)
    if len(ends) > len(prompts):
        raise ValueError(f"{out} has {len(ends)} lines, more than the {len(prompts)} distinct prompts; it was written from "
                         "other prompts: remove it or choose another --out")
    for i, (a, b) in enumerate(zip([0] + ends, ends)):
        where = f"{out}:{i + 1}"
        try:
            row = validate_record(json.loads(data[a:b].decode("utf-8")), "samples", where)
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise DataError(f"{where}: not a samples record ({e}); remove the file or choose another --out") from None
        if row["prompt"] != prompts[i]:
            raise DataError(f"{where}: holds prompt {row['prompt'][:50]!r} where the prompts file's prompt {i + 1} is "
                            f"{prompts[i][:50]!r}; it was written from other prompts: remove it or choose another --out")
    whole = len(prompts) if len(ends) == len(prompts) else len(ends) // chunk * chunk
    keep = ends[whole - 1] if whole else 0
    if keep < len(data):
        print(f"{out}: cut back to its last whole chunk ({whole} prompts, {len(data) - keep} bytes dropped); "
              "the unfinished chunk is sampled again")
        atomic_write_bytes(out, [data[:keep]])
    return math.ceil(whole / chunk)


if __name__ == "__main__":
    run_cli(main)
