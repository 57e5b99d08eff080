"""Throughput benchmark: SFT and RM training (tokens/s, MFU), generation with and without the KV cache, one
PPO iteration split by stage, peak memory; with --compare-hf, HF transformers' `generate` on the same shape.

Usage:
    python bench.py --shape peer                    # the peer-comparison shape (README, performance) (fp32)
    python bench.py --shape peer --dtype bf16       # bf16 autocast (log-probs, ratios and losses stay fp32)
    python bench.py --shape peer --compare-hf       # needs: pip install -r requirements-bench.txt
    python bench.py --shape gpt2 --device cuda --dtype bf16    # GPT-2 small (124M) on a GPU
    python bench.py --shape tiny --repeats 1        # a few seconds: what tests/test_bench.py runs
    python bench.py --shape peer --stages gen_cache --profile gen_cache   # where a decode step's time goes

Every stage calls the code the scripts run: rlhf.model.generate, rlhf.sft.sft_loss, ScalarModel.score with
rlhf.reward.bradley_terry_loss, rlhf.sampling.response_logprobs / response_values, rlhf.ppo and
rlhf.ppo_update.ppo_update (train_ppo.py's update). Models have random weights and are never checkpointed.
No row emits EOS (eos_id -1 is never sampled), so every row generates all --new tokens, as HF's
min_new_tokens does. The PPO iteration: batch = the generation batch, 1 epoch, 1 minibatch (the trl peer's setting); its RM stage scores token ids directly, so train_ppo.py's decode and re-encode of texts is not timed.

FLOPs, with N the parameters that multiply (the position table and the embedding lookup do not; the tied
token embedding counts once, as the output projection of the policy; the RM has no output projection):
    training    (6 * N + 12 * n_layer * n_embd * T) * tokens      T = sequence length (nanoGPT / PaLM
                appendix B: the attention scores and weighted sum, full T x T counted though causal needs half)
    generation  2 * N * new tokens                                  (attention ignored)
MFU = achieved FLOP/s / peak. On CPU the peak is measured in the same run: a 2048 x 2048 matmul on all
threads (the better of 1024 and 2048), fp32 or bf16 as --dtype. On GPU it is the datasheet dense bf16 (or tf32 for fp32) figure.

Timing: one warm-up round, then --repeats rounds; each round runs every stage once in turn (interleaved), so
a slow period of the machine hits all stages alike. Figures are medians with [min-max] over the rounds.
"""
from __future__ import annotations

import json
import resource
import statistics
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from rlhf.config import arg, parse_args
from rlhf.device import clock, cpu_threads, keep_freed_memory, resolve_device
from rlhf.model import GPT, GPTConfig, ScalarModel, generate
from rlhf.optim import make_optimizer
from rlhf.ppo import gae, shaped_rewards, whiten
from rlhf.ppo_update import Batch, PPOHParams, ppo_update
from rlhf.precision import DTYPES, autocast, maybe_compile
from rlhf.reward import bradley_terry_loss
from rlhf.sampling import response_logprobs, response_values
from rlhf.sft import sft_loss

# batch: prompts per generate call and PPO rollouts; prompt/new: tokens; sft_len: SFT sequence length;
# rm_pairs of rm_len tokens a side per RM step
SHAPES = {
    "tiny": dict(vocab_size=512, n_layer=2, n_head=2, n_embd=64, block_size=64,
                 batch=4, prompt=8, new=8, sft_batch=4, sft_len=16, rm_pairs=4, rm_len=16),
    "peer": dict(vocab_size=8192, n_layer=4, n_head=4, n_embd=256, block_size=128,  # the shape of the HF / trl peer figures
                 batch=32, prompt=32, new=64, sft_batch=32, sft_len=96, rm_pairs=32, rm_len=98),
    "gpt2": dict(vocab_size=50257, n_layer=12, n_head=12, n_embd=768, block_size=1024,  # GPT-2 small, 124M
                 batch=32, prompt=128, new=128, sft_batch=16, sft_len=512, rm_pairs=16, rm_len=256),
}
# measured on a quiet 2-core CPU of this kind (fp32), an earlier session (README, performance): HF transformers 5.23 and trl 1.12 / 1.16
PEER_REFERENCE = {"gen_cache": 2035.0, "rm": 30.9, "ppo/total": 3.48, "ppo/rollout": 0.87, "ppo/rm": 0.16,
                  "ppo/ref": 0.24, "ppo/value": 0.16}
