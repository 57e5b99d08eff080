"""PPO from the SFT policy against a reward model (or the gold judge), with a KL penalty to the SFT reference.

Usage:
    python train_ppo.py --preset tiny --data data/story --sft runs/sft/ckpt --rm runs/rm/ckpt --out runs/ppo
    python train_ppo.py --preset tiny --data data/story --sft runs/sft/ckpt --reward gold --out runs/ppo_gold   # oracle control
    python train_ppo.py ... --resume

Each iteration: 1. sample responses, 2. score them, 3. log-probs of policy and reference and values,
4. KL-shaped rewards and GAE, 5. PPO epochs over minibatches, 6. log (and every --eval-every
iterations: gold score, proxy score and KL on held-out prompts: the over-optimisation curve).
By default the value model is a separate network that starts from the RM (`--value-init rm`, the default
when PPO scores with an RM) or from the SFT trunk with a fresh head (`--value-init sft`, the default with
--reward gold). `--value-head shared` puts a fresh value head on the policy trunk instead: one forward gives
log-probs and values, and the value loss (weighted by --vf-coef) trains the shared trunk too.

Departures from the papers (see README): the reward is read once at EOS; a response that never
emits EOS gets --missing-eos-penalty as its score when set (AlpacaFarm's fixed negative reward).

Data-parallel (`torchrun --nproc_per_node N train_ppo.py ...`, rlhf/distributed.py): each rank samples
--batch-size rollouts of its own prompts with its own noise, so an iteration sees N * batch_size rollouts;
reward and advantage whitening and the KL controller use statistics over all ranks, gradients are
averaged over ranks, other logged statistics are means of per-rank values; rank 0 alone runs the held-out
evaluation, prints and writes checkpoints and metrics.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from rlhf.config import DataArgs, PackArgs, TrainArgs, answer_help, arg, config_to_dict, parse_args


@dataclass
class Args(DataArgs, TrainArgs, PackArgs):
    data: str = arg("data/story", "directory from prepare_data.py (prompts_rl.jsonl, prompts_eval.jsonl, meta.json)", reads=True)
    sft: str = arg("runs/sft/ckpt", "SFT checkpoint: the initial policy and the frozen reference", reads=True)
    rm: str | None = arg("runs/rm/ckpt", "reward model checkpoint (unused with --reward gold)", reads=True)
    reward: str = arg("rm", "what PPO maximises: the RM score, the RM score minus its offline baseline (contrastive), or the gold judge (oracle control)", choices=["rm", "contrastive", "gold"])
    baselines: str | None = arg(None, "--reward contrastive: samples JSONL from sample_baselines.py covering every RL prompt", reads=True)
    baseline_agg: str = arg("mean", "--reward contrastive: how the k baseline rewards make one baseline", choices=["mean", "median", "max", "min"])
    rl_prompts: str | None = arg(None, "a prompts JSONL to use instead of DATA/prompts_rl.jsonl (the rollouts' prompts)", reads=True)
    eval_prompts: str | None = arg(None, "a prompts JSONL to use instead of DATA/prompts_eval.jsonl (held-out evaluations)", reads=True)
    out: str = arg("runs/ppo", "run directory")
    preset: str = arg("tiny", "preset; explicit flags override it")
    seed: int = arg(0, "fixes prompts order, sampling and minibatches", ge=0, le=2**32 - 1)
    steps: int = arg(100, "PPO iterations", ge=1, le=10**9)
    batch_size: int = arg(64, "rollouts per iteration (per rank under torchrun)", ge=2, le=2**20)
    minibatches: int = arg(2, "minibatches per PPO epoch (must divide batch_size)", ge=1, le=2**20)
    ppo_epochs: int = arg(2, "passes over each batch of rollouts", ge=1, le=10**4)
    lr: float = arg(3e-5, "policy learning rate", gt=0.0)
    vf_lr: float = arg(1e-4, "value model learning rate", gt=0.0)
    lr_schedule: str = arg("constant", "learning-rate schedule", choices=["constant", "linear", "cosine"])
    kl_coef: float = arg(0.05, "initial KL coefficient beta: of the per-token penalty in the reward (gae, rloo), of the KL term in the loss (grpo)", ge=0.0)
    kl_estimator: str = arg("k1", "per-token KL estimator in the reward", choices=["k1", "k2", "k3", "abs"])
    clamp_kl: bool = arg(False, "clamp the per-token KL at 0 from below (AlpacaFarm)")
    kl_target: float | None = arg(None, "adaptive KL: target KL in nats per sequence (None: fixed kl_coef)", gt=0.0)
    kl_horizon: int = arg(10000, "adaptive KL horizon in rollouts", ge=1, le=10**12)
    whiten_rewards: bool = arg(False, "scale (not shift) the shaped rewards to unit variance")
    whiten_advantages: bool = arg(True, "whiten advantages per batch (--advantage gae; RLOO and GRPO use theirs as they are)")
    cliprange: float = arg(0.2, "policy ratio clip", gt=0.0)
    cliprange_value: float = arg(0.2, "value clip", gt=0.0)
    vf_coef: float = arg(0.1, "value loss weight", ge=0.0)
    gamma: float = arg(1.0, "discount", ge=0.0, le=1.0)
    lam: float = arg(0.95, "GAE lambda", ge=0.0, le=1.0)
    temperature: float = arg(1.0, "rollout sampling temperature", gt=0.0)
    max_new_tokens: int = arg(96, "longest response", ge=1, le=65536)
    missing_eos_penalty: float | None = arg(None, "score given to responses that never emit EOS (None: keep their score)")
    reward_clip: float | None = arg(None, "clip scores to [-c, c] (None: no clipping)", gt=0.0)
    advantage: str = arg("gae", "advantage estimator: GAE with a critic (PPO); RLOO's leave-one-out mean or GRPO's group mean "
                         "and std over the --group-size samples of each prompt, with no critic (rlhf.ppo)", choices=["gae", "rloo", "grpo"])
    group_size: int = arg(1, "samples of each prompt in an iteration's --batch-size rollouts (k; rloo and grpo need 2 or more)", ge=1, le=4096)
    value_head: str = arg("separate", "value function: a separate model, or a head on the policy trunk", choices=["separate", "shared"])
    value_init: str = arg("auto", "separate value model's start: the RM, or the SFT trunk with a fresh head (auto: the RM when PPO scores with one, else SFT)", choices=["auto", "rm", "sft"])
    value_shift: bool = arg(True, "--reward contrastive with the value model from the RM: start it on the scale of the return it "
                            "predicts, its output lowered by the mean baseline over the RL prompts (--no-value-shift: the RM's "
                            "raw scale, which value clipping lets move by --cliprange-value an iteration)")
    grad_clip: float = arg(1.0, "clip each model's gradient norm (0: off)", ge=0.0)
    eval_every: int = arg(10, "held-out evaluation every N iterations", ge=1)
    n_eval: int = arg(100, "held-out prompts per evaluation", ge=1, le=10**7)
    onpolicy_samples: int = arg(4, "each evaluation also scores the RM's gold accuracy on all C(n, 2) pairs of n policy samples "
                                "per held-out prompt (rm/onpolicy_gold_accuracy; 0: off)", ge=0, le=64)
    first_rm: str | None = arg(None, "another RM scored on the same on-policy pairs (rm_first/onpolicy_gold_accuracy): an RLP "
                               "run's first RM", reads=True)
    sample_every: int = arg(10, "print one rollout every N iterations", ge=1)
    ckpt_every: int = arg(20, "save a resumable checkpoint every N iterations", ge=1)
    resume: bool = arg(False, "continue the run in --out from its checkpoint")
    overwrite: bool = arg(False, "replace a run already in --out")


    def __post_init__(self):  # flag relations, checked before any work (parse_args makes them usage errors, exit 2)
        if self.advantage != "gae" and self.group_size < 2:
            raise ValueError(f"--advantage {self.advantage} needs --group-size 2 or more (got {self.group_size}): its baseline is "
                             "the other samples of the same prompt")
        if self.onpolicy_samples == 1:
            raise ValueError("--onpolicy-samples 1 makes no pair: use 0 (off) or 2 or more")
        if self.batch_size % self.group_size:
            raise ValueError(f"--group-size {self.group_size} must divide --batch-size {self.batch_size}")
        if self.advantage != "gae" and self.whiten_rewards:
            raise ValueError(f"--whiten-rewards scales GAE's per-token rewards; --advantage {self.advantage} has none "
                             "(its advantages come from each prompt's group)")
        if self.advantage != "gae" and self.reward == "contrastive":
            raise ValueError(f"--reward contrastive with --advantage {self.advantage}: the group baseline already subtracts a "
                             "mean over the same prompt, so the offline baseline would cancel; use --advantage gae")


PRESETS = {"smoke": dict(steps=40, batch_size=32, minibatches=2, ppo_epochs=2, lr=3e-4, vf_lr=3e-4, max_new_tokens=16,
                         eval_every=20, n_eval=32, ckpt_every=20, sample_every=20),
           "tiny": dict(),
           # one GPU, the story task's small policy (unmeasured): 4x the rollouts, 4x the iterations of tiny
           "small": dict(steps=400, batch_size=256, minibatches=4, lr=1e-5, vf_lr=5e-5, eval_every=25, n_eval=400, ckpt_every=50,
                         sample_every=25),
           # a GPT-2-format policy on your own prompts: Ziegler et al. 2019 (arXiv 1909.08593; openai/lm-human-preferences
           # launch.py, GPT-2 124M, the sentiment task): lr 1e-5, 512 rollouts an iteration, 4 PPO epochs, KL coefficient
           # 0.15 adapted towards 6 nats (horizon 10,000), sampling temperature 0.7, 24-token responses; minibatches 8
           # here (theirs: 1) so that one GPU holds a minibatch's activations
           "gpt2": dict(lr=1e-5, vf_lr=1e-5, batch_size=512, minibatches=8, ppo_epochs=4, kl_coef=0.15, kl_target=6.0,
                        kl_horizon=10000, temperature=0.7, max_new_tokens=24, eval_every=10, ckpt_every=10),
           "alpacafarm": dict(kl_coef=0.0067, clamp_kl=True, whiten_rewards=True, whiten_advantages=True, cliprange=0.2,
                              cliprange_value=0.2, vf_coef=0.1, gamma=1.0, lam=1.0, missing_eos_penalty=-10.0)}

# `--help` answers here, from Args alone: the imports below load torch and take seconds
answer_help(__name__, Args, presets=PRESETS, description=__doc__.split("\n")[0])

import torch
from tqdm import tqdm

from rlhf import distributed, tasks
from rlhf.checkpoint import last_good, load_model
from rlhf.formats import data_format
from rlhf.data import read_json, read_jsonl, record_location
from rlhf.device import check_memory, clock, oom_guard, peak_memory
from rlhf.evaluation import check_same_tokenizer, evaluate_policy, rollout_mechanisms
from rlhf.model import ScalarModel
from rlhf.optim import lr_factor, make_optimizer, set_lr
from rlhf.ppo import (AdaptiveKLController, FixedKLController, gae, grpo_advantages, masked_var, rloo_advantages, sequence_kl,
                       shaped_rewards, whiten)
from rlhf.ppo_update import Batch, PPOHParams, ppo_update
from rlhf.precision import autocast, maybe_compile
from rlhf.resume import resume, save_step
from rlhf.reward import aggregate_baselines, baseline_rows, baseline_variance, contrastive_reward, load_baselines, score_rollout, weak_rm_warning
from rlhf.run import MetricsWriter, run_cli, run_finished, start_run
from rlhf.sampling import check_prompts_fit, response_logprobs, response_values, sample


def main(argv=None):
    # 0. arguments, run directory, seeding
    args = parse_args(Args, argv, presets=PRESETS, description=__doc__.split("\n")[0])
    if args.batch_size % args.minibatches:
        raise ValueError(f"--minibatches {args.minibatches} must divide --batch-size {args.batch_size}")
    value_init = resolve_value_init(args)
    out, resuming, dev = start_run(args)
    ckpt = out / "ckpt"
    if resuming and run_finished(out, ckpt, args.steps):
        return

    # data: RL prompts, eval prompts, the gold judge when the data came from a built-in task
    data = Path(args.data)
    rl_prompts, eval_prompts, task, baselines = load_data(args, data)

    # models: policy and frozen reference from SFT, frozen RM, the value function and the optimisers
    policy, ref, rm, tok = load_models(args, value_init, data, rl_prompts, eval_prompts)
    first_rm = None
    if args.first_rm is not None:  # scored beside the RM on the evaluations' on-policy pairs, never trained against
        first_rm, first_tok, _ = load_model(args.first_rm, "rm")
        check_same_tokenizer({"policy": tok, "--first-rm": first_tok})
        first_rm.eval().requires_grad_(False)
    longest = max(len(q) for q in tok.encode_prompts(rl_prompts)) + args.max_new_tokens  # a rollout's longest row
    check_memory(policy.config.training_bytes(args.batch_size // args.minibatches, longest), dev, "--batch-size / --minibatches")
    for m in (policy, ref, rm, first_rm):
        if m is not None:
            m.to(dev)
    policy.grad_checkpoint = args.grad_checkpoint
    shift = initial_value_shift(args, value_init, baselines, rl_prompts)
    value, optimizers = value_function(args, value_init, policy, rm, dev, shift)
    for m in (policy, ref, rm, value):  # --compile: the blocks of every model, in place (rlhf.precision)
        if m is not None:
            maybe_compile(m, args.compile)
    kl_ctl = AdaptiveKLController(args.kl_coef, args.kl_target, args.kl_horizon) if args.kl_target else FixedKLController(args.kl_coef)
    modules = {"policy": policy} | ({"value": value} if value is not None else {})
    start = 0
    if resuming:
        state = resume(ckpt, modules, optimizers)
        kl_ctl.value, start = state["kl_coef"], state["step"]
        print(f"resumed from {ckpt} at iteration {start}")
    distributed.broadcast_params(*modules.values())  # rank 0's weights (and fresh value head) on every rank
    ckpt_config = {"model": policy.config.to_dict(), "args": config_to_dict(args), "tokenizer": tok.fingerprint, "stage": "ppo"}
    hp = PPOHParams(cliprange=args.cliprange, cliprange_value=args.cliprange_value, vf_coef=args.vf_coef, ppo_epochs=args.ppo_epochs,
                    minibatches=args.minibatches, temperature=args.temperature, grad_clip=args.grad_clip, dtype=args.dtype,
                    pack=args.pack)
    P, k = args.batch_size // args.group_size, args.group_size  # prompts per iteration, samples per prompt

    def score(roll):
        prompts, texts, stopped = roll.prompts, roll.texts, roll.stopped
        if args.reward == "gold":  # the judge runs on the CPU; the scores then join the rollouts
            s = torch.tensor([task.gold(p, t) for p, t in zip(prompts, texts)])
        else:  # the RM reads the sampled ids themselves
            s = score_rollout(rm, tok, roll)
        if args.reward == "contrastive":  # before any penalty, clipping or whitening (Shen et al. 2024)
            s = contrastive_reward(s, torch.stack([baselines[p] for p in prompts]), args.baseline_agg)
        s = s.to(dev)
        if args.missing_eos_penalty is not None:
            s = torch.where(stopped, s, torch.full_like(s, args.missing_eos_penalty))
        if args.reward_clip is not None:
            s = s.clamp(-args.reward_clip, args.reward_clip)
        return s

    def evaluate(ref_texts):
        """Held-out gold / proxy / KL; the reference is sampled once and its texts reused afterwards."""
        with autocast(args.dtype, dev):  # as evaluate.py samples
            m, samples = evaluate_policy(policy, tok, eval_prompts, task=task, ref=ref, rm=rm, max_new_tokens=args.max_new_tokens,
                                         seed=args.seed, ref_texts=ref_texts, rm_pairs=args.onpolicy_samples,
                                         other_rms={"rm_first": first_rm} if first_rm is not None else None)
        return m, [s.get("ref_response") for s in samples] if ref_texts is None else ref_texts

    metrics = MetricsWriter(out / "metrics.jsonl", resume_step=start if resuming else None,
                            tensorboard=out / "tensorboard" if args.tensorboard else None)
    ref_texts = None
    if start == 0 and distributed.is_main():
        m, ref_texts = evaluate(None)
        if shift:
            m["value/init_shift"] = shift
        if baselines is not None and min(len(b) for b in baselines.values()) >= 2:  # what the baseline carries
            m["baseline/between_prompt_var"], m["baseline/within_prompt_var_over_k"] = baseline_variance(
                baseline_rows(baselines, rl_prompts))
        metrics.log(0, m)
        print("before PPO: " + ", ".join(f"{k} {v:.3f}" for k, v in m.items() if isinstance(v, float)))
    B = args.batch_size
    pbar = tqdm(range(start, args.steps), desc="ppo", initial=start, total=args.steps, disable=not distributed.is_main())
    now, step = clock(dev), start
    with oom_guard(lambda: f"PPO iteration {step + 1}", f"--batch-size {B} or raise --minibatches {args.minibatches}", ckpt):
        for step in pbar:
            t = {"start": now()}
            # prompts, sampling and minibatches of this iteration (each rank its own stream; rank 0's is the single-process one)
            g = torch.Generator(dev).manual_seed(distributed.rank_seed(args.seed * 1000003 + step))
            for o in optimizers.values():
                set_lr(o, lr_factor(step, args.steps, 0, args.lr_schedule))

            # 1. sample responses
            policy.eval()
            prompts = [rl_prompts[i] for i in torch.randint(len(rl_prompts), (P,), generator=g, device=dev).tolist() for _ in range(k)]
            with autocast(args.dtype, dev):
                roll = sample(policy, tok, prompts, args.max_new_tokens, temperature=args.temperature, generator=g, batch_size=B)
            q, qm, r, rmask = roll.query_ids, roll.query_mask, roll.response_ids, roll.response_mask
            t["rollout"] = now()

            # 2. score
            with autocast(args.dtype, dev):
                scores = score(roll)  # (B,)
            t["score"] = now()

            # 3. log-probs of the sampled tokens under policy and reference; values
            with torch.no_grad(), autocast(args.dtype, dev):
                if value is None:  # no critic (rloo, grpo)
                    old_logprobs = response_logprobs(policy, q, qm, r, rmask, args.temperature, pack=args.pack)  # (B, Tr)
                    old_values = torch.zeros_like(old_logprobs)
                elif isinstance(value, ScalarModel):
                    old_logprobs = response_logprobs(policy, q, qm, r, rmask, args.temperature, pack=args.pack)  # (B, Tr)
                    old_values = response_values(value, q, qm, r, rmask, pack=args.pack)  # (B, Tr)
                else:  # a head on the policy trunk: one forward of the policy gives both
                    old_logprobs, old_values = response_logprobs(policy, q, qm, r, rmask, args.temperature, value_head=value,
                                                                 pack=args.pack)
                ref_logprobs = response_logprobs(ref, q, qm, r, rmask, args.temperature, pack=args.pack)
            t["forward"] = now()

            # 4. KL-shaped rewards and GAE (whitening statistics over every rank's rollouts under torchrun)
            if args.advantage == "gae":
                rewards = shaped_rewards(scores, old_logprobs, ref_logprobs, rmask, kl_ctl.value, args.kl_estimator, args.clamp_kl)
                if args.whiten_rewards:
                    rewards = whiten(rewards, rmask, shift_mean=False, reduce=distributed.all_reduce_sum)
                advantages, returns = gae(rewards, old_values, rmask, args.gamma, args.lam)
            else:  # one advantage per sequence from its prompt's group, on every response token (no critic)
                rewards, advantages, returns = group_advantages(args, scores, old_logprobs, ref_logprobs, rmask, kl_ctl.value, P, k)
            adv_var = masked_var(advantages, rmask).item()
            mech = rollout_mechanisms(args.reward == "contrastive", task, roll, scores, advantages,
                                      old_values if value is not None else None, returns, rmask)
            if args.whiten_advantages and args.advantage == "gae":
                advantages = whiten(advantages, rmask, reduce=distributed.all_reduce_sum)
            for name, x in (("policy log-probs", old_logprobs), ("reference log-probs", ref_logprobs), ("values", old_values),
                            ("scores", scores), ("rewards", rewards), ("advantages", advantages)):
                if not torch.isfinite(x).all():
                    raise SystemExit(f"error: non-finite {name} at iteration {step + 1}; {last_good(ckpt)}")

            # 5. PPO epochs over minibatches (rlhf.ppo_update: the clipped losses of rlhf.ppo)
            batch = Batch(q, qm, r, rmask, old_logprobs, old_values, advantages, returns, ref_logprobs)
            try:
                stats = ppo_update(policy, value, list(optimizers.values()), batch,
                                   replace(hp, kl_loss_coef=kl_ctl.value if args.advantage == "grpo" else 0.0), g)
            except FloatingPointError:
                raise SystemExit(f"error: non-finite PPO loss at iteration {step + 1}; {last_good(ckpt)}")
            t["update"] = now()

            # 6. log
            seq_kl = sequence_kl(old_logprobs, ref_logprobs, rmask)  # (B,)
            kl = distributed.all_reduce_mean(seq_kl.mean()).item()  # over all ranks' rollouts
            kl_ctl.update(kl, B * distributed.world_size())
            log = {"objective/score": scores.mean().item(), "objective/kl": kl, "objective/kl_coef": kl_ctl.value, **stats}
            if value is not None:
                log["ppo/val/var_explained"] = 1 - masked_var(returns - old_values, rmask).item() / max(masked_var(returns, rmask).item(), 1e-8)
            log |= {"ppo/advantages/var": adv_var, "ppo/length": rmask.sum(1).mean().item(),
                   "ppo/stopped": roll.stopped.float().mean().item(), **mech}
            stages = ["start", "rollout", "score", "forward", "update"]
            log.update({f"time/{b}": t[b] - t[a] for a, b in zip(stages, stages[1:])})
            log = distributed.all_reduce_mean_dict(log)  # means over ranks (unchanged in one process)
            if ((step + 1) % args.eval_every == 0 or step + 1 == args.steps) and distributed.is_main():
                m, ref_texts = evaluate(ref_texts)
                log.update(m)
                tqdm.write(f"iter {step + 1:4d} | score {log['objective/score']:.3f} | kl {kl:.2f} | " +
                           " | ".join(f"{k} {m[k]:.3f}" for k in ("gold/score", "proxy/score", "objective/kl") if k in m))
            if step + 1 == args.steps:
                log.update(peak_memory(dev))  # {} on the CPU
            metrics.log(step + 1, log)
            pbar.set_postfix(score=f"{log['objective/score']:.3f}", kl=f"{kl:.2f}")
            if (step + 1) % args.sample_every == 0:
                tqdm.write(f"  prompt: {prompts[0]}\n  response: {roll.texts[0]}\n  score {scores[0].item():.3f}, KL {seq_kl[0].item():.2f}")
            if ((step + 1) % args.ckpt_every == 0 or step + 1 == args.steps) and distributed.is_main():
                save_step(ckpt, step + 1, modules, optimizers, ckpt_config, tok.to_json(), extra={"kl_coef": kl_ctl.value})
    metrics.close()
    if dev.type == "cuda":
        print(f"peak GPU memory {peak_memory(dev)['memory/peak_gpu_mib']:,.0f} MiB")


def load_data(args, data: Path):
    """-> (RL prompts, eval prompts, the task (None without meta.json), prompt -> baseline rewards or None)."""
    rl_path, eval_path = prompt_paths(args, data)
    rl_prompts = [r["prompt"] for r in read_jsonl(rl_path, "prompts", fmt=data_format(args))]
    eval_prompts = [r["prompt"] for r in read_jsonl(eval_path, "prompts", fmt=data_format(args))][:args.n_eval]
    meta = read_json(data / "meta.json") if (data / "meta.json").exists() else None
    task = tasks.task_from_meta(meta)
    baselines = load_baselines(args.baselines, rl_prompts) if args.reward == "contrastive" else None
    if args.reward == "gold" and task is None:
        raise ValueError(f"--reward gold needs a gold judge: {data} has no meta.json from prepare_data.py")
    if args.reward == "gold" and (bad := next((i for i, p in enumerate(rl_prompts) if not task.knows(p)), None)) is not None:
        raise ValueError(f"--reward gold: {record_location(rl_path, bad)}: the prompt is outside the "
                         f"{task.name} task's grammar, so the gold judge cannot score it: {rl_prompts[bad][:60]!r}")
    if task is not None:  # the held-out evaluations leave such prompts out of their gold figures
        tasks.known_rows(task, eval_prompts, lambda i: record_location(eval_path, i))
    return rl_prompts, eval_prompts, task, baselines


def prompt_paths(args, data: Path) -> tuple[Path, Path]:
    """The RL and the held-out prompts files: --rl-prompts / --eval-prompts, else DATA's."""
    return (Path(args.rl_prompts) if args.rl_prompts else data / "prompts_rl.jsonl",
            Path(args.eval_prompts) if args.eval_prompts else data / "prompts_eval.jsonl")


