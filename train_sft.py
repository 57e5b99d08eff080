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

import random
import time
from dataclasses import dataclass
from pathlib import Path

from rlhf.config import DataArgs, PackArgs, TrainArgs, answer_help, arg, config_to_dict, parse_args


@dataclass
class Args(DataArgs, TrainArgs, PackArgs):
    data: str = arg("data/story", "directory from prepare_data.py (sft.jsonl, prompts_eval.jsonl, meta.json)", reads=True)
    sft_file: str | None = arg(None, "an SFT JSONL to use instead of DATA/sft.jsonl", reads=True)
    eval_prompts: str | None = arg(None, "a prompts JSONL to use instead of DATA/prompts_eval.jsonl (the final evaluation)", reads=True)
    out: str = arg("runs/sft", "run directory")
    preset: str = arg("tiny", "size preset; explicit flags override it")
    seed: int = arg(0, "fixes initialisation, data order, dropout and sampling", ge=0, le=2**32 - 1)
    init_from: str | None = arg(None, "start from a GPT-2-format model: a directory with model.safetensors and tokenizer.json (rlhf/gpt2.py); its sizes and tokenizer replace --vocab-size, --n-layer, --n-head, --n-embd", reads=True)
    vocab_size: int = arg(1024, "BPE vocabulary size (specials and 256 bytes included)", ge=260, le=2**20)
    n_layer: int = arg(4, "transformer blocks", ge=1, le=512)
    n_head: int = arg(4, "attention heads", ge=1, le=512)
    n_embd: int = arg(256, "model width", ge=1, le=65536)
    block_size: int = arg(128, "context length (prompt + response tokens)", ge=8, le=65536)
    dropout: float = arg(0.0, "dropout probability", ge=0.0, le=0.99)
    steps: int = arg(340, "optimiser steps", ge=1, le=10**9)
    batch_size: int = arg(64, "sequences per forward (per rank under torchrun); a step sees grad_accum of them", ge=1, le=2**20)
    grad_accum: int = arg(1, "gradient accumulation: forwards per optimiser step (the step is that of one batch grad_accum times larger)", ge=1, le=65536)
    lr: float = arg(1e-3, "peak learning rate", gt=0.0)
    lr_schedule: str = arg("cosine", "decay after warm-up", choices=["constant", "linear", "cosine"])
    warmup_steps: int = arg(20, "linear warm-up steps", ge=0, le=10**9)
    weight_decay: float = arg(0.1, "AdamW weight decay on matrices", ge=0.0)
    grad_clip: float = arg(1.0, "clip the global gradient norm (0: off)", ge=0.0)
    ckpt_every: int = arg(100, "save a resumable checkpoint every N steps", ge=1)
    log_every: int = arg(10, "print a status line every N steps", ge=1)
    n_eval: int = arg(200, "eval prompts sampled at the end (0: skip)", ge=0, le=10**7)
    max_new_tokens: int = arg(96, "longest sampled response", ge=1, le=65536)
    temperature: float = arg(0.7, "sampling temperature for the final evaluation", ge=0.0)
    resume: bool = arg(False, "continue the run in --out from its checkpoint")
    overwrite: bool = arg(False, "replace a run already in --out")


    def __post_init__(self):  # flag relations, checked before any work (parse_args turns this into a usage error)
        if self.max_new_tokens >= self.block_size:
            raise ValueError(f"--max-new-tokens {self.max_new_tokens} leaves no room for a prompt in --block-size {self.block_size}")
        if self.n_embd % self.n_head:
            raise ValueError(f"--n-embd {self.n_embd} must be divisible by --n-head {self.n_head}")


PRESETS = {
    "smoke": dict(vocab_size=512, n_layer=2, n_head=2, n_embd=64, steps=300, batch_size=32, lr=3e-3,
                  warmup_steps=10, ckpt_every=100, log_every=50, n_eval=32, max_new_tokens=64),
    "tiny": dict(),  # the dataclass defaults: 4 layers, 256 wide, ~340 steps of 64 sequences
    # one GPU, the built-in story task: 8 layers, 512 wide (25M parameters), 1,500 steps of 128 sequences (unmeasured)
    "small": dict(n_layer=8, n_head=8, n_embd=512, steps=1500, batch_size=128, lr=6e-4, warmup_steps=100, ckpt_every=500,
                  log_every=50, n_eval=400),
    # --init-from a GPT-2-format model on your own data: Huang et al. 2024 (arXiv 2403.17031, the TL;DR SFT of
    # vwxyzjn/summarize_from_feedback_details sft.py): lr 3e-6, cosine, no warm-up, 16 sequences per step (here 8 x 2
    # accumulated), one epoch (set --steps to N / 16); context 512 (their 512-token queries + responses, truncated)
    "gpt2": dict(block_size=512, batch_size=8, grad_accum=2, lr=3e-6, warmup_steps=0, lr_schedule="cosine", weight_decay=0.0,
                 ckpt_every=500, log_every=50),
}