# datasheet dense TFLOP/s (bf16, tf32), matched against torch.cuda.get_device_name()
PEAK_TFLOPS = {"H200": (989.0, 494.0), "H100 SXM": (989.0, 494.0), "H100 PCIe": (756.0, 378.0), "H100": (989.0, 494.0),
               "A100": (312.0, 156.0), "L4": (121.0, 60.0), "A10": (125.0, 62.5)}


STAGES = ["peak", "sft", "rm", "gen_cache", "gen_nocache", "ppo", "hf"]


@dataclass
class Args:
    shape: str = arg("peer", "model and batch sizes", choices=list(SHAPES))
    device: str = arg("cpu", "where to run", choices=["cpu", "cuda"])
    dtype: str = arg("fp32", "bf16: autocast on the forwards (log-probs, ratios and losses stay fp32)", choices=list(DTYPES))
    compile: bool = arg(False, "torch.compile the transformer blocks (rlhf.precision)")
    grad_checkpoint: bool = arg(False, "activation checkpointing of the blocks in every training forward (memory against time)")
    repeats: int = arg(5, "timed rounds after one warm-up round", ge=1, le=10**6)
    stages: str = arg("all", f"comma-separated subset of: {','.join(STAGES)} (hf only with --compare-hf)")
    compare_hf: bool = arg(False, "also time HF transformers' GPT-2 generate on the same batch")
    threads: int = arg(0, "torch CPU threads (0: the CPUs this process may use, rlhf.device.cpu_threads)", ge=0, le=4096)
    seed: int = arg(0, "fixes the random weights, inputs and sampling", ge=0, le=2**32 - 1)
    json: str | None = arg(None, "also write every figure to this JSON file")
    profile: str | None = arg(None, "after the timed rounds, run this stage once more under torch.profiler and print where its "
                              "time goes (the ops by self time)", choices=STAGES[1:-1])

    def __post_init__(self):  # parse_args turns a ValueError here into argparse's status-2 message
        allowed = STAGES if self.compare_hf else STAGES[:-1]
        chosen = allowed if self.stages == "all" else self.stages.split(",")
        bad = [x for x in chosen if x not in allowed]
        if bad:
            raise ValueError(f"--stages must be a comma-separated subset of: {', '.join(allowed)} (got {','.join(bad)!r})")
        if self.device == "cuda" and not torch.cuda.is_available():
            raise ValueError("--device cuda: no CUDA GPU is visible to torch")
        self.stages = [x for x in allowed if x in chosen]


def parse():
    return parse_args(Args, description=__doc__.split("\n")[0])


def matmul_peak(device, dtype, now):
    """FLOP/s of large square matmuls on all threads, the best of two sizes: the practical ceiling that MFU is
    measured against on CPU."""
    dt = torch.bfloat16 if dtype == "bf16" else torch.float32
    best = 0.0
    for n in ((1024, 2048) if device == "cpu" else (8192,)):
        a, b = torch.randn(n, n, device=device, dtype=dt), torch.randn(n, n, device=device, dtype=dt)
        a @ b
        t, k = now(), 4
        for _ in range(k):
            a @ b
        best = max(best, 2 * n ** 3 * k / (now() - t))
    return best


@torch.inference_mode()
def generate_recompute(model, prompt_ids, prompt_mask, new, generator):
    """generate() without the KV cache: every step runs the whole sequence so far through the model (and, as
    generate's prefill does, projects only the last position onto the vocabulary). The same Gumbel-max sampling
    at temperature 1, so the two differ only in the cache."""
    ids, mask = prompt_ids, prompt_mask
    for _ in range(new):
        logits = F.linear(model.hidden(ids, mask)[:, -1], model.wte.weight).float()  # (B, V)
        u = torch.rand(logits.shape, generator=generator, device=logits.device).clamp_(1e-10, 1.0 - 1e-7)
        tok = (logits - torch.log(-torch.log(u))).argmax(-1, keepdim=True)  # (B, 1)
        ids, mask = torch.cat([ids, tok], 1), torch.cat([mask, torch.ones_like(mask[:, :1])], 1)
    return ids[:, prompt_ids.shape[1]:]