def load_models(args, value_init: str, data: Path, rl_prompts, eval_prompts):
    """-> (policy, frozen reference, frozen RM or None, tokenizer); every prompt checked against the context."""
    policy, tok, _ = load_model(args.sft, "policy")
    for path, ps in zip(prompt_paths(args, data), (rl_prompts, eval_prompts)):  # fail now, not at iteration 37
        check_prompts_fit(tok, ps, policy.config.block_size, args.max_new_tokens, path)
    ref, ref_tok, _ = load_model(args.sft, "policy")
    ref.eval().requires_grad_(False)
    rm = None
    if args.reward != "gold" or (value_init == "rm" and args.advantage == "gae"):
        if args.rm is None:
            raise ValueError("--rm is required with --reward rm or contrastive, or --value-init rm")
        rm, rm_tok, rm_cfg = load_model(args.rm, "rm")
        warning = weak_rm_warning(rm_cfg.get("diagnostics", {}))
        if warning:
            print(f"\n{'!' * 78}\nWARNING: reward model {args.rm}: {warning}\n{'!' * 78}\n")
        check_same_tokenizer({"policy": tok, "reference": ref_tok, "rm": rm_tok})
        rm.eval().requires_grad_(False)
    return policy, ref, rm, tok


def resolve_value_init(args) -> str:
    """--value-init auto: the RM when PPO scores with one and the value model is separate, else the SFT trunk.
    An explicit choice that cannot hold is an error, never silently replaced."""
    if args.value_head == "shared":
        if args.value_init == "rm":
            raise ValueError("--value-init rm needs --value-head separate (a shared value head sits on the policy trunk)")
        return "sft"
    if args.value_init == "auto":
        return "sft" if args.reward == "gold" else "rm"
    return args.value_init


