"""Evaluate a policy against a reference policy: gold win rate, gold and proxy scores, KL, length.

Usage:
    python evaluate.py --policy runs/ppo/ckpt --reference runs/sft/ckpt --rm runs/rm/ckpt --data data/story --out runs/ppo/eval.json
    python evaluate.py --policy runs/sft/ckpt --rm runs/rm/ckpt --best-of-n 16 --name best-of-16 --out runs/bon16/eval.json
    python evaluate.py --policy runs/sft/ckpt --reference runs/sft/ckpt ...   # sanity check: win rate ~0.5, KL 0

One sample per held-out prompt at temperature 0.7 (RLP's setting), from the policy and from the reference;
the gold judge of the task in DATA/meta.json scores both; win 1, tie 0.5, loss 0, with a 95% bootstrap
interval over prompts. KL(policy || reference) is the summed log-ratio on the policy's samples (k1, both
models at the sampling temperature); for --best-of-n > 1 it is the analytic log n - (n-1)/n to the sampled
policy instead. With --rm: the mean RM score (proxy) and the RM's accuracy against gold on pairs of fresh
policy samples (how far it has drifted off the SFT distribution). Without meta.json (your own data) there is
no gold judge and only RM-based figures are reported.

Writes --out (the metrics as JSON, with this run's arguments) and beside it <out stem>.samples.jsonl
(prompt, responses, rewards = gold or else proxy, plus ref_response, gold, proxy, kl); prints a markdown row.
The reference's samples do not depend on the policy: --reference-samples reuses those of an earlier evaluation
(reproduce.py passes the SFT row's to every other row of a seed), checked by a fingerprint of everything that
draws them, so the figures are the same as sampling again.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from rlhf.config import DataArgs, DeviceArgs, answer_help, arg, config_to_dict, parse_args


@dataclass
class Args(DataArgs, DeviceArgs):
    policy: str = arg("runs/ppo/ckpt", "policy checkpoint to evaluate", reads=True)
    reference: str | None = arg("runs/sft/ckpt", "reference policy (win rate and KL are against it; none: skip both)", reads=True)
    rm: str | None = arg(None, "reward model checkpoint: proxy score, on-policy RM accuracy, best-of-n", reads=True)
    data: str = arg("data/story", "directory with prompts_eval.jsonl and meta.json (the gold judge)", reads=True)
    prompts: str | None = arg(None, "a prompts JSONL to use instead of DATA/prompts_eval.jsonl", reads=True)
    n_eval: int = arg(400, "evaluate the first N prompts", ge=1, le=10**7)
    temperature: float = arg(0.7, "sampling temperature", gt=0.0)
    max_new_tokens: int | None = arg(None, "longest response (default: context minus the longest prompt, at most 96)", ge=1, le=65536)
    best_of_n: int = arg(1, "sample N per prompt and keep the RM's favourite (needs --rm)", ge=1, le=4096)
    onpolicy_samples: int = arg(2, "the RM's gold accuracy over all C(n, 2) pairs of n policy samples per prompt "
                                "(rm/onpolicy_gold_accuracy; with --best-of-n: two raw candidates; 0: off)", ge=0, le=64)
    seed: int = arg(0, "sampling seed (the reference uses seed + 1)", ge=0, le=2**32 - 1)
    reference_samples: str | None = arg(None, "an earlier evaluate.py metrics JSON: reuse the reference's samples beside it when they "
                                        "were drawn exactly as this call would draw them (same reference weights, prompts, seed, "
                                        "temperature, length, batch size, dtype, device, threads); otherwise sample the reference "
                                        "again", reads=True)
    batch_size: int = arg(64, "prompts per generate / scoring call", ge=1, le=2**20)
    out: str = arg("runs/eval.json", "metrics JSON; samples go beside it as <stem>.samples.jsonl")
    name: str | None = arg(None, "row label in the table (default: the policy path)")

# `--help` answers here, from Args alone: the imports below load torch and take seconds
answer_help(__name__, Args, description=__doc__.split("\n")[0])

import torch

from rlhf import tasks
from rlhf.checkpoint import load_model, weights_digest
from rlhf.run import run_cli, start_script
from rlhf.formats import data_format
from rlhf.data import read_json, read_jsonl, record_location, write_json, write_jsonl
from rlhf.device import peak_memory
from rlhf.evaluation import check_same_tokenizer, evaluate_policy
from rlhf.precision import autocast
from rlhf.sampling import check_prompts_fit


def fmt(m: dict, key: str, digits: int = 3) -> str:
    v = m.get(key)
    return "n/a" if v is None or v != v else f"{v:.{digits}f}"


def reference_key(args, prompts: list[str], max_new: int, dev) -> str:
    """A digest of everything that decides the reference's samples: its weights, the prompts, the seed, the
    temperature, the length, the batch size (the generator runs batch by batch), dtype, device and threads (rounding)."""
    what = {"weights": weights_digest(args.reference), "prompts": hashlib.sha256("\n".join(prompts).encode()).hexdigest(),
            "seed": args.seed + 1, "temperature": args.temperature, "max_new_tokens": max_new, "batch_size": args.batch_size,
            "dtype": args.dtype, "device": str(dev), "threads": torch.get_num_threads()}
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:16]


def reused_reference(path: str | None, key: str, prompts: list[str]) -> list[str] | None:
    """The reference texts of the evaluation whose metrics JSON is `path` when its reference_key is `key` (and its
    samples file holds one ref_response per prompt, in order); else None (said), and the caller samples them."""
    if path is None:
        return None
    metrics_path = Path(path)
    samples_path = metrics_path.with_name(metrics_path.stem + ".samples.jsonl")
    old = read_json(metrics_path)
    if old.get("reference_key") != key or not samples_path.exists():
        print(f"note: --reference-samples {path}: drawn otherwise (another reference, prompts, seed or setting); sampling the reference")
        return None
    try:  # written by evaluate.py itself (atomically); anything else is not reused
        rows = [json.loads(line) for line in samples_path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError, ValueError):
        rows = []
    texts = [r.get("ref_response") if isinstance(r, dict) else None for r in rows]
    if [r.get("prompt") if isinstance(r, dict) else None for r in rows] != prompts or any(not isinstance(t, str) for t in texts):
        print(f"note: --reference-samples {path}: {samples_path} does not hold one reference response per prompt; sampling the reference")
        return None
    print(f"reference samples: {len(texts)} reused from {samples_path}")
    return texts


def main(argv=None):
    # 1. arguments, seeding
    args = parse_args(Args, argv, description=__doc__.split("\n")[0])
    out = Path(args.out)
    samples_path = out.with_name(out.stem + ".samples.jsonl")
    data = Path(args.data)
    dev = start_script(args, writes=[out, samples_path],
                       reads=[("--data", data / "meta.json")] + ([] if args.prompts else [("--data", data / "prompts_eval.jsonl")]))
    name = args.name or args.policy

    # 2. models: the policy, its reference and the RM must share one tokenizer
    policy, tok, _ = load_model(args.policy, "policy")
    toks = {"policy": tok}
    ref = rm = None
    if args.reference is not None:
        ref, toks["reference"], _ = load_model(args.reference, "policy")
    if args.rm is not None:
        rm, toks["rm"], _ = load_model(args.rm, "rm")
    check_same_tokenizer(toks)
    for m in (policy, ref, rm):
        if m is not None:
            m.to(dev)
    if args.best_of_n > 1 and rm is None:
        raise ValueError(f"--best-of-n {args.best_of_n} keeps the sample the reward model prefers: pass --rm")

    # 3. prompts and the gold judge
    prompts_path = Path(args.prompts) if args.prompts else data / "prompts_eval.jsonl"
    rows = read_jsonl(prompts_path, "prompts", fmt=data_format(args))
    prompts = [r["prompt"] for r in rows][:args.n_eval]
    if not prompts:
        raise ValueError(f"{prompts_path} holds no prompts")
    if len(prompts) < args.n_eval:
        print(f"note: {prompts_path} holds {len(prompts)} prompts (fewer than --n-eval {args.n_eval}); using all")
    meta = read_json(data / "meta.json") if (data / "meta.json").exists() else None
    task = tasks.task_from_meta(meta)
    if task is None:
        print("no gold judge for this data (no meta.json): reporting RM-based figures only")
    else:  # prompts outside the task's grammar: left out of the gold figures, said up front
        tasks.known_rows(task, prompts, lambda i: record_location(prompts_path, i))
    longest = max(len(ids) for ids in tok.encode_prompts(prompts))
    max_new = args.max_new_tokens or min(96, policy.config.block_size - longest)
    check_prompts_fit(tok, prompts, policy.config.block_size, max(max_new, 1), prompts_path)  # names the file and line
    print(f"{len(prompts)} prompts from {prompts_path}, up to {max_new} new tokens, temperature {args.temperature}")

    # 4. evaluate: sample, score, compare with the reference (whose samples an earlier evaluation may already hold)
    ref_key = reference_key(args, prompts, max_new, dev) if ref is not None else None
    ref_texts = reused_reference(args.reference_samples, ref_key, prompts) if ref_key is not None else None
    with autocast(args.dtype, dev):
        metrics, samples = evaluate_policy(policy, tok, prompts, task=task, ref=ref, rm=rm, max_new_tokens=max_new,
                                           temperature=args.temperature, seed=args.seed, batch_size=args.batch_size,
                                           best_of_n=args.best_of_n, rm_pairs=args.onpolicy_samples, ref_texts=ref_texts)
    metrics.update(peak_memory(dev))

    # 5. write the samples, then the metrics (each atomically; a metrics file on disk means a finished evaluation)
    key = "gold" if task is not None else ("proxy" if rm is not None else None)
    if key == "gold" and "gold/left_out" in metrics:  # some prompts have no gold score: rows without rewards
        key = None
    write_jsonl(samples_path, [{"prompt": s["prompt"], "responses": [s["response"]],
                                "rewards": [s[key]] if key else [],
                                **{k: v for k, v in s.items() if k not in ("prompt", "response")}} for s in samples],
                kind="samples" if key else None)
    write_json(out, {"name": name, "args": config_to_dict(args), "max_new_tokens": max_new,
                     **({"reference_key": ref_key} if ref_key else {}), **metrics})
    for s in samples[:3]:
        print(f"  prompt: {s['prompt']}\n  response: {s['response']}\n  "
              + "  ".join(f"{k} {s[k]:.3f}" for k in ("gold", "proxy", "kl") if k in s))
    print(f"wrote {out} and {samples_path}")

    # 6. the table row
    win = "n/a"
    if "gold/win_rate" in metrics:
        win = f"{fmt(metrics, 'gold/win_rate')} [{fmt(metrics, 'gold/win_rate_lo')}, {fmt(metrics, 'gold/win_rate_hi')}]"
    acc = fmt(metrics, "rm/onpolicy_gold_accuracy")
    if "rm/onpolicy_pairs" in metrics:
        acc += f" (n={metrics['rm/onpolicy_pairs']})"
    kl = fmt(metrics, "objective/kl") + (" (analytic)" if args.best_of_n > 1 else "")
    print("| name | gold win rate vs reference (95% CI) | gold | proxy | KL | length | RM on-policy acc |")
    print("|---|---|---|---|---|---|---|")
    print(f"| {name} | {win} | {fmt(metrics, 'gold/score')} | {fmt(metrics, 'proxy/score')} | {kl} | "
          f"{fmt(metrics, 'eval/length', 1)} | {acc} |")


if __name__ == "__main__":
    run_cli(main)