def build(a, s):
    """Models, optimisers and batches for every stage; returns {stage: callable} where each callable runs the
    stage once and returns its time (or a dict of sub-stage times for the PPO iteration)."""
    torch.manual_seed(a.seed)
    dev, now = a.device, clock(a.device)
    resolve_device(dev)  # on CUDA: TF32 matmuls allowed, as in the training scripts
    cfg = GPTConfig(vocab_size=s["vocab_size"], block_size=s["block_size"], n_layer=s["n_layer"], n_head=s["n_head"], n_embd=s["n_embd"])
    policy, ref, sft_model = GPT(cfg).to(dev), GPT(cfg).to(dev).eval(), GPT(cfg).to(dev)
    rm, value, rm_train = (ScalarModel(cfg).to(dev) for _ in range(3))
    for m in (policy, ref, sft_model, rm, value, rm_train):
        maybe_compile(m, a.compile)
        (m.gpt if isinstance(m, ScalarModel) else m).grad_checkpoint = a.grad_checkpoint
    rm.eval()
    opt = {k: make_optimizer(m.named_parameters(), 1e-5) for k, m in
           (("policy", policy), ("value", value), ("sft", sft_model), ("rm", rm_train))}
    g = torch.Generator(device=dev).manual_seed(a.seed)
    B, V = s["batch"], s["vocab_size"]
    q = torch.randint(0, V, (B, s["prompt"]), device=dev, generator=g)
    qm = torch.ones(B, s["prompt"], device=dev)
    sft_ids = torch.randint(0, V, (s["sft_batch"], s["sft_len"]), device=dev, generator=g)
    sft_mask = torch.ones_like(sft_ids, dtype=torch.float)
    rm_ids = torch.randint(0, V, (2 * s["rm_pairs"], s["rm_len"]), device=dev, generator=g)  # chosen rows, then rejected
    rm_mask = torch.ones_like(rm_ids, dtype=torch.float)

    def sft_step():
        t = now()
        sft_model.train()
        with autocast(a.dtype, dev):
            logits = sft_model(sft_ids, sft_mask)
        loss = sft_loss(logits, sft_ids, sft_mask)
        opt["sft"].zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(sft_model.parameters(), 1.0)
        opt["sft"].step()
        return now() - t

    def rm_step():
        t = now()
        rm_train.train()
        with autocast(a.dtype, dev):
            r = rm_train.score(rm_ids, rm_mask)  # (2P,), one forward for chosen and rejected
        loss = bradley_terry_loss(r[:s["rm_pairs"]], r[s["rm_pairs"]:])
        opt["rm"].zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(rm_train.parameters(), 1.0)
        opt["rm"].step()
        return now() - t

    def gen(cache: bool):
        def run():
            ref.eval()
            t = now()
            with autocast(a.dtype, dev):
                if cache:
                    generate(ref, q, qm, s["new"], eos_id=-1, pad_id=0, temperature=1.0, generator=g)
                else:
                    generate_recompute(ref, q, qm, s["new"], g)
            return now() - t
        return run

    def ppo_iteration():
        """Stages 1-5 of train_ppo.py: rollout, RM score, reference / value / policy forwards, advantages, update."""
        t = {"start": now()}
        policy.eval()
        with autocast(a.dtype, dev):
            r, rmask = generate(policy, q, qm, s["new"], eos_id=-1, pad_id=0, temperature=1.0, generator=g)
        t["rollout"] = now()
        with torch.no_grad(), autocast(a.dtype, dev):
            score = rm.score(torch.cat([q, r], 1), torch.cat([qm, rmask], 1))  # (B,)
            t["rm"] = now()
            ref_logprobs = response_logprobs(ref, q, qm, r, rmask)
            t["ref"] = now()
            old_values = response_values(value, q, qm, r, rmask)
            t["value"] = now()
            old_logprobs = response_logprobs(policy, q, qm, r, rmask)
            t["policy"] = now()
        rewards = shaped_rewards(score, old_logprobs, ref_logprobs, rmask, kl_coef=0.05)
        advantages, returns = gae(rewards, old_values, rmask, gamma=1.0, lam=0.95)
        advantages = whiten(advantages, rmask)
        t["advantages"] = now()
        ppo_update(policy, value, [opt["policy"], opt["value"]], Batch(q, qm, r, rmask, old_logprobs, old_values, advantages, returns),
                   PPOHParams(ppo_epochs=1, minibatches=1, dtype=a.dtype), torch.Generator(device=dev).manual_seed(a.seed))
        t["update"] = now()
        keys = list(t)
        out = {k: t[k] - t[p] for p, k in zip(keys, keys[1:])}
        out["total"] = t["update"] - t["start"]
        return out

    def peak():
        t = now()
        flops = matmul_peak(dev, a.dtype, now)
        return {"seconds": now() - t, "flops": flops}

    stages = {"peak": peak, "sft": sft_step, "rm": rm_step, "gen_cache": gen(True), "gen_nocache": gen(False), "ppo": ppo_iteration}
    if "hf" in a.stages:
        stages["hf"] = hf_generate(a, s, q, qm, now)
    n_policy = policy.num_params() - policy.wpe.weight.numel()
    n_rm = sum(p.numel() for p in rm.parameters()) - rm.gpt.wpe.weight.numel() - rm.gpt.wte.weight.numel()
    return stages, n_policy, n_rm


