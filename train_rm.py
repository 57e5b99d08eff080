"""Bradley-Terry reward model: the SFT trunk plus a fresh scalar head, trained on preference pairs.

Usage:
    python train_rm.py --preset tiny --data data/story --sft runs/sft/ckpt --out runs/rm
    python train_rm.py ... --normalize        # shift/scale so held-out SFT-distribution rewards are N(0, 1)
    python train_rm.py ... --resume           # continue after a crash
    python train_rm.py ... --init-from models/gpt2   # the trunk of a GPT-2-format model from disk instead of --sft
    torchrun --nproc_per_node 2 train_rm.py ...      # data-parallel; --batch-size is per rank (rlhf/distributed.py)
RLP (Lang et al. 2024), retraining on samples of the PPO policy (sample_baselines.py --k 10 --temperature 1.0):
    python train_rm.py ... --policy-samples runs/policy_samples.jsonl --uml-weight 0.5   # RLP-UML: BT + 0.5 * MIB loss
    python train_rm.py ... --policy-samples runs/policy_samples.jsonl --spg-gamma 0.5    # RLP-SPG: BT on human + synthetic pairs

Chosen and rejected go through the model as one batch (one forward per step). A held-out split of
the pairs gives the diagnostics printed at the end (see `rlhf.reward.rm_diagnostics`): accuracy against
the annotator's labels, against the gold judge, and of the "longer wins" rule on the same pairs;
calibration; the correlation of the reward with length; accuracy on pairs differing in one gold
component only. Writes config.json, metrics.jsonl (rm/*), ckpt/ and diagnostics.json into --out.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

from rlhf.config import DataArgs, PackArgs, TrainArgs, answer_help, arg, config_to_dict, parse_args


@dataclass
class Args(DataArgs, TrainArgs, PackArgs):
    data: str = arg("data/story", "directory from prepare_data.py (preferences.jsonl, meta.json)", reads=True)
    pairs: str | None = arg(None, "a preferences JSONL to use instead of DATA/preferences.jsonl", reads=True)
    sft: str = arg("runs/sft/ckpt", "SFT policy checkpoint: the trunk and tokenizer to start from", reads=True)
    init_from: str | None = arg(None, "start from a GPT-2-format model (a directory with model.safetensors and tokenizer.json, rlhf/gpt2.py) instead of --sft", reads=True)
    out: str = arg("runs/rm", "run directory")
    preset: str = arg("tiny", "size preset; explicit flags override it")
    seed: int = arg(0, "fixes the split, data order and head initialisation", ge=0, le=2**32 - 1)
    epochs: float = arg(1.0, "passes over the training pairs (0: no training, only the diagnostics of --previous-rm on the pairs)", ge=0.0, le=1e6)
    batch_size: int = arg(32, "pairs per forward (2x sequences; per rank under torchrun); a step sees grad_accum of them", ge=1, le=2**20)
    grad_accum: int = arg(1, "gradient accumulation: forwards per optimiser step (the step is that of one batch grad_accum times larger)", ge=1, le=65536)
    lr: float = arg(3e-4, "trunk learning rate", gt=0.0)
    head_lr: float = arg(3e-3, "scalar head learning rate", gt=0.0)
    lr_schedule: str = arg("cosine", "decay after warm-up", choices=["constant", "linear", "cosine"])
    warmup_steps: int = arg(20, "linear warm-up steps", ge=0, le=10**9)
    weight_decay: float = arg(0.0, "AdamW weight decay on matrices", ge=0.0)
    grad_clip: float = arg(1.0, "clip the global gradient norm (0: off)", ge=0.0)
    val_fraction: float = arg(0.1, "share of pairs held out for diagnostics", gt=0.0, le=0.9)
    eval_every: int = arg(100, "held-out accuracy every N steps", ge=1)
    pairs_from: str = arg("file", "the preference data D: the pairs file as it is, or for each of its prompts (training and "
                          "held-out alike) two SFT samples (temperature 1.0) ordered by the built-in task's annotator, as "
                          "RLHF collects D (Lang et al. 2024: pairs of SFT samples)", choices=["file", "sft"])
    sft_pairs: int = arg(0, "also train on pairs of two SFT samples (temperature 1.0) on this many training prompts, ordered by the built-in task's simulated annotator (0: off)", ge=0, le=10**7)
    n_policy_pairs: int = arg(400, "held-out eval prompts on which two SFT samples make a diagnostic pair (0: skip)", ge=0, le=10**7)
    max_val_pairs: int = arg(1000, "cap on held-out pairs scored at each evaluation", ge=1, le=10**8)
    policy_samples: str | None = arg(None, "RLP: samples JSONL of the PPO policy (sample_baselines.py, n per unlabelled prompt, rewards from the first RM)", reads=True)
    uml_weight: float = arg(0.0, "RLP-UML: weight lambda of the MIB loss on two policy samples per prompt (paper 0.5; 0: off)", ge=0.0)
    uml_kl_weight: float = arg(1.0, "RLP-UML: weight of the symmetric KL inside L_M (paper 1; 0: multi-view InfoMax ablation)", ge=0.0)
    mib_lr: float = arg(1e-3, "RLP-UML: learning rate of the MIB heads and critic", gt=0.0)
    spg_gamma: float | None = arg(None, "RLP-SPG: confidence threshold for synthetic pairs (paper 0.5; 0: select-all ablation; unset: off)", ge=0.0, le=1.0)
    spg_random_pair: bool = arg(False, "RLP-SPG ablation: one random pair per prompt labelled by the previous RM")
    previous_rm: str | None = arg(None, "RLP ablation: continue training from this RM instead of retraining from the SFT trunk (the paper)", reads=True)
    normalize: bool = arg(False, "store shift/scale so held-out rewards have mean 0, std 1")
    ckpt_every: int = arg(200, "save a resumable checkpoint every N steps", ge=1)
    resume: bool = arg(False, "continue the run in --out from its checkpoint")
    overwrite: bool = arg(False, "replace a run already in --out")

    def __post_init__(self):  # flag relations (parse_args makes them usage errors, exit 2)
        if self.pairs_from == "sft" and self.sft_pairs:
            raise ValueError("--sft-pairs adds SFT-sample pairs to the file's; with --pairs-from sft every pair already is one")


PRESETS = {"smoke": dict(batch_size=16, warmup_steps=5, eval_every=50, ckpt_every=50, max_val_pairs=200, lr=1e-3, head_lr=1e-2),
           "tiny": dict(),
           # one GPU, the story task's small SFT policy (unmeasured): the tiny recipe at a 3x lower trunk lr, batch 64
           "small": dict(batch_size=64, lr=1e-4, head_lr=1e-3, eval_every=50, ckpt_every=100),
           # a GPT-2-format trunk on your own pairs: Ziegler et al. 2019 (arXiv 1909.08593; openai/lm-human-preferences
           # launch.py, GPT-2 124M reward models): batch 32, lr 5e-5, one epoch; the head at the trunk's lr
           "gpt2": dict(batch_size=32, lr=5e-5, head_lr=5e-5, warmup_steps=0, eval_every=100, ckpt_every=200)}

# `--help` answers here, from Args alone: the imports below load torch and take seconds
answer_help(__name__, Args, presets=PRESETS, description=__doc__.split("\n")[0])

import torch
from tqdm import tqdm

from rlhf import distributed
from rlhf.checkpoint import last_good, load_model
from rlhf.formats import data_format
from rlhf.data import read_jsonl, write_json
from rlhf.device import check_memory, oom_guard, peak_memory
from rlhf.evaluation import format_diagnostics, rm_report
from rlhf.gpt2 import load_gpt2
from rlhf.metrics import few_caveat, pair_accuracy
from rlhf.model import ScalarModel
from rlhf.optim import lr_factor, make_optimizer, set_lr
from rlhf.precision import autocast, maybe_compile
from rlhf.resume import resume, save_step
from rlhf.reward import (bradley_terry_loss, longest_pair, pair_batch, pairs_fitting, policy_sample_pairs, read_preference_split, rm_diagnostics,
                         score_texts)
from rlhf.rlp import Critic, GaussianHead, cluster_by_key, mib_loss, normalised_key, spg_pairs
from rlhf.run import MetricsWriter, run_cli, run_finished, start_run


def main(argv=None):
    # 1. arguments, run directory, seeding
    args = parse_args(Args, argv, presets=PRESETS, description=__doc__.split("\n")[0])
    out, resuming, dev = start_run(args)
    ckpt = out / "ckpt"
    if args.epochs == 0 and not args.previous_rm:
        raise ValueError("--epochs 0 scores an existing reward model on the pairs without training: pass it as --previous-rm CKPT")
    rlp = args.uml_weight > 0 or args.spg_gamma is not None or args.spg_random_pair
    if rlp and args.policy_samples is None:
        raise ValueError("--uml-weight, --spg-gamma and --spg-random-pair need --policy-samples FILE (sample_baselines.py)")
    if args.uml_weight > 0 and (args.spg_gamma is not None or args.spg_random_pair):
        raise ValueError("choose RLP-UML (--uml-weight) or RLP-SPG (--spg-gamma / --spg-random-pair), not both: the paper ran them separately")
    if args.uml_weight > 0 and args.grad_accum > 1:  # the MIB loss draws its negatives within the batch: not additive
        raise ValueError("--grad-accum > 1 cannot be used with --uml-weight (RLP-UML's MIB loss contrasts within one batch); "
                         "use --grad-checkpoint to save memory instead")

    # 2. data: pairs (identical chosen/rejected skipped, counted), a seeded held-out split; RLP's policy samples
    data = Path(args.data)
    task, pairs_path, train, val, held_samples, uml, rlp_stats = load_pairs(args, data)

    # 3. model: the SFT trunk + a fresh head, or --previous-rm to continue (a resumed run reloads its own checkpoint)
    if args.init_from:  # a pretrained GPT-2-format model and its tokenizer instead of an SFT checkpoint
        (policy, tok), sft_cfg = load_gpt2(args.init_from), {}
    else:
        policy, tok, sft_cfg = load_model(args.sft, "policy")
    policy.to(dev)  # before --sft-pairs samples from it
    train, val = (pairs_fitting(tok, rs, policy.config.block_size, pairs_path) for rs in (train, val))  # as SFT skips long demonstrations
    if args.pairs_from == "sft":  # D itself from SFT samples: the file gives the prompts (and the split) only
        if task is None:
            raise ValueError(f"--pairs-from sft needs a built-in task's data ({data / 'meta.json'} is missing): its annotator labels the pairs")
        train, val = (sft_sample_pairs(policy, tok, task, rows, args.seed + s, what) for rows, s, what in
                      ((train, 5, "training"), (val, 6, "held-out")))
    if args.sft_pairs:  # labels on the policy's own samples, as RLHF collects them; prompts of the training pairs only
        if task is None:
            raise ValueError(f"--sft-pairs needs a built-in task's data ({data / 'meta.json'} is missing): its annotator labels the pairs")
        prompts = [p for p in dict.fromkeys(r["prompt"] for r in train) if task.knows(p)][:args.sft_pairs]  # labellable
        p, c, r = policy_sample_pairs(policy, tok, task, prompts, temperature=1.0, seed=args.seed + 3)
        sft_rows = [{"prompt": a, "chosen": b, "rejected": d} for a, b, d in zip(p, c, r)]
        train = train + pairs_fitting(tok, sft_rows, policy.config.block_size, "the --sft-pairs samples") if sft_rows else train
        print(f"{len(p)} pairs of two SFT samples added (of {len(prompts)} prompts; identical samples dropped)")
    N = len(train)
    steps = 0 if args.epochs == 0 else max(1, math.ceil(args.epochs * N / (args.batch_size * args.grad_accum * distributed.world_size())))
    if resuming and run_finished(out, ckpt, steps, "diagnostics.json", more_steps=False):
        return
    print(f"{N} training pairs, {len(val)} held out, {steps} steps")
    check_memory(policy.config.training_bytes(2 * args.batch_size, longest_pair(tok, train), logits=False), dev, "--batch-size")
    rm = ScalarModel(policy.config)
    rm.gpt.load_state_dict(policy.state_dict())
    rm.gpt.grad_checkpoint = args.grad_checkpoint
    if args.previous_rm:  # RLP ablation: continue from the first RM instead of retraining from SFT (the paper)
        load_model(args.previous_rm, "rm", into=rm)
    aux = torch.nn.ModuleDict({"heads": GaussianHead(rm.config.n_embd), "critic": Critic()}) if uml else None
    rm.to(dev)
    policy.eval()  # kept: its samples make the second set of diagnostic pairs
    if aux is not None:
        aux.to(dev)
    maybe_compile(rm, args.compile)  # --compile: its blocks, in place
    opt = make_optimizer([{"named": rm.gpt.named_parameters(), "lr": args.lr},
                          {"named": rm.head.named_parameters(), "lr": args.head_lr}]
                         + ([{"named": aux.named_parameters(), "lr": args.mib_lr}] if aux is not None else []), args.lr, args.weight_decay)
    modules = {"rm": rm} | ({"aux": aux} if aux is not None else {})  # the MIB heads and critic travel in the RM checkpoint
    start = resume(ckpt, modules, {"rm": opt})["step"] if resuming else 0
    if resuming:
        print(f"resumed from {ckpt} at step {start}")
    distributed.broadcast_params(*modules.values())  # rank 0's fresh heads on every rank
    ckpt_config = {"model": rm.config.to_dict(), "args": config_to_dict(args), "tokenizer": tok.fingerprint,
                   "task": sft_cfg.get("task"), "stage": "rm"}

    def save(step: int):
        if distributed.is_main():
            save_step(ckpt, step, modules, {"rm": opt}, ckpt_config, tok.to_json())

    def evaluate() -> dict:
        p = [r["prompt"] for r in val]
        s = score_texts(rm, tok, p + p, [r["chosen"] for r in val] + [r["rejected"] for r in val])
        return rm_diagnostics(p, [r["chosen"] for r in val], [r["rejected"] for r in val], s[:len(val)], s[len(val):], task)

    # 4. training loop: one forward of 2(B + U) sequences per step
    metrics = MetricsWriter(out / "metrics.jsonl", resume_step=start if resuming else None,
                            tensorboard=out / "tensorboard" if args.tensorboard else None)
    rm.train()
    t0 = time.time()
    pbar = tqdm(range(start, steps), desc="rm", initial=start, total=steps, disable=not distributed.is_main())
    for step in pbar:
        batch = [train[i] for i in distributed.step_indices(N, args.seed, step, args.batch_size * args.grad_accum)]
        g = torch.Generator(dev).manual_seed(distributed.rank_seed(args.seed * 1000003 + step))
        set_lr(opt, lr_factor(step, steps, args.warmup_steps, args.lr_schedule))
        opt.zero_grad(set_to_none=True)
        bt, loss, chosen, rejected, mib_stats = 0.0, 0.0, [], [], {}
        with oom_guard(f"RM step {step + 1}", f"--batch-size {args.batch_size} (raise --grad-accum to keep the step's batch)", ckpt):
            for j in range(0, len(batch), args.batch_size):  # grad_accum micro-batches of B pairs
                mb = batch[j:j + args.batch_size]
                views = uml_views(uml, args.batch_size, g) if aux is not None else ([], [], [])  # RLP-UML: + U view pairs
                ids, mask = pair_batch(tok, [r["prompt"] for r in mb] + views[0], [r["chosen"] for r in mb] + views[1],
                                       [r["rejected"] for r in mb] + views[2])
                rows_of = uml_layout(len(mb), len(views[0]))
                margin = torch.tensor([float(r.get("margin", 0.0)) for r in mb], device=dev) if any("margin" in r for r in mb) else None
                with autocast(args.dtype, dev):  # --dtype bf16: the trunk in bf16; the reward head reads out fp32
                    r, h = rm.score(ids.to(dev), mask.to(dev), return_hidden=True, pack=args.pack)  # (2(B+U),), (2(B+U), D)
                h = h.float()  # the RLP-UML heads and losses in fp32
                share = len(mb) / len(batch) if args.grad_accum > 1 else 1.0  # accumulated: this micro-batch's share
                bt_mb = bradley_terry_loss(r[rows_of["chosen"]], r[rows_of["rejected"]], margin) * share
                loss_mb = bt_mb
                if aux is not None:  # RLP-UML: L = L_BT + lambda * L_M
                    l_m, mib_stats = mib_loss(h[rows_of["view1"]], h[rows_of["view2"]], aux["heads"], aux["critic"], args.uml_kl_weight, g)
                    loss_mb = bt_mb + args.uml_weight * l_m
                loss_mb.backward()
                bt, loss = bt + bt_mb.detach(), loss + loss_mb.detach()
                chosen.append(r[rows_of["chosen"]].detach())
                rejected.append(r[rows_of["rejected"]].detach())
        loss_all = distributed.all_reduce_mean(loss)  # over all ranks' pairs (equal counts: the global mean)
        if not torch.isfinite(loss_all):  # before the optimiser step: the weights never see it
            raise SystemExit(f"error: RM loss is {loss_all.item()} at step {step + 1}; {last_good(ckpt)}")
        distributed.all_reduce_grads([p for m in modules.values() for p in m.parameters()])
        torch.nn.utils.clip_grad_norm_(rm.parameters(), args.grad_clip if args.grad_clip > 0 else float("inf"))
        opt.step()
        log = {"rm/loss": bt.item(), "rm/train_accuracy": pair_accuracy(torch.cat(chosen), torch.cat(rejected)), "rm/lr": opt.param_groups[0]["lr"],
               "rm/pairs_per_s": (step + 1 - start) * len(batch) * distributed.world_size() / max(time.time() - t0, 1e-9),
               **{f"rlp/mib_{k}": v.item() for k, v in mib_stats.items()}}
        log = distributed.all_reduce_mean_dict(log)  # means over ranks (unchanged in one process)
        if (step + 1) % args.eval_every == 0 and step + 1 < steps and distributed.is_main():
            log.update({f"val/{k[3:]}": v for k, v in evaluate().items()})
            tqdm.write(f"step {step + 1:5d} | loss {loss_all.item():.4f} | val acc {log['val/accuracy']:.3f}"
                       + (f" | val gold acc {log['val/gold_accuracy']:.3f}" if "val/gold_accuracy" in log else ""))
        metrics.log(step + 1, log)
        pbar.set_postfix(loss=f"{loss_all.item():.3f}", acc=f"{log['rm/train_accuracy']:.2f}")
        if (step + 1) % args.ckpt_every == 0:
            save(step + 1)
    train_time = time.time() - t0
    save(steps)  # the trained weights are safe before the diagnostics run (a resumed run goes straight to them)
    if not distributed.is_main():  # rank 0 alone computes the diagnostics and writes the final checkpoint
        return

    # 5. normalisation, diagnostics, final checkpoint
    if args.normalize:
        p = [r["prompt"] for r in val]
        s = score_texts(rm, tok, p + p, [r["chosen"] for r in val] + [r["rejected"] for r in val])
        rm.shift += s.mean() * rm.scale  # reward' = (head - shift') / scale', so shift' folds in the mean
        rm.scale *= s.std().clamp(min=1e-6)
        print(f"normalised: shift {rm.shift.item():.4f}, scale {rm.scale.item():.4f}")
    eval_prompts = data / "prompts_eval.jsonl"
    sft_prompts = ([r["prompt"] for r in read_jsonl(eval_prompts, "prompts", fmt=data_format(args))][:args.n_policy_pairs]
                   if task is not None and args.n_policy_pairs and eval_prompts.exists() else [])
    diag = evaluate() | rm_report(rm, tok, task, policy, sft_prompts, held_samples, seed=args.seed) | rlp_stats
    diag.update({"rm/train_seconds": train_time, "rm/steps": steps, "rm/train_pairs": N, **peak_memory(dev)})
    ckpt_config["diagnostics"] = diag  # travels with the RM: train_ppo.py warns when it is near chance
    save(steps)
    metrics.log(steps, diag)
    metrics.close()
    write_json(out / "diagnostics.json", diag)
    print(format_diagnostics(diag))


def sft_sample_pairs(policy, tok, task, rows: list[dict], seed: int, what: str) -> list[dict]:
    """The pairs file's rows with their responses replaced: two SFT samples (temperature 1.0) per row's prompt, ordered
    by the task's annotator (rlhf.reward.policy_sample_pairs); rows of one prompt share its pair, identical samples and
    prompts outside the task are dropped."""
    prompts = [p for p in dict.fromkeys(r["prompt"] for r in rows) if task.knows(p)]
    p, c, r = policy_sample_pairs(policy, tok, task, prompts, temperature=1.0, seed=seed)
    out = pairs_fitting(tok, [{"prompt": a, "chosen": b, "rejected": d} for a, b, d in zip(p, c, r)], policy.config.block_size,
                        f"the {what} SFT-sample pairs")
    print(f"--pairs-from sft: {len(out)} {what} pairs of two SFT samples (of {len(prompts)} prompts; identical samples dropped)")
    return out


def load_pairs(args, data: Path):
    """-> (task or None, pairs file, training pairs (RLP-SPG's synthetic pairs included), held-out pairs,
    held-out policy-samples rows, RLP-UML rows (two different samples at least), RLP statistics)."""
    pairs_path = Path(args.pairs) if args.pairs else data / "preferences.jsonl"
    task, train, val = read_preference_split(pairs_path, data, args.seed, args.val_fraction, args.max_val_pairs,
                                              data_format(args))
    samples, held_samples, rlp_stats = [], [], {}
    if args.policy_samples:  # RLP: 10% of the sampled prompts are kept aside to measure on-policy accuracy
        samples = read_jsonl(args.policy_samples, "samples")
        sperm = torch.randperm(len(samples), generator=torch.Generator().manual_seed(args.seed + 1)).tolist()
        n_held = max(1, len(samples) // 10)
        held_samples, samples = [samples[i] for i in sperm[:n_held]], [samples[i] for i in sperm[n_held:]]
    if args.spg_gamma is not None or args.spg_random_pair:  # RLP-SPG: synthetic pairs join the human pairs
        syn, rlp_stats = synthetic_pairs(args, samples, task, len(train))
        train = train + syn
    uml = uml_rows(samples) if args.uml_weight > 0 else []
    if args.uml_weight > 0 and len(uml) < 2:
        raise ValueError(f"{args.policy_samples}: RLP-UML needs at least 2 prompts with two different responses")
    return task, pairs_path, train, val, held_samples, uml, rlp_stats


def synthetic_pairs(args, samples: list[dict], task, n_human: int) -> tuple[list[dict], dict]:
    """RLP-SPG's synthetic pairs from the policy samples, and their statistics: share accepted, |D_hat| / |D| (n_human:
    the human training pairs), a histogram of the largest cluster's size, the share of accepted prompts whose
    majority is the empty answer's key, gold accuracy and the mean gold gap of chosen over rejected."""
    key = task.key if task is not None else normalised_key
    syn = spg_pairs(samples, key, args.spg_gamma or 0.0, torch.Generator().manual_seed(args.seed + 2), args.spg_random_pair)
    stats = {"rlp/spg_pairs": len(syn), "rlp/spg_acceptance": len(syn) / max(1, len(samples)),
             "rlp/spg_pairs_per_human_pair": len(syn) / max(1, n_human)}  # |D_hat| / |D|
    sizes = [len(cluster_by_key([key(r["prompt"], y) for y in r["responses"]])[0]) for r in samples if r["responses"]]
    stats.update({f"rlp/spg_largest_cluster/{c}": sizes.count(c) for c in range(1, max(sizes, default=0) + 1)})  # prompts by size
    if syn:  # accepted prompts whose largest cluster is the key of an empty answer: word salad clusters together there
        stats["rlp/spg_empty_key_share"] = sum(key(r["prompt"], r["chosen"]) == key(r["prompt"], "") for r in syn) / len(syn)
    if task is not None:
        g = [(task.gold(r["prompt"], r["chosen"]), task.gold(r["prompt"], r["rejected"])) for r in syn]
        decided = [a > b for a, b in g if a > b or a < b]  # ties and NaN (a prompt outside the task) left out
        stats["rlp/spg_gold_accuracy"] = sum(decided) / len(decided) if decided else float("nan")
        gaps = [a - b for a, b in g if not (math.isnan(a) or math.isnan(b))]
        stats["rlp/spg_gold_gap"] = sum(gaps) / len(gaps) if gaps else float("nan")  # mean gold(chosen) - gold(rejected)
    print(f"RLP-SPG: {len(syn)} synthetic pairs from {len(samples)} prompts"
          + (f", {stats['rlp/spg_gold_accuracy']:.3f} of them ordered as gold orders them{few_caveat(len(decided))}"
             if task and syn else ""))
    if not syn:  # a silent no-op otherwise: the "retrained" RM would see exactly the first RM's data
        print(f"\n{'!' * 78}\nWARNING: RLP-SPG made 0 synthetic pairs from {len(samples)} prompts (--spg-gamma {args.spg_gamma}): "
              "this RM trains on the human pairs alone, the first RM's data; lower --spg-gamma, or sample more prompts "
              f"or more responses per prompt\n{'!' * 78}\n")
    return syn, stats