def group_advantages(args, scores, logprobs, ref_logprobs, mask, kl_coef: float, P: int, k: int):
    """--advantage rloo | grpo: the sequence advantage of each rollout from the k samples of its prompt (rows are
    prompt-major: prompt i's samples are rows i*k .. i*k+k-1), on every response token.
        rloo: r_i = score_i - kl_coef * sum_t kl_t (the KL-penalised sequence reward), A = rloo_advantages(r)
        grpo: r_i = score_i (the KL is a loss term, rlhf.ppo.kl_loss),                 A = grpo_advantages(r)
    -> (sequence rewards r (B,), advantages (B, Tr), returns: zeros (B, Tr), there being no critic)."""
    if args.advantage == "rloo":
        seq = shaped_rewards(scores, logprobs, ref_logprobs, mask, kl_coef, args.kl_estimator, args.clamp_kl).sum(1)  # (B,)
        adv = rloo_advantages(seq.view(P, k)).view(-1)
    else:
        seq = scores
        adv = grpo_advantages(scores.view(P, k).float()).view(-1)
    return seq, adv[:, None] * mask, torch.zeros_like(logprobs)


def initial_value_shift(args, value_init: str, baselines, rl_prompts: list[str]) -> float:
    """What the value model from the RM starts lowered by: under --reward contrastive (and --value-shift) the mean,
    over the distinct RL prompts, of their aggregated baselines g({r(x, y_j)}), so that it starts near the contrastive
    return r(x, y) - g(...) instead of the raw RM score (each RM has its own offset); else 0."""
    if not (args.reward == "contrastive" and value_init == "rm" and args.value_shift and args.advantage == "gae"
            and args.value_head == "separate"):
        return 0.0
    return aggregate_baselines(baseline_rows(baselines, rl_prompts), args.baseline_agg).mean().item()