# `--help` answers here, from Args alone: the imports below load torch and take seconds
answer_help(__name__, Args, presets=PRESETS, description=__doc__.split("\n")[0])

import torch
from tqdm import tqdm

from rlhf import distributed, tasks
from rlhf.checkpoint import last_good, load_tokenizer
from rlhf.run import MetricsWriter, run_cli, run_finished, start_run
from rlhf.formats import data_format
from rlhf.data import read_json, read_jsonl, record_location, write_json, write_jsonl
from rlhf.device import check_memory, oom_guard, peak_memory
from rlhf.gpt2 import load_gpt2
from rlhf.model import GPT, GPTConfig
from rlhf.optim import lr_factor, make_optimizer, set_lr
from rlhf.precision import autocast, maybe_compile
from rlhf.resume import resume, save_step
from rlhf.sampling import check_prompts_fit, sample
from rlhf.padding import pack_like, pack_rows
from rlhf.sft import join_prompt_response, sft_loss
from rlhf.tokenizer import Tokenizer, too_long


def main(argv=None):
    # 1. arguments, run directory, seeding
    args = parse_args(Args, argv, presets=PRESETS, description=__doc__.split("\n")[0])
    out, resuming, dev = start_run(args)
    ckpt = out / "ckpt"
    if resuming and run_finished(out, ckpt, args.steps, "eval.json"):
        return

    # 2. data and tokenizer (trained on the demonstrations; a resumed run reuses the saved one)
    data = Path(args.data)
    sft_path = Path(args.sft_file) if args.sft_file else data / "sft.jsonl"
    rows = read_jsonl(sft_path, "sft", fmt=data_format(args))
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
    skip = set(too_long(prompt_ids, response_ids, args.block_size))
    keep = [i for i in range(len(rows)) if i not in skip]
    if len(keep) < len(rows):
        print(f"warning: skipped {len(rows) - len(keep)} of {len(rows)} demonstrations longer than block_size {args.block_size}")
    if not keep:
        raise SystemExit(f"error: every demonstration in {sft_path} is longer than --block-size {args.block_size}")
    prompt_ids = [prompt_ids[i] for i in keep]
    response_ids = [response_ids[i] for i in keep]
    N = len(keep)

    # the final evaluation's prompts must leave room for --max-new-tokens: checked now, not after training
    eval_path = Path(args.eval_prompts) if args.eval_prompts else data / "prompts_eval.jsonl"
    eval_prompts = ([r["prompt"] for r in read_jsonl(eval_path, "prompts", fmt=data_format(args))][:args.n_eval]
                    if args.n_eval and (args.eval_prompts or eval_path.exists()) else [])
    if eval_prompts:
        check_prompts_fit(tok, eval_prompts, pretrained.config.block_size if pretrained else args.block_size,
                          args.max_new_tokens, eval_path)

    # 3. model and optimiser
    if pretrained is not None:
        model, mcfg = pretrained, pretrained.config
    else:
        mcfg = GPTConfig(vocab_size=tok.vocab_size, block_size=args.block_size, n_layer=args.n_layer,
                         n_head=args.n_head, n_embd=args.n_embd, dropout=args.dropout)
        longest = max(len(p) + len(r) for p, r in zip(prompt_ids, response_ids))
        check_memory(mcfg.training_bytes(args.batch_size, longest), dev, "--vocab-size, --n-layer, --n-embd, --block-size and --batch-size")
        model = GPT(mcfg)
    model.to(dev)
    model.grad_checkpoint = args.grad_checkpoint
    print(f"model: {model.num_params() / 1e6:.2f}M parameters, {N} demonstrations, vocab {tok.vocab_size}, on {dev}")
    opt = make_optimizer(model.named_parameters(), args.lr, args.weight_decay)
    maybe_compile(model, args.compile)  # --compile: its blocks, in place
    start = resume(ckpt, {"policy": model}, {"policy": opt})["step"] if resuming else 0
    if resuming:
        print(f"resumed from {ckpt} at step {start}")
    distributed.broadcast_params(model)  # every rank starts from rank 0's weights, as DDP does
    ckpt_config = {"model": mcfg.to_dict(), "args": config_to_dict(args), "tokenizer": tok.fingerprint,
                   "task": meta and {"name": meta["task"], "seed": meta["seed"]}, "stage": "sft"}

    def save(step: int):
        if distributed.is_main():
            save_step(ckpt, step, {"policy": model}, {"policy": opt}, ckpt_config, tok.to_json())

    # 4. training loop
    metrics = MetricsWriter(out / "metrics.jsonl", resume_step=start if resuming else None,
                            tensorboard=out / "tensorboard" if args.tensorboard else None)
    model.train()
    t0, tokens = time.time(), 0
    pbar = tqdm(range(start, args.steps), desc="sft", initial=start, total=args.steps, disable=not distributed.is_main())
    for step in pbar:
        idx = distributed.step_indices(N, args.seed, step, args.batch_size * args.grad_accum)  # deterministic in (seed, step)
        set_lr(opt, lr_factor(step, args.steps, args.warmup_steps, args.lr_schedule))
        micro = [join_prompt_response([prompt_ids[i] for i in idx[j:j + args.batch_size]], [response_ids[i] for i in idx[j:j + args.batch_size]],
                                      tok.pad_id) for j in range(0, len(idx), args.batch_size)]  # grad_accum x (ids, mask, rmask)
        n_tok = sum(rmask[:, 1:].sum() for _, _, rmask in micro)  # the response tokens the step's loss averages over
        # under torchrun: weighted so that the averaged gradient is that of the loss over the global batch's tokens
        weight = distributed.mean_weight(n_tok)
        opt.zero_grad(set_to_none=True)
        loss = 0.0
        with oom_guard(f"SFT step {step + 1}", f"--batch-size {args.batch_size} (raise --grad-accum to keep the step's batch)", ckpt):
            for ids, mask, rmask in micro:
                ids, mask, rmask = ids.to(dev), mask.to(dev), rmask.to(dev)
                share = rmask[:, 1:].sum() / n_tok if len(micro) > 1 else 1.0  # accumulated: this micro-batch's share of the tokens
                segments = None
                if args.pack:  # the same loss terms on packed rows: a sequence's next token never crosses into the next
                    packed, segments, index = pack_rows(ids, mask, capacity=mcfg.block_size)
                    ids, mask, rmask = packed, None, pack_like(rmask, mask, index, packed.shape)
                with autocast(args.dtype, dev):  # --dtype bf16: the forward in bf16; sft_loss casts the logits to fp32
                    logits = model(ids, mask, segments=segments)
                local = sft_loss(logits, ids, rmask) * share * weight
                local.backward()
                loss = loss + local.detach()
        tokens += int(distributed.all_reduce_sum(sum(mask.sum() for _, mask, _ in micro)))  # every rank's tokens
        loss = distributed.all_reduce_mean(loss)  # the global batch's loss (the local one in one process)
        if not torch.isfinite(loss):  # before the optimiser step: the weights never see it
            raise SystemExit(f"error: SFT loss is {loss.item()} at step {step + 1}; {last_good(ckpt)}")
        distributed.all_reduce_grads(model.parameters())
        gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip if args.grad_clip > 0 else float("inf"))
        opt.step()
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
    report = {"steps": args.steps, "train_seconds": train_time, "tokens_per_s": tokens / max(train_time, 1e-9), **peak_memory(dev)}
    if eval_prompts:
        model.eval()
        prompts = eval_prompts
        gen = torch.Generator(dev).manual_seed(args.seed)
        with autocast(args.dtype, dev):
            roll = sample(model, tok, prompts, args.max_new_tokens, temperature=args.temperature, generator=gen,
                          desc="SFT: eval samples")
        lengths = roll.response_mask.sum(1)
        report.update({"eval/n": len(prompts), "eval/length": lengths.mean().item(),
                       "eval/stopped": roll.stopped.float().mean().item()})
        samples = [{"prompt": p, "responses": [t], "rewards": []} for p, t in zip(prompts, roll.texts)]
        known = tasks.known_rows(task, prompts, lambda i: record_location(eval_path, i)) if task is not None else []
        if known:  # the gold judge on the prompts in the task's grammar
            gold = [task.gold(prompts[i], roll.texts[i]) for i in known]
            demo = [task.gold(prompts[i], task.demonstration(prompts[i], random.Random(i))) for i in known]
            ref = [task.gold(prompts[i], task.reference(prompts[i])) for i in known]
            report.update({"gold/score": sum(gold) / len(gold), "gold/demonstration": sum(demo) / len(demo),
                           "gold/reference": sum(ref) / len(ref)} | ({"gold/left_out": len(prompts) - len(known)}
                                                                    if len(known) < len(prompts) else {}))
            for i, g in zip(known, gold):
                samples[i]["rewards"] = [g]
        scored = bool(known) and len(known) == len(prompts)
        write_jsonl(out / "samples.jsonl", samples, kind="samples" if scored else None)  # rows without gold: no rewards
        for s in samples[:3]:
            print(f"  prompt: {s['prompt']}\n  response: {s['responses'][0]}\n  gold: {s['rewards'] or 'n/a'}")
    metrics.log(args.steps, report)
    metrics.close()
    write_json(out / "eval.json", report)
    print(f"done in {train_time:.0f}s ({report['tokens_per_s']:,.0f} tok/s" + (f", peak GPU memory {report['memory/peak_gpu_mib']:,.0f} MiB)" if dev.type == "cuda" else ")"))
    if "gold/score" in report:
        print(f"SFT policy gold score {report['gold/score']:.3f} on {report['eval/n']} eval prompts "
              f"(demonstrations {report['gold/demonstration']:.3f}, best achievable {report['gold/reference']:.3f})")
    elif args.n_eval:
        print("no gold judge for this data (no meta.json from prepare_data.py): gold score not available")


if __name__ == "__main__":
    run_cli(main)
