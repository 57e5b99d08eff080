"""k responses per prompt from a policy, scored once by a reward model, saved as JSONL (the samples format).

Usage:
    # contrastive rewards (Shen et al. 2024): offline baselines from SFT for every RL prompt
    python sample_baselines.py --policy runs/sft/ckpt --rm runs/rm/ckpt --prompts data/story/prompts_rl.jsonl --k 4 --out runs/baselines.jsonl
    # RLP (Lang et al. 2024): n = 10 samples per unlabelled prompt from the PPO policy at temperature 1.0
    python sample_baselines.py --policy runs/ppo/ckpt --rm runs/rm/ckpt --prompts data/story/prompts_unlabelled.jsonl --k 10 --out runs/policy_samples.jsonl

Writes --out, one line per distinct prompt: {"prompt", "responses": [k strings], "rewards": [k RM scores]},
and beside it <out>.meta.json with the settings. Resumable: rerunning with the same settings continues a
partial file (prompts already in it are skipped, never sampled twice); other settings are refused.
Prompts are processed in chunks of --batch-size, each appended in one write; each chunk's generator is
seeded by (seed, chunk), so a run interrupted between chunks resumes to the same file as an uninterrupted one.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from rlhf.checkpoint import load_model
from rlhf.config import DeviceArgs, arg, config_to_dict, parse_args
from rlhf.run import run_cli, start_script
from rlhf.data import append_jsonl, read_json, read_jsonl, write_json
from rlhf.evaluation import check_same_tokenizer
from rlhf.precision import autocast
from rlhf.reward import score_rollout
from rlhf.sampling import check_prompts_fit, sample


@dataclass
class Args(DeviceArgs):
    policy: str = arg("runs/sft/ckpt", "policy checkpoint to sample from")
    rm: str = arg("runs/rm/ckpt", "reward model checkpoint that scores the samples")
    prompts: str = arg("data/story/prompts_rl.jsonl", "prompts JSONL")
    out: str = arg("runs/baselines.jsonl", "output samples JSONL")
    k: int = arg(4, "responses per prompt", ge=1)
    temperature: float = arg(1.0, "sampling temperature", gt=0.0)
    max_new_tokens: int = arg(96, "longest response", ge=1)
    batch_size: int = arg(16, "prompts per chunk (k x that many sequences per generate call)", ge=1)
    seed: int = arg(0, "sampling seed")


# settings that must match for a partial output to be continued
_SAME = ("policy", "rm", "prompts", "k", "temperature", "max_new_tokens", "batch_size", "seed", "device", "dtype")


def main(argv=None):
    args = parse_args(Args, argv, description=__doc__.split("\n")[0])
    dev = start_script(args)
    out, meta_path = Path(args.out), Path(f"{args.out}.meta.json")

    # 1. models: the RM must read the policy's tokens
    policy, tok, _ = load_model(args.policy, "policy")
    rm, rm_tok, _ = load_model(args.rm, "rm")
    check_same_tokenizer({"policy": tok, "rm": rm_tok})
    policy.to(dev).eval()
    rm.to(dev).eval()

    # 2. prompts, and what a partial output already holds
    prompts = [r["prompt"] for r in read_jsonl(args.prompts, "prompts")]
    check_prompts_fit(tok, prompts, policy.config.block_size, args.max_new_tokens, args.prompts)
    prompts = list(dict.fromkeys(prompts))  # distinct, in order
    settings = {k: v for k, v in config_to_dict(args).items() if k in _SAME} | {"tokenizer": tok.fingerprint}
    done = set()
    if out.exists():
        old = read_json(meta_path) if meta_path.exists() else None
        if old != settings:
            diff = sorted(k for k in settings if old is None or old.get(k) != settings[k])
            raise ValueError(f"{out} already exists with other settings ({', '.join(diff) or 'no ' + meta_path.name}); "
                             "remove it or choose another --out")
        done = {r["prompt"] for r in read_jsonl(out, "samples", allow_partial_tail=True)}
        print(f"continuing {out}: {len(done)} of {len(prompts)} prompts already sampled")
    else:
        write_json(meta_path, settings)

    # 3. sample k per prompt, score once, append chunk by chunk
    n_chunks = math.ceil(len(prompts) / args.batch_size)
    for c in tqdm(range(n_chunks), desc="baselines"):
        chunk = [p for p in prompts[c * args.batch_size:(c + 1) * args.batch_size] if p not in done]
        if not chunk:
            continue
        g = torch.Generator(dev).manual_seed(args.seed * 1000003 + c)
        rep = [p for p in chunk for _ in range(args.k)]  # (len(chunk) * k,) prompt i's samples are rows i*k .. i*k+k-1
        with autocast(args.dtype, dev):
            roll = sample(policy, tok, rep, args.max_new_tokens, temperature=args.temperature, generator=g, batch_size=len(rep))
            rewards = score_rollout(rm, tok, roll).view(len(chunk), args.k)  # the sampled ids themselves
        append_jsonl(out, [{"prompt": p, "responses": roll.texts[i * args.k:(i + 1) * args.k], "rewards": rewards[i].tolist()}
                           for i, p in enumerate(chunk)])
    print(f"wrote {out}: {len(prompts)} prompts x {args.k} responses")


if __name__ == "__main__":
    run_cli(main)
