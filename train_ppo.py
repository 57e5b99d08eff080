"""PPO from the SFT policy against a reward model (or the gold judge), with a KL penalty to the SFT reference.

Usage:
    python train_ppo.py --preset tiny --data data/story --sft runs/sft/ckpt --rm runs/rm/ckpt --out runs/ppo
    python train_ppo.py --preset tiny --data data/story --sft runs/sft/ckpt --reward gold --out runs/ppo_gold   # oracle control
    python train_ppo.py ... --resume

Each iteration: 1. sample responses, 2. score them, 3. log-probs of policy and reference and values,
4. KL-shaped rewards and GAE, 5. PPO epochs over minibatches, 6. log (and every --eval-every
iterations: gold score, proxy score and KL on held-out prompts: the over-optimisation curve).
By default the value model is a separate network that starts from the RM (`--value-init rm`) or from
the SFT trunk with a fresh head (`--value-init sft`, forced by --reward gold). `--value-head shared` puts
a fresh value head on the policy trunk instead: one forward gives log-probs and values, and the value
loss (weighted by --vf-coef) trains the shared trunk too.

Departures from the papers (see README): the reward is read once at EOS; a response that never
emits EOS gets --missing-eos-penalty as its score when set (AlpacaFarm's fixed negative reward).

Data-parallel (`torchrun --nproc_per_node N train_ppo.py ...`, rlhf/distributed.py): each rank samples
--batch-size rollouts of its own prompts with its own noise, so an iteration sees N * batch_size rollouts;
reward and advantage whitening and the KL controller use statistics over all ranks, gradients are
averaged over ranks, other logged statistics are means of per-rank values; rank 0 alone runs the held-out
evaluation, prints and writes checkpoints and metrics.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from rlhf import distributed, tasks
from rlhf.checkpoint import (check_state_dict, drop_previous, find_companion, last_good, load_checkpoint, load_model, load_train_state,
                             rng_state, save_checkpoint, save_companion, set_rng_state)
from rlhf.config import MetricsWriter, config_to_dict, parse_args, run_cli, start_run
from rlhf.data import read_json, read_jsonl
from rlhf.evaluation import check_same_tokenizer, evaluate_policy
from rlhf.model import ScalarModel
from rlhf.optim import lr_factor, make_optimizer, set_lr
from rlhf.ppo_update import ppo_update
from rlhf.precision import autocast, maybe_compile
from rlhf.ppo import AdaptiveKLController, FixedKLController, gae, masked_var, shaped_rewards
from rlhf.reward import contrastive_reward, score_texts, weak_rm_warning
from rlhf.sampling import check_prompts_fit, response_logprobs, response_values, sample


@dataclass
class Args:
    data: str = field(default="data/story", metadata={"help": "directory from prepare_data.py (prompts_rl.jsonl, prompts_eval.jsonl, meta.json)"})
    sft: str = field(default="runs/sft/ckpt", metadata={"help": "SFT checkpoint: the initial policy and the frozen reference"})
    rm: str | None = field(default="runs/rm/ckpt", metadata={"help": "reward model checkpoint (unused with --reward gold)"})
    reward: str = field(default="rm", metadata={"help": "what PPO maximises: the RM score, the RM score minus its offline baseline (contrastive), or the gold judge (oracle control)", "choices": ["rm", "contrastive", "gold"]})
    baselines: str | None = field(default=None, metadata={"help": "--reward contrastive: samples JSONL from sample_baselines.py covering every RL prompt"})
    baseline_agg: str = field(default="mean", metadata={"help": "--reward contrastive: how the k baseline rewards make one baseline", "choices": ["mean", "median", "max", "min"]})
    out: str = field(default="runs/ppo", metadata={"help": "run directory"})
    preset: str = field(default="tiny", metadata={"help": "preset; explicit flags override it"})
    seed: int = field(default=0, metadata={"help": "fixes prompts order, sampling and minibatches"})
    steps: int = field(default=100, metadata={"help": "PPO iterations", "min": 1})
    batch_size: int = field(default=64, metadata={"help": "rollouts per iteration (per rank under torchrun)", "min": 2})
    minibatches: int = field(default=2, metadata={"help": "minibatches per PPO epoch (must divide batch_size)", "min": 1})
    ppo_epochs: int = field(default=2, metadata={"help": "passes over each batch of rollouts", "min": 1})
    lr: float = field(default=3e-5, metadata={"help": "policy learning rate", "min": 0.0, "min_exclusive": True})
    vf_lr: float = field(default=1e-4, metadata={"help": "value model learning rate", "min": 0.0, "min_exclusive": True})
    lr_schedule: str = field(default="constant", metadata={"help": "learning-rate schedule", "choices": ["constant", "linear", "cosine"]})
    kl_coef: float = field(default=0.05, metadata={"help": "initial KL penalty coefficient beta", "min": 0.0})
    kl_estimator: str = field(default="k1", metadata={"help": "per-token KL estimator in the reward", "choices": ["k1", "k2", "k3", "abs"]})
    clamp_kl: bool = field(default=False, metadata={"help": "clamp the per-token KL at 0 from below (AlpacaFarm)"})
    kl_target: float | None = field(default=None, metadata={"help": "adaptive KL: target KL in nats per sequence (None: fixed kl_coef)", "min": 0.0, "min_exclusive": True})
    kl_horizon: int = field(default=10000, metadata={"help": "adaptive KL horizon in rollouts", "min": 1})
    whiten_rewards: bool = field(default=False, metadata={"help": "scale (not shift) the shaped rewards to unit variance"})
    whiten_advantages: bool = field(default=True, metadata={"help": "whiten advantages per batch"})
    cliprange: float = field(default=0.2, metadata={"help": "policy ratio clip", "min": 0.0, "min_exclusive": True})
    cliprange_value: float = field(default=0.2, metadata={"help": "value clip", "min": 0.0, "min_exclusive": True})
    vf_coef: float = field(default=0.1, metadata={"help": "value loss weight", "min": 0.0})
    gamma: float = field(default=1.0, metadata={"help": "discount", "min": 0.0, "max": 1.0})
    lam: float = field(default=0.95, metadata={"help": "GAE lambda", "min": 0.0, "max": 1.0})
    temperature: float = field(default=1.0, metadata={"help": "rollout sampling temperature", "min": 0.0, "min_exclusive": True})
    max_new_tokens: int = field(default=96, metadata={"help": "longest response", "min": 1})
    missing_eos_penalty: float | None = field(default=None, metadata={"help": "score given to responses that never emit EOS (None: keep their score)"})
    reward_clip: float | None = field(default=None, metadata={"help": "clip scores to [-c, c] (None: no clipping)", "min": 0.0, "min_exclusive": True})
    value_head: str = field(default="separate", metadata={"help": "value function: a separate model, or a head on the policy trunk", "choices": ["separate", "shared"]})
    value_init: str = field(default="rm", metadata={"help": "value model start: the RM, or the SFT trunk with a fresh head", "choices": ["rm", "sft"]})
    grad_clip: float = field(default=1.0, metadata={"help": "clip each model's gradient norm (0: off)", "min": 0.0})
    eval_every: int = field(default=10, metadata={"help": "held-out evaluation every N iterations", "min": 1})
    n_eval: int = field(default=100, metadata={"help": "held-out prompts per evaluation", "min": 1})
    sample_every: int = field(default=10, metadata={"help": "print one rollout every N iterations", "min": 1})
    ckpt_every: int = field(default=20, metadata={"help": "save a resumable checkpoint every N iterations", "min": 1})
    threads: int = field(default=0, metadata={"help": "torch CPU threads (0: torch's default)", "min": 0})
    dtype: str = field(default="fp32", metadata={"help": "forward passes in fp32, or under bf16 autocast (log-probs, ratios, losses stay fp32)", "choices": ["fp32", "bf16"]})
    compile: bool = field(default=False, metadata={"help": "torch.compile the transformer blocks (slow first iteration; see README performance)"})
    resume: bool = field(default=False, metadata={"help": "continue the run in --out from its checkpoint"})
    overwrite: bool = field(default=False, metadata={"help": "replace a run already in --out"})


PRESETS = {"smoke": dict(steps=40, batch_size=32, minibatches=2, ppo_epochs=2, lr=3e-4, vf_lr=3e-4, max_new_tokens=16,
                         eval_every=20, n_eval=32, ckpt_every=20, sample_every=20),
           "tiny": dict(),
           "alpacafarm": dict(kl_coef=0.0067, clamp_kl=True, whiten_rewards=True, whiten_advantages=True, cliprange=0.2,
                              cliprange_value=0.2, vf_coef=0.1, gamma=1.0, lam=1.0, value_init="rm", missing_eos_penalty=-10.0)}


def main(argv=None):
    # 0. arguments, run directory, seeding
    args = parse_args(Args, argv, presets=PRESETS, description=__doc__.split("\n")[0])
    if args.batch_size % args.minibatches:
        raise ValueError(f"--minibatches {args.minibatches} must divide --batch-size {args.batch_size}")
    if args.reward == "gold" or args.value_head == "shared":
        args.value_init = "sft"  # no RM to start from, or the trunk is the policy's
    out, resuming = start_run(args)
    ckpt, vckpt = out / "ckpt", out / "value_ckpt"

    # data: RL prompts, eval prompts, the gold judge when the data came from a built-in task
    data = Path(args.data)
    rl_prompts = [r["prompt"] for r in read_jsonl(data / "prompts_rl.jsonl", "prompts")]
    eval_prompts = [r["prompt"] for r in read_jsonl(data / "prompts_eval.jsonl", "prompts")][:args.n_eval]
    meta = read_json(data / "meta.json") if (data / "meta.json").exists() else None
    task = tasks.task_from_meta(meta)
    baselines = load_baselines(args.baselines, rl_prompts) if args.reward == "contrastive" else None
    if args.reward == "gold" and task is None:
        raise ValueError(f"--reward gold needs a gold judge: {data} has no meta.json from prepare_data.py")

    # models: policy and frozen reference from SFT, frozen RM, value model from the RM or SFT
    policy, tok, _ = load_model(args.sft, "policy")
    for name, ps in (("prompts_rl.jsonl", rl_prompts), ("prompts_eval.jsonl", eval_prompts)):  # fail now, not at iteration 37
        check_prompts_fit(tok, ps, policy.config.block_size, args.max_new_tokens, data / name)
    ref, ref_tok, _ = load_model(args.sft, "policy")
    ref.eval().requires_grad_(False)
    rm = None
    if args.reward != "gold" or args.value_init == "rm":
        if args.rm is None:
            raise ValueError("--rm is required with --reward rm or contrastive, or --value-init rm")
        rm, rm_tok, rm_cfg = load_model(args.rm, "rm")
        warning = weak_rm_warning(rm_cfg.get("diagnostics", {}))
        if warning:
            print(f"\n{'!' * 78}\nWARNING: reward model {args.rm}: {warning}\n{'!' * 78}\n")
        check_same_tokenizer({"policy": tok, "reference": ref_tok, "rm": rm_tok})
        rm.eval().requires_grad_(False)
    shared = args.value_head == "shared"
    if shared:  # a fresh linear head on the policy's hidden states, trained with the policy's optimiser
        value = torch.nn.Linear(policy.config.n_embd, 1)
        torch.nn.init.zeros_(value.weight), torch.nn.init.zeros_(value.bias)
        opt = make_optimizer([{"named": policy.named_parameters(), "lr": args.lr},
                              {"named": value.named_parameters(), "lr": args.vf_lr}], args.lr)
    elif args.value_init == "rm":
        value, _, _ = load_model(args.rm, "rm", into=ScalarModel(rm.config))
    else:
        value = ScalarModel(policy.config)
        value.gpt.load_state_dict(policy.state_dict())
    if not shared:
        opt = make_optimizer(policy.named_parameters(), args.lr)
    vopt = None if shared else make_optimizer(value.named_parameters(), args.vf_lr)
    optimizers = [o for o in (opt, vopt) if o is not None]
    for m in (policy, ref, rm, value):  # --compile: the blocks of every model, in place (rlhf.precision)
        if m is not None:
            maybe_compile(m, args.compile)
    kl_ctl = AdaptiveKLController(args.kl_coef, args.kl_target, args.kl_horizon) if args.kl_target else FixedKLController(args.kl_coef)
    start = 0
    if resuming:
        load_model(ckpt, "policy", into=policy)
        state = load_train_state(ckpt, opt)
        vat = find_companion(vckpt, state["step"])  # value_ckpt, or value_ckpt.prev after a crash between the two saves
        vstate_dict, _ = load_checkpoint(vat, expected_kind="value")
        check_state_dict(vstate_dict, value, vat)
        value.load_state_dict(vstate_dict)
        load_train_state(vat, vopt)
        set_rng_state(state["rng"])
        kl_ctl.value, start = state["kl_coef"], state["step"]
        print(f"resumed from {ckpt} at iteration {start}")
    distributed.broadcast_params(policy, value)  # rank 0's weights (and fresh value head) on every rank
    ckpt_config = {"model": policy.config.to_dict(), "args": config_to_dict(args), "tokenizer": tok.fingerprint, "stage": "ppo"}

    def save(step: int):
        if not distributed.is_main():
            return
        train_state = {"step": step, "rng": rng_state(), "kl_coef": kl_ctl.value}
        save_companion(vckpt, value.state_dict(), ckpt_config, kind="value", tokenizer_json=tok.to_json(), optimizer=vopt, train_state=train_state)
        save_checkpoint(ckpt, policy.state_dict(), ckpt_config, kind="policy", tokenizer_json=tok.to_json(), optimizer=opt, train_state=train_state)
        drop_previous(vckpt)  # the policy checkpoint is the commit point: until here value_ckpt.prev matches it

    def score(prompts, texts, stopped):
        if args.reward == "gold":
            s = torch.tensor([task.gold(p, t) for p, t in zip(prompts, texts)])
        else:
            s = score_texts(rm, tok, prompts, texts)
        if args.reward == "contrastive":  # before any penalty, clipping or whitening (PAPERS.md §1)
            s = contrastive_reward(s, torch.stack([baselines[p] for p in prompts]), args.baseline_agg)
        if args.missing_eos_penalty is not None:
            s = torch.where(stopped, s, torch.full_like(s, args.missing_eos_penalty))
        if args.reward_clip is not None:
            s = s.clamp(-args.reward_clip, args.reward_clip)
        return s

    def evaluate(ref_texts):
        """Held-out gold / proxy / KL; the reference is sampled once and its texts reused afterwards."""
        m, samples = evaluate_policy(policy, tok, eval_prompts, task=task, ref=ref, rm=rm, max_new_tokens=args.max_new_tokens,
                                     seed=args.seed, ref_texts=ref_texts, rm_pairs=False)
        return m, [s.get("ref_response") for s in samples] if ref_texts is None else ref_texts

    metrics = MetricsWriter(out / "metrics.jsonl", resume_step=start if resuming else None)
    ref_texts = None
    if start == 0 and distributed.is_main():
        m, ref_texts = evaluate(None)
        metrics.log(0, m)
        print("before PPO: " + ", ".join(f"{k} {v:.3f}" for k, v in m.items() if isinstance(v, float)))
    B = args.batch_size
    pbar = tqdm(range(start, args.steps), desc="ppo", initial=start, total=args.steps, disable=not distributed.is_main())
    for step in pbar:
        t = {"start": time.time()}
        # prompts, sampling and minibatches of this iteration (each rank its own stream; rank 0's is the single-process one)
        g = torch.Generator().manual_seed(distributed.rank_seed(args.seed * 1000003 + step))
        lr_f = lr_factor(step, args.steps, 0, args.lr_schedule)
        for o in optimizers:
            set_lr(o, lr_f)

        # 1. sample responses
        policy.eval()
        prompts = [rl_prompts[i] for i in torch.randint(len(rl_prompts), (B,), generator=g).tolist()]
        with autocast(args.dtype, policy.wte.weight.device):
            roll = sample(policy, tok, prompts, args.max_new_tokens, temperature=args.temperature, generator=g, batch_size=B)
        q, qm, r, rmask = roll.query_ids, roll.query_mask, roll.response_ids, roll.response_mask
        t["rollout"] = time.time()

        # 2. score
        with autocast(args.dtype, policy.wte.weight.device):
            scores = score(prompts, roll.texts, roll.stopped)  # (B,)
        t["score"] = time.time()

        # 3. log-probs of the sampled tokens under policy and reference; values
        with torch.no_grad(), autocast(args.dtype, policy.wte.weight.device):
            if shared:  # one forward of the policy gives both
                old_logprobs, old_values = response_logprobs(policy, q, qm, r, rmask, args.temperature, value_head=value)
            else:
                old_logprobs = response_logprobs(policy, q, qm, r, rmask, args.temperature)  # (B, Tr)
                old_values = response_values(value, q, qm, r, rmask)  # (B, Tr)
            ref_logprobs = response_logprobs(ref, q, qm, r, rmask, args.temperature)
        t["forward"] = time.time()

        # 4. KL-shaped rewards and GAE
        rewards = shaped_rewards(scores, old_logprobs, ref_logprobs, rmask, kl_ctl.value, args.kl_estimator, args.clamp_kl)
        if args.whiten_rewards:
            rewards = distributed.whiten(rewards, rmask, shift_mean=False)  # rlhf.ppo.whiten over all ranks' rollouts
        advantages, returns = gae(rewards, old_values, rmask, args.gamma, args.lam)
        adv_var = masked_var(advantages, rmask).item()
        if args.whiten_advantages:
            advantages = distributed.whiten(advantages, rmask)
        for name, x in (("policy log-probs", old_logprobs), ("reference log-probs", ref_logprobs), ("values", old_values),
                        ("scores", scores), ("rewards", rewards), ("advantages", advantages)):
            if not torch.isfinite(x).all():
                raise SystemExit(f"error: non-finite {name} at iteration {step + 1}; {last_good(ckpt)}")

        # 5. PPO epochs over minibatches (rlhf.ppo_update: the clipped losses of rlhf.ppo, one forward per model per minibatch)
        try:
            stats = ppo_update(policy, value, optimizers, q, qm, r, rmask, old_logprobs, old_values, advantages, returns,
                               ppo_epochs=args.ppo_epochs, minibatches=args.minibatches, cliprange=args.cliprange,
                               cliprange_value=args.cliprange_value, vf_coef=args.vf_coef, temperature=args.temperature,
                               grad_clip=args.grad_clip, generator=g, shared=shared, dtype=args.dtype,
                               grad_hook=distributed.all_reduce_grads)
        except FloatingPointError:
            raise SystemExit(f"error: non-finite PPO loss at iteration {step + 1}; {last_good(ckpt)}")
        t["update"] = time.time()

        # 6. log
        kl = distributed.all_reduce_mean(((old_logprobs - ref_logprobs) * rmask).sum(1).mean()).item()  # sequence KL (k1), all rollouts
        kl_ctl.update(kl, B * distributed.world_size())
        mean = lambda k: sum(s[k] for s in stats) / len(stats)  # noqa: E731
        explained = 1 - masked_var(returns - old_values, rmask).item() / max(masked_var(returns, rmask).item(), 1e-8)
        log = {"objective/score": scores.mean().item(), "objective/kl": kl, "objective/kl_coef": kl_ctl.value,
               "objective/entropy": mean("ent"), "ppo/loss/policy": mean("pg"), "ppo/loss/value": mean("vf"),
               "ppo/policy/clipfrac": mean("clip"), "ppo/policy/approxkl": mean("akl"), "ppo/val/clipfrac": mean("vclip"),
               "ppo/val/var_explained": explained, "ppo/advantages/var": adv_var, "ppo/length": rmask.sum(1).mean().item(),
               "ppo/stopped": roll.stopped.float().mean().item()}
        stages = ["start", "rollout", "score", "forward", "update"]
        log.update({f"time/{b}": t[b] - t[a] for a, b in zip(stages, stages[1:])})
        log = distributed.all_reduce_mean_dict(log)  # means over ranks (unchanged in one process)
        if ((step + 1) % args.eval_every == 0 or step + 1 == args.steps) and distributed.is_main():
            m, ref_texts = evaluate(ref_texts)
            log.update(m)
            tqdm.write(f"iter {step + 1:4d} | score {log['objective/score']:.3f} | kl {kl:.2f} | " +
                       " | ".join(f"{k} {m[k]:.3f}" for k in ("gold/score", "proxy/score", "objective/kl") if k in m))
        metrics.log(step + 1, log)
        pbar.set_postfix(score=f"{log['objective/score']:.3f}", kl=f"{kl:.2f}")
        if (step + 1) % args.sample_every == 0:
            tqdm.write(f"  prompt: {prompts[0]}\n  response: {roll.texts[0]}\n  score {scores[0].item():.3f}, "
                       f"KL {((old_logprobs[0] - ref_logprobs[0]) * rmask[0]).sum().item():.2f}")
        if (step + 1) % args.ckpt_every == 0 or step + 1 == args.steps:
            save(step + 1)
    metrics.close()


def load_baselines(path, rl_prompts: list[str]) -> dict[str, torch.Tensor]:
    """prompt -> (k,) RM rewards of its offline baseline samples; every RL prompt must have them."""
    if path is None:
        raise ValueError("--reward contrastive needs --baselines FILE (written by sample_baselines.py)")
    table = {r["prompt"]: torch.tensor(r["rewards"], dtype=torch.float32) for r in read_jsonl(path, "samples")}
    missing = [p for p in dict.fromkeys(rl_prompts) if p not in table]
    if missing:
        raise ValueError(f"{path} has no baselines for {len(missing)} RL prompt(s), e.g. {missing[0]!r}; "
                         "run sample_baselines.py on the same prompts file")
    ks = {len(v) for v in table.values()}
    if len(ks) > 1:
        raise ValueError(f"{path}: prompts have different numbers of baseline rewards ({sorted(ks)}); k must be the same")
    return table


if __name__ == "__main__":
    run_cli(main)