def value_function(args, value_init: str, policy, rm, dev, shift: float = 0.0):
    """The value function and the optimisers -> (value, {"policy": opt[, "value": vopt]}); value None (no critic) for
    --advantage rloo and grpo. shift: the value model from the RM predicts (head - shift_RM) / scale - shift
    (initial_value_shift), folded into its shift buffer.

    shared: a fresh zero-initialised linear head on the policy's hidden states, trained by the policy's
    optimiser in a group of its own (lr --vf-lr); separate: a ScalarModel from the RM or from the SFT trunk
    with a fresh head, with its own optimiser.
    """
    if args.advantage != "gae":
        return None, {"policy": make_optimizer(policy.named_parameters(), args.lr)}
    if args.value_head == "shared":
        value = torch.nn.Linear(policy.config.n_embd, 1)
        torch.nn.init.zeros_(value.weight), torch.nn.init.zeros_(value.bias)
        value.to(dev)
        return value, {"policy": make_optimizer([{"named": policy.named_parameters(), "lr": args.lr},
                                                 {"named": value.named_parameters(), "lr": args.vf_lr}], args.lr)}
    if value_init == "rm":
        value, _, _ = load_model(args.rm, "rm", into=ScalarModel(rm.config))
        if shift:
            value.shift += shift * value.scale
            print(f"value model: the RM's output lowered by the mean baseline {shift:.4f} (--no-value-shift: not)")
    else:
        value = ScalarModel(policy.config)
        value.gpt.load_state_dict(policy.state_dict())
    value.to(dev)
    value.gpt.grad_checkpoint = args.grad_checkpoint
    return value, {"policy": make_optimizer(policy.named_parameters(), args.lr), "value": make_optimizer(value.named_parameters(), args.vf_lr)}


if __name__ == "__main__":
    run_cli(main)