def hf_generate(a, s, q, qm, now):
    """The same shape as an HF GPT-2 with random weights; a callable timing its sampling `generate` (KV cache on)."""
    try:
        import transformers
    except ImportError:
        raise SystemExit("error: --compare-hf needs transformers (optional): pip install -r requirements-bench.txt")
    cfg = transformers.GPT2Config(vocab_size=s["vocab_size"], n_positions=s["block_size"], n_embd=s["n_embd"],
                                  n_layer=s["n_layer"], n_head=s["n_head"], resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                                  bos_token_id=0, eos_token_id=0)
    model = transformers.GPT2LMHeadModel(cfg).to(a.device).eval()
    print(f"HF transformers {transformers.__version__}: GPT2LMHeadModel, {model.num_parameters() / 1e6:.2f}M parameters, "
          f"attention {model.config._attn_implementation}")
    qm_long = qm.long()

    def run():
        t = now()
        with torch.inference_mode(), autocast(a.dtype, a.device):
            model.generate(input_ids=q, attention_mask=qm_long, do_sample=True, top_k=0, top_p=1.0, temperature=1.0,
                           max_new_tokens=s["new"], min_new_tokens=s["new"], use_cache=True, pad_token_id=0, eos_token_id=None)
        return now() - t
    return run


def profile_table(stage, name: str, cuda: bool, rows: int = 15) -> str:
    """One more run of `stage` under torch.profiler: the ops that took the most self time (what bounds the stage)."""
    from torch.profiler import ProfilerActivity, profile
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=acts) as prof:
        stage()
    key = "self_cuda_time_total" if cuda else "self_cpu_time_total"
    return f"\nprofile of one {name} stage (torch.profiler, ops by self time):\n" + prof.key_averages().table(sort_by=key, row_limit=rows)


def fmt(x: float) -> str:
    """Three significant figures, thousands separated."""
    return f"{x:,.0f}" if abs(x) >= 100 else f"{x:.3g}"


def summary(xs):
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs)}


