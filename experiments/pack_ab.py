"""--pack against padded rows on the story task's real lengths: an SFT step, an RM step and a PPO update, interleaved.

    python3 experiments/pack_ab.py --run runs/r22 --repeats 5 --threads 2

RUN is a reproduce.py output directory (its seed 0's data, SFT policy and RM). Each repeat times, one after the other
and with and without packing, on the same batches: an SFT forward + backward of --batch-size demonstrations (the
tiny preset's 64), an RM forward + backward of 32 pairs (64 rows), and one PPO update (train_ppo.py's tiny preset: 2
epochs of 2 minibatches, policy and value model) of 64 rollouts sampled from the SFT policy at temperature 1. Prints
the medians [min - max], the ratio padded / packed, the share of real tokens in the padded rows, and the largest
difference in the loss (SFT, RM) or the update's statistics (PPO) between the two layouts.
"""
from __future__ import annotations

import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rlhf.config import answer_help, arg, parse_args  # noqa: E402


@dataclass
class Args:
    run: str = arg("runs/r22", "a reproduce.py output directory (seed 0's data, sft and rm)")
    repeats: int = arg(5, "interleaved repeats (medians reported)", ge=1, le=1000)
    batch_size: int = arg(64, "SFT rows; RM rows (2 per pair); PPO rollouts", ge=2, le=4096)
    threads: int = arg(0, "torch CPU threads (0: the CPUs this process may use)", ge=0, le=4096)


answer_help(__name__, Args, description=__doc__.split("\n")[0])

import copy  # noqa: E402

import torch  # noqa: E402

from rlhf.checkpoint import load_model  # noqa: E402
from rlhf.data import read_jsonl  # noqa: E402
from rlhf.device import cpu_threads, keep_freed_memory  # noqa: E402
from rlhf.padding import pack_like, pack_rows  # noqa: E402
from rlhf.ppo_update import Batch, PPOHParams, ppo_update  # noqa: E402
from rlhf.reward import bradley_terry_loss, pair_batch  # noqa: E402
from rlhf.sampling import response_logprobs, response_values, sample  # noqa: E402
from rlhf.sft import join_prompt_response, sft_loss  # noqa: E402


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def main(argv=None):
    a = parse_args(Args, argv, description=__doc__.split("\n")[0])
    torch.set_num_threads(a.threads or cpu_threads())
    keep_freed_memory()
    s0 = Path(a.run) / "s0"
    policy, tok, _ = load_model(s0 / "sft" / "ckpt", "policy")
    rm, _, _ = load_model(s0 / "rm" / "ckpt", "rm")
    demos = read_jsonl(s0 / "data" / "sft.jsonl", "sft")[:a.batch_size]
    pairs = read_jsonl(s0 / "data" / "preferences.jsonl", "preferences")[:a.batch_size // 2]
    prompts = [r["prompt"] for r in read_jsonl(s0 / "data" / "prompts_rl.jsonl", "prompts")[:a.batch_size]]

    ids, mask, rmask = join_prompt_response(tok.encode_prompts([r["prompt"] for r in demos]),
                                            tok.encode_responses([r["response"] for r in demos]), tok.pad_id)
    rm_ids, rm_mask = pair_batch(tok, [r["prompt"] for r in pairs], [r["chosen"] for r in pairs], [r["rejected"] for r in pairs])
    roll = sample(policy, tok, prompts, 96, temperature=1.0, generator=torch.Generator().manual_seed(0))
    q, qm, r, rmk = roll.query_ids, roll.query_mask, roll.response_ids, roll.response_mask
    with torch.no_grad():
        old_lp, old_v = response_logprobs(policy, q, qm, r, rmk), response_values(rm, q, qm, r, rmk)
    adv = torch.randn(r.shape, generator=torch.Generator().manual_seed(1)) * rmk
    batch = Batch(q, qm, r, rmk, old_lp, old_v, adv, old_v + adv)

    def sft_step(pack):
        policy.zero_grad(set_to_none=True)
        if pack:
            p, seg, index = pack_rows(ids, mask, capacity=policy.config.block_size)
            loss = sft_loss(policy(p, segments=seg), p, pack_like(rmask, mask, index, p.shape))
        else:
            loss = sft_loss(policy(ids, mask), ids, rmask)
        loss.backward()
        return loss.item()

    def rm_step(pack):
        rm.zero_grad(set_to_none=True)
        s = rm.score(rm_ids, rm_mask, pack=pack)
        n = len(pairs)
        loss = bradley_terry_loss(s[:n], s[n:])
        loss.backward()
        return loss.item()

    def ppo_step(pack):
        pol, val = copy.deepcopy(policy), copy.deepcopy(rm)
        opts = [torch.optim.AdamW(m.parameters(), lr=1e-5) for m in (pol, val)]
        return ppo_update(pol, val, opts, batch, PPOHParams(pack=pack), torch.Generator().manual_seed(2))

    real = {"sft": mask.mean().item(), "rm": rm_mask.mean().item(),
            "ppo": torch.cat([qm, rmk], 1).mean().item()}
    cap = policy.config.block_size  # as the trainers pack
    slots = {"sft": pack_rows(ids, mask, capacity=cap)[0].numel() / ids.numel(),
             "rm": pack_rows(rm_ids, rm_mask, capacity=cap)[0].numel() / rm_ids.numel(),
             "ppo": pack_rows(torch.cat([q, r], 1), torch.cat([qm, rmk], 1), capacity=cap)[0].numel() / (q.numel() + r.numel())}
    times = {(s, p): [] for s in ("sft", "rm", "ppo") for p in (False, True)}
    outs = {}
    for rep in range(a.repeats + 1):  # the first round warms up and is not counted
        for stage, fn in (("sft", sft_step), ("rm", rm_step), ("ppo", ppo_step)):
            for pack in (False, True):
                t, out = timed(lambda: fn(pack))
                outs[(stage, pack)] = out
                if rep:
                    times[(stage, pack)].append(t)
    print(f"{torch.get_num_threads()} threads, {a.repeats} interleaved repeats; medians [min - max]")
    print("| step | padded, s | packed, s | padded / packed | real tokens in the padded rows | packed slots / padded slots "
          "| largest difference, packed - padded |")
    print("|---|---|---|---|---|---|---|")
    for stage in ("sft", "rm", "ppo"):
        pad, pk = times[(stage, False)], times[(stage, True)]
        o0, o1 = outs[(stage, False)], outs[(stage, True)]
        diff = max(abs(o1[k] - o0[k]) for k in o0) if isinstance(o0, dict) else abs(o1 - o0)
        print(f"| {stage} | {statistics.median(pad):.3f} [{min(pad):.3f} - {max(pad):.3f}] | {statistics.median(pk):.3f} "
              f"[{min(pk):.3f} - {max(pk):.3f}] | {statistics.median(pad) / statistics.median(pk):.2f}x | {real[stage]:.0%} "
              f"| {slots[stage]:.0%} | {diff:.1e} |")


if __name__ == "__main__":
    main()