def uml_rows(samples: list[dict]) -> list[dict]:
    """RLP-UML's rows: the first row of each distinct prompt that has two different samples at least (two rows of one
    prompt in a batch would make its own views a negative pair)."""
    rows = {}
    for r in samples:
        if len(set(r["responses"])) >= 2:
            rows.setdefault(r["prompt"], r)
    return list(rows.values())


def uml_views(uml: list[dict], U: int, g: torch.Generator) -> tuple[list[str], list[str], list[str]]:
    """RLP-UML: U distinct prompts (all of them when there are fewer), each with two different samples of the policy
    (the two views) -> (prompts, view 1, view 2). Distinct, because the MIB loss counts the views of two different
    rows as a negative pair: a prompt drawn twice would be pushed away from itself (uml holds one row per prompt)."""
    prompts, v1, v2 = [], [], []
    for i in torch.randperm(len(uml), generator=g, device=g.device)[:U].tolist():
        ys = list(dict.fromkeys(uml[i]["responses"]))
        a, b = torch.randperm(len(ys), generator=g, device=g.device)[:2].tolist()
        prompts.append(uml[i]["prompt"])
        v1.append(ys[a])
        v2.append(ys[b])
    return prompts, v1, v2


def uml_layout(B: int, U: int) -> dict[str, slice]:
    """Rows of the one forward: pair_batch puts every "chosen" side first, then every "rejected" side; with the
    U views riding along as extra pairs the rows are B chosen, U view-1, B rejected, U view-2."""
    return {"chosen": slice(0, B), "view1": slice(B, B + U), "rejected": slice(B + U, 2 * B + U), "view2": slice(2 * B + U, 2 * B + 2 * U)}


if __name__ == "__main__":
    run_cli(main)
