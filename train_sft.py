"""Supervised fine-tuning of the policy from scratch: tokenizer + GPT on sft.jsonl, loss on response tokens.

Usage:
    python prepare_data.py --task story --out data/story
    python train_sft.py --preset tiny --data data/story --out runs/sft      # a few minutes on 2 CPU cores
    python train_sft.py --preset tiny --data data/story --out runs/sft --resume   # continue after a crash
    python train_sft.py --init-from models/gpt2 --block-size 256 --data my_data --out runs/sft   # a GPT-2-format model from disk
    torchrun --nproc_per_node 2 train_sft.py ...   # data-parallel; --batch-size is per rank (rlhf/distributed.py)

Writes into --out: config.json, metrics.jsonl (sft/*, gold/*), ckpt/ (model.safetensors, config.json,
tokenizer.json, optimizer.safetensors, state.json), eval.json and samples.jsonl (eval prompts sampled
at temperature 0.7 with their gold scores when the task has a gold judge).
"""
from __future__ import annotations

import functools
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from rlhf import distributed, tasks
from rlhf.checkpoint import check_state_dict, last_good, load_checkpoint, load_tokenizer, load_train_state, rng_state, save_checkpoint, set_rng_state
from rlhf.config import MetricsWriter, config_to_dict, parse_args, run_cli, start_run
from rlhf.data import read_json, read_jsonl, write_json, write_jsonl
from rlhf.gpt2 import load_gpt2
from rlhf.model import GPT, GPTConfig
from rlhf.optim import lr_factor, make_optimizer, set_lr
from rlhf.precision import autocast, maybe_compile
from rlhf.sampling import sample
from rlhf.sft import join_prompt_response, sft_loss
from rlhf.tokenizer import Tokenizer


@dataclass
class Args:
    data: str = field(default="data/story", metadata={"help": "directory from prepare_data.py (sft.jsonl, prompts_eval.jsonl, meta.json)"})
    out: str = field(default="runs/sft", metadata={"help": "run directory"})
    preset: str = field(default="tiny", metadata={"help": "size preset; explicit flags override it"})
    seed: int = field(default=0, metadata={"help": "fixes initialisation, data order, dropout and sampling"})
    init_from: str | None = field(default=None, metadata={"help": "start from a GPT-2-format model: a directory with model.safetensors and tokenizer.json (rlhf/gpt2.py); its sizes and tokenizer replace --vocab-size, --n-layer, --n-head, --n-embd"})
    vocab_size: int = field(default=1024, metadata={"help": "BPE vocabulary size (specials and 256 bytes included)", "min": 260})
    n_layer: int = field(default=4, metadata={"help": "transformer blocks", "min": 1})
    n_head: int = field(default=4, metadata={"help": "attention heads", "min": 1})
    n_embd: int = field(default=256, metadata={"help": "model width", "min": 1})
    block_size: int = field(default=128, metadata={"help": "context length (prompt + response tokens)", "min": 8})
    dropout: float = field(default=0.0, metadata={"help": "dropout probability", "min": 0.0, "max": 0.99})
    steps: int = field(default=340, metadata={"help": "optimiser steps", "min": 1})
    batch_size: int = field(default=64, metadata={"help": "sequences per step (per rank under torchrun)", "min": 1})
    lr: float = field(default=1e-3, metadata={"help": "peak learning rate", "min": 0.0, "min_exclusive": True})
    lr_schedule: str = field(default="cosine", metadata={"help": "decay after warm-up", "choices": ["constant", "linear", "cosine"]})
    warmup_steps: int = field(default=20, metadata={"help": "linear warm-up steps", "min": 0})
    weight_decay: float = field(default=0.1, metadata={"help": "AdamW weight decay on matrices", "min": 0.0})
    grad_clip: float = field(default=1.0, metadata={"help": "clip the global gradient norm (0: off)", "min": 0.0})
    ckpt_every: int = field(default=100, metadata={"help": "save a resumable checkpoint every N steps", "min": 1})
    log_every: int = field(default=10, metadata={"help": "print a status line every N steps", "min": 1})
    n_eval: int = field(default=200, metadata={"help": "eval prompts sampled at the end (0: skip)", "min": 0})
    max_new_tokens: int = field(default=96, metadata={"help": "longest sampled response", "min": 1})
    temperature: float = field(default=0.7, metadata={"help": "sampling temperature for the final evaluation", "min": 0.0})
    threads: int = field(default=0, metadata={"help": "torch CPU threads (0: torch's default)", "min": 0})
    dtype: str = field(default="fp32", metadata={"help": "forward passes in fp32, or under bf16 autocast (losses stay fp32)", "choices": ["fp32", "bf16"]})
    compile: bool = field(default=False, metadata={"help": "torch.compile the transformer blocks (slow first steps; see README performance)"})
    resume: bool = field(default=False, metadata={"help": "continue the run in --out from its checkpoint"})
    overwrite: bool = field(default=False, metadata={"help": "replace a run already in --out"})