def main():
    a = parse()
    torch.set_num_threads(a.threads or cpu_threads())
    kept = keep_freed_memory()  # as every script does (rlhf.run); RLHF_KEEP_FREED_MEMORY=0 for glibc's defaults
    s = SHAPES[a.shape]
    stages, n_policy, n_rm = build(a, s)
    gpu = torch.cuda.get_device_name() if a.device == "cuda" else None
    print(f"shape {a.shape}: {s['n_layer']} layers, {s['n_embd']} wide, {s['n_head']} heads, vocab {s['vocab_size']}, "
          f"{(n_policy + s['block_size'] * s['n_embd']) / 1e6:.2f}M parameters; device {gpu or 'cpu'} "
          f"({torch.get_num_threads()} threads), {a.dtype}{', compiled' if a.compile else ''}, {a.repeats} repeats"
          f"{'' if a.device == 'cuda' else '; freed memory kept for reuse' if kept else '; glibc malloc defaults'}")
    times = {k: [] for k in a.stages}
    for rnd in range(a.repeats + 1):  # round 0 warms up (allocations, compilation) and is dropped
        for k in a.stages:
            if a.device == "cuda":
                torch.cuda.reset_peak_memory_stats()
            x = stages[k]()
            if rnd > 0:
                times[k].append(x)
            if a.device == "cuda" and rnd == a.repeats:
                times.setdefault("memory", {})[k] = torch.cuda.max_memory_allocated() / 2**20

    if a.profile:
        print(profile_table(stages[a.profile], a.profile, gpu is not None))

    res, rows = {}, []  # rows: (key, label, median, min, max, unit, note)
    if "peak" in times:
        if gpu is None:
            peak = summary([x["flops"] for x in times["peak"]])
            rows.append(("peak", "matmul peak (measured)", *(peak[k] / 1e9 for k in ("median", "min", "max")), "GFLOP/s", a.dtype))
            peak_flops = peak["median"]
        else:
            name = next((k for k in PEAK_TFLOPS if k in gpu), None)
            peak_flops = PEAK_TFLOPS[name][0 if a.dtype == "bf16" else 1] * 1e12 if name else float("nan")
            rows.append(("peak", "peak (datasheet)", peak_flops / 1e9, peak_flops / 1e9, peak_flops / 1e9, "GFLOP/s", f"{name or 'unknown GPU'}, dense {'bf16' if a.dtype == 'bf16' else 'tf32'}"))
        res["peak_flops"] = peak_flops
    else:
        peak_flops = float("nan")

    def rate(key, work, unit, flop_per_unit=None, label=None):
        """A throughput row: work units per second from the stage's times (median of rates, min-max)."""
        per_s = [work / x for x in times[key]]
        sm = summary(per_s)
        note = ""
        if flop_per_unit is not None:
            mfu = sm["median"] * flop_per_unit / peak_flops
            note = f"MFU {100 * mfu:.0f}%"
            res[f"{key}/mfu"] = mfu
        rows.append((key, label or key, sm["median"], sm["min"], sm["max"], unit, note))
        res[key] = sm
        return sm

    L, D = s["n_layer"], s["n_embd"]
    if "sft" in times:
        tokens = s["sft_batch"] * s["sft_len"]
        rate("sft", tokens, "tok/s", 6 * n_policy + 12 * L * D * s["sft_len"], "SFT train")
    if "rm" in times:
        tokens = 2 * s["rm_pairs"] * s["rm_len"]
        rate("rm", s["rm_pairs"], "pairs/s", (6 * n_rm + 12 * L * D * s["rm_len"]) * tokens / s["rm_pairs"], "RM train")
        res["rm_tokens_per_s"] = res["rm"]["median"] * tokens / s["rm_pairs"]
    new = s["batch"] * s["new"]
    for key, label in (("gen_cache", "generate, KV cache"), ("gen_nocache", "generate, recompute"), ("hf", "HF generate")):
        if key in times:
            rate(key, new, "tok/s", 2 * n_policy, label)
    if "gen_cache" in res and "gen_nocache" in res:
        res["kv_cache_speedup"] = res["gen_cache"]["median"] / res["gen_nocache"]["median"]
        rows.append(("kv_cache_speedup", "KV cache speed-up", res["kv_cache_speedup"], None, None, "x", "medians"))
    if "gen_cache" in res and "hf" in res:
        res["vs_hf"] = res["gen_cache"]["median"] / res["hf"]["median"]
        rows.append(("vs_hf", "ours / HF generate", res["vs_hf"], None, None, "x", "medians, same run"))
    if "ppo" in times:
        for k in times["ppo"][0]:
            sm = summary([x[k] for x in times["ppo"]])
            res[f"ppo/{k}"] = sm
            rows.append((f"ppo/{k}", f"PPO iteration: {k}", sm["median"], sm["min"], sm["max"], "s", ""))
    if a.device == "cuda":
        for k, mib in times.get("memory", {}).items():
            rows.append(("memory", f"peak memory: {k}", mib, None, None, "MiB", "torch.cuda.max_memory_allocated"))
        res["memory_mib"] = times.get("memory", {})
    else:
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        rows.append(("memory", "peak memory (process RSS)", rss, None, None, "MiB", "all stages together"))
        res["peak_rss_mib"] = rss

    reference = PEER_REFERENCE if a.shape == "peer" and a.device == "cpu" else {}
    print(f"\n{'stage':<30} {'median':>10} {'[min - max]':>23}  {'unit':<8} {'peer ref':>10} {'ratio':>6}  note")
    for key, name, med, lo, hi, unit, note in rows:
        ref_txt, ratio = "", ""
        if key in reference:
            ref_txt = fmt(reference[key])
            ratio = f"{(reference[key] / med if unit == 's' else med / reference[key]):.2f}x"  # > 1: ours faster
            res[f"{key}/vs_peer_ref"] = float(ratio[:-1])
        span = f"[{fmt(lo)} - {fmt(hi)}]" if lo is not None else ""
        print(f"{name:<30} {fmt(med):>10} {span:>23}  {unit:<8} {ref_txt:>10} {ratio:>6}  {note}")
    if reference:
        print("peer ref: HF transformers 5.23 generate, trl 1.12 PPO (1 epoch, 1 minibatch), trl 1.16 RewardTrainer, "
              "on a quiet machine of this kind; ratio > 1: ours faster")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"args": {k: v for k, v in vars(a).items()}, "shape": s, "device_name": gpu or "cpu", "freed_memory_kept": kept,
                       "threads": torch.get_num_threads(), "n_policy": n_policy, "n_rm": n_rm, "results": res,
                       "raw": {k: v for k, v in times.items()}}, f, indent=1)


if __name__ == "__main__":
    main()
