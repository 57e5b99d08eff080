"""DPO: the SFT policy trained directly on preference pairs, against itself frozen as the reference.

Usage:
    python train_dpo.py --preset tiny --data data/story --sft runs/sft/ckpt --out runs/dpo
    python train_dpo.py ... --resume                        # continue after a crash
    torchrun --nproc_per_node 2 train_dpo.py ...            # data-parallel; --batch-size is per rank

The loss is rlhf.dpo.dpo_loss (Rafailov et al. 2023 eq. 7) on the summed response log-probabilities of the policy
and of the frozen SFT reference, chosen and rejected of a batch in one forward each. It reads the same pairs as
train_rm.py (DATA/preferences.jsonl or --pairs) with the same seeded held-out split, so the RM and DPO are judged on
the same held-out pairs: DPO's implicit reward beta * log(pi / pi_ref) (eq. 5) takes the RM's place in
rlhf.reward.rm_diagnostics (accuracy against the labels, against gold, beside the "longer wins" rule). Writes
config.json, metrics.jsonl (dpo/*, val/*), ckpt/ (a policy checkpoint that evaluate.py, sample_baselines.py and
train_ppo.py read) and diagnostics.json into --out.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

from rlhf.config import DataArgs, TrainArgs, answer_help, arg, config_to_dict, parse_args


@dataclass
class Args(DataArgs, TrainArgs):
    data: str = arg("data/story", "directory from prepare_data.py (preferences.jsonl, meta.json)", reads=True)
    pairs: str | None = arg(None, "a preferences JSONL to use instead of DATA/preferences.jsonl", reads=True)
    sft: str = arg("runs/sft/ckpt", "SFT policy checkpoint: the policy to start from and the frozen reference", reads=True)
    out: str = arg("runs/dpo", "run directory")
    preset: str = arg("tiny", "size preset; explicit flags override it")
    seed: int = arg(0, "fixes the held-out split (the same as train_rm.py's for the same seed) and the data order", ge=0, le=2**32 - 1)
    beta: float = arg(0.1, "DPO's beta: the strength of the implicit KL constraint to the reference (paper 0.1 to 0.5)", gt=0.0, le=100.0)
    epochs: float = arg(1.0, "passes over the training pairs", gt=0.0, le=1e6)
    batch_size: int = arg(32, "pairs per forward (2x sequences; per rank under torchrun); a step sees grad_accum of them", ge=1, le=2**20)
    grad_accum: int = arg(1, "gradient accumulation: forwards per optimiser step", ge=1, le=65536)
    lr: float = arg(1e-5, "peak learning rate", gt=0.0)
    lr_schedule: str = arg("cosine", "decay after warm-up", choices=["constant", "linear", "cosine"])
    warmup_steps: int = arg(20, "linear warm-up steps", ge=0, le=10**9)
    weight_decay: float = arg(0.0, "AdamW weight decay on matrices", ge=0.0)
    grad_clip: float = arg(1.0, "clip the global gradient norm (0: off)", ge=0.0)
    val_fraction: float = arg(0.1, "share of pairs held out for diagnostics", gt=0.0, le=0.9)
    eval_every: int = arg(100, "held-out diagnostics every N steps", ge=1)
    max_val_pairs: int = arg(1000, "cap on held-out pairs scored at each evaluation", ge=1, le=10**8)
    ckpt_every: int = arg(200, "save a resumable checkpoint every N steps", ge=1)
    resume: bool = arg(False, "continue the run in --out from its checkpoint")
    overwrite: bool = arg(False, "replace a run already in --out")


PRESETS = {"smoke": dict(batch_size=16, lr=1e-4, warmup_steps=5, eval_every=50, ckpt_every=50, max_val_pairs=200),
           # the story task's 4-layer policy: 9,000 pairs once at batch 32 (281 steps), lr 1e-5, beta 0.1
           "tiny": dict(),
           # one GPU, the small policy (unmeasured): batch 64, half the tiny learning rate
           "small": dict(batch_size=64, lr=5e-6, eval_every=50, ckpt_every=100),
           # a GPT-2-format policy: Rafailov et al. 2023 §6 and Appendix B (beta 0.1, lr 1e-6, batch 64, 150 warm-up steps)
           "gpt2": dict(batch_size=32, grad_accum=2, lr=1e-6, warmup_steps=150, eval_every=100, ckpt_every=200)}

# `--help` answers here, from Args alone: the imports below load torch and take seconds
answer_help(__name__, Args, presets=PRESETS, description=__doc__.split("\n")[0])

import torch
from tqdm import tqdm

from rlhf import distributed
from rlhf.checkpoint import last_good, load_model
from rlhf.formats import data_format
from rlhf.data import write_json
from rlhf.device import check_memory, oom_guard, peak_memory
from rlhf.dpo import dpo_loss, implicit_reward, sequence_logps
from rlhf.evaluation import format_diagnostics
from rlhf.optim import lr_factor, make_optimizer, set_lr
from rlhf.precision import autocast, maybe_compile
from rlhf.resume import resume, save_step
from rlhf.reward import longest_pair, pairs_fitting, read_preference_split, rm_diagnostics
from rlhf.run import MetricsWriter, run_cli, run_finished, start_run


def main(argv=None):
    # 1. arguments, run directory, seeding
    args = parse_args(Args, argv, presets=PRESETS, description=__doc__.split("\n")[0])
    out, resuming, dev = start_run(args)
    ckpt = out / "ckpt"

    # 2. data: the pairs and train_rm.py's held-out split
    data = Path(args.data)
    pairs_path = Path(args.pairs) if args.pairs else data / "preferences.jsonl"
    task, train, val = read_preference_split(pairs_path, data, args.seed, args.val_fraction, args.max_val_pairs,
                                              data_format(args))

    # 3. models: the policy from SFT (or its checkpoint when resuming), the frozen reference
    policy, tok, sft_cfg = load_model(args.sft, "policy")
    ref, _, _ = load_model(args.sft, "policy")
    ref.eval().requires_grad_(False)
    train, val = (pairs_fitting(tok, rs, policy.config.block_size, pairs_path) for rs in (train, val))
    N = len(train)
    steps = max(1, math.ceil(args.epochs * N / (args.batch_size * args.grad_accum * distributed.world_size())))
    if resuming and run_finished(out, ckpt, steps, "diagnostics.json", more_steps=False):
        return
    print(f"{N} training pairs, {len(val)} held out, {steps} steps, beta {args.beta}")
    check_memory(policy.config.training_bytes(2 * args.batch_size, longest_pair(tok, train)), dev, "--batch-size")
    policy.to(dev), ref.to(dev)
    policy.grad_checkpoint = args.grad_checkpoint
    maybe_compile(policy, args.compile)
    opt = make_optimizer(policy.named_parameters(), args.lr, args.weight_decay)
    start = resume(ckpt, {"policy": policy}, {"policy": opt})["step"] if resuming else 0
    if resuming:
        print(f"resumed from {ckpt} at step {start}")
    distributed.broadcast_params(policy)
    ckpt_config = {"model": policy.config.to_dict(), "args": config_to_dict(args), "tokenizer": tok.fingerprint,
                   "task": sft_cfg.get("task"), "stage": "dpo"}

    def save(step: int):
        if distributed.is_main():
            save_step(ckpt, step, {"policy": policy}, {"policy": opt}, ckpt_config, tok.to_json())

    def logps(model, rows: list[dict]) -> tuple[torch.Tensor, torch.Tensor]:
        """Summed log-probs of chosen and rejected, as one forward of 2B rows -> ((B,), (B,))."""
        p = [r["prompt"] for r in rows]
        with autocast(args.dtype, dev):
            lp = sequence_logps(model, tok, p + p, [r["chosen"] for r in rows] + [r["rejected"] for r in rows], dev)
        return lp[:len(rows)], lp[len(rows):]

    @torch.no_grad()
    def evaluate() -> dict:
        """rm_diagnostics with DPO's implicit reward on the held-out pairs, plus the held-out DPO loss."""
        policy.eval()
        chunks = [val[i:i + 64] for i in range(0, len(val), 64)]
        pc, pr, rc, rr = (torch.cat(x) for x in zip(*[(*logps(policy, c), *logps(ref, c)) for c in chunks]))
        policy.train()
        rw_c, rw_r = implicit_reward(pc, rc, args.beta), implicit_reward(pr, rr, args.beta)
        d = rm_diagnostics([r["prompt"] for r in val], [r["chosen"] for r in val], [r["rejected"] for r in val],
                           rw_c.cpu(), rw_r.cpu(), task)
        return {"loss": dpo_loss(pc, pr, rc, rr, args.beta).item(), "margin": (rw_c - rw_r).mean().item(),
                **{k[3:]: v for k, v in d.items()}}

    # 4. training loop: per micro-batch one forward of 2B sequences through the policy, one through the reference
    metrics = MetricsWriter(out / "metrics.jsonl", resume_step=start if resuming else None,
                            tensorboard=out / "tensorboard" if args.tensorboard else None)
    policy.train()
    t0 = time.time()
    pbar = tqdm(range(start, steps), desc="dpo", initial=start, total=steps, disable=not distributed.is_main())
    for step in pbar:
        batch = [train[i] for i in distributed.step_indices(N, args.seed, step, args.batch_size * args.grad_accum)]
        set_lr(opt, lr_factor(step, steps, args.warmup_steps, args.lr_schedule))
        opt.zero_grad(set_to_none=True)
        loss, margins = 0.0, []
        with oom_guard(f"DPO step {step + 1}", f"--batch-size {args.batch_size} (raise --grad-accum to keep the step's batch)", ckpt):
            for j in range(0, len(batch), args.batch_size):  # grad_accum micro-batches of B pairs
                mb = batch[j:j + args.batch_size]
                with torch.no_grad():
                    rc, rr = logps(ref, mb)
                pc, pr = logps(policy, mb)
                loss_mb = dpo_loss(pc, pr, rc, rr, args.beta) * (len(mb) / len(batch))
                loss_mb.backward()
                loss = loss + loss_mb.detach()
                margins.append((implicit_reward(pc, rc, args.beta) - implicit_reward(pr, rr, args.beta)).detach())
        loss_all = distributed.all_reduce_mean(loss)
        if not torch.isfinite(loss_all):  # before the optimiser step: the weights never see it
            raise SystemExit(f"error: DPO loss is {loss_all.item()} at step {step + 1}; {last_good(ckpt)}")
        distributed.all_reduce_grads(list(policy.parameters()))
        torch.nn.utils.clip_grad_norm_(policy.parameters(), args.grad_clip if args.grad_clip > 0 else float("inf"))
        opt.step()
        margin = torch.cat(margins)
        log = {"dpo/loss": loss.item(), "dpo/margin": margin.mean().item(), "dpo/accuracy": (margin > 0).float().mean().item(),
               "dpo/lr": opt.param_groups[0]["lr"],
               "dpo/pairs_per_s": (step + 1 - start) * len(batch) * distributed.world_size() / max(time.time() - t0, 1e-9)}
        log = distributed.all_reduce_mean_dict(log)
        if (step + 1) % args.eval_every == 0 and step + 1 < steps and distributed.is_main():
            log.update({f"val/{k}": v for k, v in evaluate().items()})
            tqdm.write(f"step {step + 1:5d} | loss {loss_all.item():.4f} | val acc {log['val/accuracy']:.3f}"
                       + (f" | val gold acc {log['val/gold_accuracy']:.3f}" if "val/gold_accuracy" in log else ""))
        metrics.log(step + 1, log)
        pbar.set_postfix(loss=f"{loss_all.item():.3f}", margin=f"{log['dpo/margin']:.2f}")
        if (step + 1) % args.ckpt_every == 0:
            save(step + 1)
    train_time = time.time() - t0
    save(steps)  # the trained policy is safe before the diagnostics run
    if not distributed.is_main():
        return

    # 5. held-out diagnostics of the implicit reward, the final report
    held = evaluate()
    diag = {f"dpo/{k}": v for k, v in held.items()}  # diagnostics.json: as train_rm.py's rm/*, with the implicit reward
    diag.update({"dpo/train_seconds": train_time, "dpo/steps": steps, "dpo/train_pairs": N, **peak_memory(dev)})
    metrics.log(steps, {f"val/{k}": v for k, v in held.items()} | {k: v for k, v in diag.items() if k[4:] not in held})
    metrics.close()
    write_json(out / "diagnostics.json", diag)
    print(f"held-out pairs: DPO loss {diag['dpo/loss']:.4f}, implicit reward margin {diag['dpo/margin']:.3f}")
    print(format_diagnostics({f"rm/{k[4:]}": v for k, v in diag.items()}).replace("RM ", "DPO "))


if __name__ == "__main__":
    run_cli(main)