PRESETS = {
    "smoke": dict(vocab_size=512, n_layer=2, n_head=2, n_embd=64, steps=300, batch_size=32, lr=3e-3,
                  warmup_steps=10, ckpt_every=100, log_every=50, n_eval=32, max_new_tokens=64),
    "tiny": dict(),  # the dataclass defaults: 4 layers, 256 wide, ~340 steps of 64 sequences
}


def main(argv=None):
    # 1. arguments, run directory, seeding
    args = parse_args(Args, argv, presets=PRESETS, description=__doc__.split("\n")[0])
    out, resuming = start_run(args)
    ckpt = out / "ckpt"

    # 2. data and tokenizer (trained on the demonstrations; a resumed run reuses the saved one)
    data = Path(args.data)
    rows = read_jsonl(data / "sft.jsonl", "sft")
    meta = read_json(data / "meta.json") if (data / "meta.json").exists() else None
    task = tasks.task_from_meta(meta)
    pretrained = None
    if args.init_from:  # also when resuming: it gives the model's shape (its weights are then replaced)
        pretrained, tok = load_gpt2(args.init_from, block_size=args.block_size, dropout=args.dropout)
    if resuming:
        tok = load_tokenizer(ckpt)
    elif pretrained is None:  # trained on rank 0 and sent to the others, so every rank has the very same one
        tok = None
        if distributed.is_main():
            tok = Tokenizer.train((t for r in rows for t in (r["prompt"], r["response"])), vocab_size=args.vocab_size)
        if distributed.world_size() > 1:
            tok = Tokenizer.from_json(distributed.broadcast_str(tok.to_json() if tok else None))
    prompt_ids = tok.encode_prompts([r["prompt"] for r in rows])
    response_ids = tok.encode_responses([r["response"] for r in rows])
    keep = [i for i in range(len(rows)) if len(prompt_ids[i]) + len(response_ids[i]) <= args.block_size]
    if len(keep) < len(rows):
        print(f"warning: skipped {len(rows) - len(keep)} of {len(rows)} demonstrations longer than block_size {args.block_size}")
    if not keep:
        raise SystemExit(f"error: every demonstration in {data / 'sft.jsonl'} is longer than --block-size {args.block_size}")
    prompt_ids = [prompt_ids[i] for i in keep]
    response_ids = [response_ids[i] for i in keep]
    N = len(keep)

    @functools.lru_cache(maxsize=2)
    def epoch_order(epoch: int) -> list[int]:
        return torch.randperm(N, generator=torch.Generator().manual_seed(args.seed * 1000003 + epoch)).tolist()

    def batch_indices(step: int) -> list[int]:
        """Deterministic in (seed, step), so a resumed run sees the same batches: epoch e is a
        permutation seeded by (seed, e), read in order."""
        return [epoch_order(pos // N)[pos % N] for pos in distributed.batch_positions(step, args.batch_size)]

    # 3. model and optimiser
    if pretrained is not None:
        model, mcfg = pretrained, pretrained.config
    else:
        mcfg = GPTConfig(vocab_size=tok.vocab_size, block_size=args.block_size, n_layer=args.n_layer,
                         n_head=args.n_head, n_embd=args.n_embd, dropout=args.dropout)
        model = GPT(mcfg)
    print(f"model: {model.num_params() / 1e6:.2f}M parameters, {N} demonstrations, vocab {tok.vocab_size}")
    opt = make_optimizer(model.named_parameters(), args.lr, args.weight_decay)
    maybe_compile(model, args.compile)  # --compile: its blocks, in place
    start = 0
    if resuming:
        state, _ = load_checkpoint(ckpt, expected_kind="policy")
        check_state_dict(state, model, ckpt)  # resumed with other sizes: a CheckpointError, not torch's traceback
        model.load_state_dict(state)
        train_state = load_train_state(ckpt, opt)
        set_rng_state(train_state["rng"])
        start = train_state["step"]
        print(f"resumed from {ckpt} at step {start}")
    distributed.broadcast_params(model)  # every rank starts from rank 0's weights, as DDP does
    ckpt_config = {"model": mcfg.to_dict(), "args": config_to_dict(args), "tokenizer": tok.fingerprint,
                   "task": meta and {"name": meta["task"], "seed": meta["seed"]}, "stage": "sft"}

    def save(step: int):
        if distributed.is_main():
            save_checkpoint(ckpt, model.state_dict(), ckpt_config, kind="policy", tokenizer_json=tok.to_json(),
                            optimizer=opt, train_state={"step": step, "rng": rng_state()})

    # 4. training loop
    metrics = MetricsWriter(out / "metrics.jsonl", resume_step=start if resuming else None)
    model.train()
    t0, tokens = time.time(), 0
    pbar = tqdm(range(start, args.steps), desc="sft", initial=start, total=args.steps, disable=not distributed.is_main())
    for step in pbar:
        idx = batch_indices(step)
        ids, mask, rmask = join_prompt_response([prompt_ids[i] for i in idx], [response_ids[i] for i in idx], tok.pad_id)
        set_lr(opt, lr_factor(step, args.steps, args.warmup_steps, args.lr_schedule))
        with autocast(args.dtype, ids.device):  # --dtype bf16: the forward in bf16; sft_loss casts the logits to fp32
            logits = model(ids, mask)
        # under torchrun: weighted so that the averaged gradient is that of the loss over the global batch's tokens
        local = sft_loss(logits, ids, rmask) * distributed.mean_weight(rmask[:, 1:].sum())
        loss = distributed.all_reduce_mean(local.detach())  # the global batch's loss (the local one in one process)
        if not torch.isfinite(loss):
            raise SystemExit(f"error: SFT loss is {loss.item()} at step {step + 1}; {last_good(ckpt)}")
        opt.zero_grad(set_to_none=True)
        local.backward()
        distributed.all_reduce_grads(model.parameters())
        gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip if args.grad_clip > 0 else float("inf"))
        opt.step()
        tokens += int(distributed.all_reduce_sum(mask.sum()))
        elapsed = time.time() - t0
        metrics.log(step + 1, {"sft/loss": loss.item(), "sft/lr": opt.param_groups[0]["lr"],
                               "sft/grad_norm": gnorm.item(), "sft/tokens_per_s": tokens / max(elapsed, 1e-9)})
        pbar.set_postfix(loss=f"{loss.item():.3f}")
        if (step + 1) % args.log_every == 0:
            tqdm.write(f"step {step + 1:5d} | loss {loss.item():.4f} | lr {opt.param_groups[0]['lr']:.2e} | "
                       f"{tokens / max(elapsed, 1e-9):,.0f} tok/s")
        if (step + 1) % args.ckpt_every == 0 or step + 1 == args.steps:
            save(step + 1)
    train_time = time.time() - t0
    if not distributed.is_main():  # rank 0 alone evaluates and writes the report
        return

    # 5. evaluate: sample the held-out prompts, score with the gold judge
    report = {"steps": args.steps, "train_seconds": train_time, "tokens_per_s": tokens / max(train_time, 1e-9)}
    eval_path = data / "prompts_eval.jsonl"
    if args.n_eval and eval_path.exists():
        model.eval()
        prompts = [r["prompt"] for r in read_jsonl(eval_path, "prompts")][:args.n_eval]
        gen = torch.Generator().manual_seed(args.seed)
        roll = sample(model, tok, prompts, args.max_new_tokens, temperature=args.temperature, generator=gen)
        lengths = roll.response_mask.sum(1)
        report.update({"eval/n": len(prompts), "eval/length": lengths.mean().item(),
                       "eval/stopped": roll.stopped.float().mean().item()})
        samples = [{"prompt": p, "responses": [t], "rewards": []} for p, t in zip(prompts, roll.texts)]
        if task is not None:
            gold = [task.gold(p, t) for p, t in zip(prompts, roll.texts)]
            demo = [task.gold(p, task.demonstration(p, random.Random(i))) for i, p in enumerate(prompts)]
            ref = [task.gold(p, task.reference(p)) for p in prompts]
            report.update({"gold/score": sum(gold) / len(gold), "gold/demonstration": sum(demo) / len(demo),
                           "gold/reference": sum(ref) / len(ref)})
            samples = [{**s, "rewards": [g]} for s, g in zip(samples, gold)]
        write_jsonl(out / "samples.jsonl", samples, kind="samples" if task is not None else None)  # no gold: no rewards
        for s in samples[:3]:
            print(f"  prompt: {s['prompt']}\n  response: {s['responses'][0]}\n  gold: {s['rewards'] or 'n/a'}")
    metrics.log(args.steps, report)
    metrics.close()
    write_json(out / "eval.json", report)
    print(f"done in {train_time:.0f}s ({report['tokens_per_s']:,.0f} tok/s)")
    if "gold/score" in report:
        print(f"SFT policy gold score {report['gold/score']:.3f} on {report['eval/n']} eval prompts "
              f"(demonstrations {report['gold/demonstration']:.3f}, best achievable {report['gold/reference']:.3f})")
    elif args.n_eval:
        print("no gold judge for this data (no meta.json from prepare_data.py): gold score not available")


if __name__ == "__main__":
    run_cli(main)
