"""Evaluation of a policy: gold win rate against a reference policy, gold and proxy scores, KL to the
reference, length, and the reward model's accuracy on the policy's own samples (README, "Evaluation").

Used by evaluate.py (one row of the results table) and by train_ppo.py every eval_every steps (the
over-optimisation curve: gold and proxy against KL).

Shapes: B batch (prompts), P prompts, n samples per prompt (best-of-n), Tq query length, Tr response length.
"""
from __future__ import annotations

import contextlib
import math

import torch

from rlhf.metrics import bootstrap_ci, few_caveat, pair_accuracy, pearson, win_outcomes
from rlhf.ppo import sequence_kl
from rlhf.reward import pairs_that_fit, policy_sample_pairs, rm_diagnostics, score_rollout, score_texts
from rlhf.model import last_token_index
from rlhf.sampling import Rollout, response_logprobs, sample


def check_same_tokenizer(named: dict) -> None:
    """Raise ValueError unless every tokenizer in {name: Tokenizer} has the same fingerprint.

    A policy, its reference and its reward model read the same token ids; a different vocabulary
    would make log-prob ratios and RM scores silently meaningless.
    """
    items = list(named.items())
    if not items:
        return
    first, tok0 = items[0]
    for name, tok in items[1:]:
        if tok.fingerprint != tok0.fingerprint:
            raise ValueError(f"tokenizer mismatch: {first} ({tok0.fingerprint}) vs {name} ({tok.fingerprint}); "
                             "a policy, its reference and its reward model must share one tokenizer")


@torch.no_grad()
def rollout_kl(policy, ref, rollout: Rollout, temperature: float = 1.0):
    """rlhf.ppo.sequence_kl of responses y sampled from pi, with both models' log-probs computed here:

        KL_hat(x, y) = sum_t ( log pi(y_t | x, y_<t) - log pi_ref(y_t | x, y_<t) )     (k1, summed over the sequence)

    Both models' logits are divided by `temperature`, so with samples drawn at that temperature it estimates the
    KL between the two tempered distributions (the ones actually sampled). One forward per model.
    rollout: query (B, Tq), response (B, Tr) -> (B,)
    """
    assert temperature > 0, "KL needs a sampling distribution (temperature > 0)"
    args = (rollout.query_ids, rollout.query_mask, rollout.response_ids, rollout.response_mask)
    lp = response_logprobs(policy, *args, temperature=temperature)  # (B, Tr), 0 on padding
    lp_ref = response_logprobs(ref, *args, temperature=temperature)  # (B, Tr)
    return sequence_kl(lp, lp_ref, rollout.response_mask)  # (B,)


def best_of_n_kl(n: int) -> float:
    """Analytic KL(best-of-n || base policy) = log n - (n - 1) / n.

    Ref: Stiennon et al. 2020 (arXiv 2009.01325) appendix; Hilton & Gao's note on the best-of-n KL
    (exact when the n rewards have no ties; an upper bound otherwise, Beirami et al. 2024).
    """
    return math.log(n) - (n - 1) / n


def _rows(roll: Rollout, idx: list[int]) -> Rollout:
    """The rollout restricted to rows idx (padding kept: it never changes a row's log-probs)."""
    return Rollout([roll.prompts[i] for i in idx], [roll.texts[i] for i in idx], roll.query_ids[idx],
                   roll.query_mask[idx], roll.response_ids[idx], roll.response_mask[idx], roll.stopped[idx])


@contextlib.contextmanager
def _eval_mode(*models):
    """Dropout off while evaluating; each model's train/eval mode restored afterwards (PPO calls this mid-run)."""
    models = [m for m in models if m is not None]
    was = [m.training for m in models]
    for m in models:
        m.eval()
    try:
        yield
    finally:
        for m, w in zip(models, was):
            m.train(w)


def _mean(xs) -> float:
    return sum(xs) / len(xs) if len(xs) else float("nan")


def rm_pair_accuracy(rm_a, rm_b, gold_a, gold_b) -> tuple[float, int]:
    """How often the RM orders two responses to one prompt as the gold judge does.

    Pairs whose gold scores tie, or that have no gold score (NaN: a prompt outside the task), are left out; an RM
    tie counts 1/2. -> (accuracy, pairs used); accuracy is NaN when no pair is decided by gold.
    """
    sign = [(1.0 if ga > gb else -1.0, i) for i, (ga, gb) in enumerate(zip(gold_a, gold_b)) if ga > gb or ga < gb]
    ra, rb = [float(rm_a[i]) * s for s, i in sign], [float(rm_b[i]) * s for s, i in sign]
    return pair_accuracy(ra, rb), len(sign)


def evaluate_policy(policy, tok, prompts: list[str], *, task=None, ref=None, rm=None, max_new_tokens: int,
                    temperature: float = 0.7, seed: int = 0, batch_size: int = 64, best_of_n: int = 1,
                    ref_texts: list[str] | None = None, rm_pairs: int = 2, other_rms: dict | None = None) -> tuple[dict, list[dict]]:
    """One sample per prompt (or the RM's pick of best_of_n), scored as the README's metric glossary lists.

    Returns (metrics, samples). Metric keys (each only when its inputs are given):
      eval/n, eval/length (mean response tokens, EOS included), eval/stopped (share ending with EOS)
      objective/kl   mean rollout_kl(policy, ref) on the samples; for best_of_n > 1 the analytic
                     log n - (n-1)/n, the KL to the policy being sampled (= the reference when that
                     policy is the reference, the usual best-of-n baseline)
      proxy/score    mean RM score (rm)
      gold/score     mean gold score (task); gold/score_difficulty_<d> per level where the task varies it;
                     gold/score_noisy, gold/score_clean (and gold/win_rate_noisy, _clean with a reference) on the
                     prompts of the noisy annotator's families and the others' (prompt-dependent noise, task.noisy)
      gold/win_rate, gold/win_rate_lo, gold/win_rate_hi   against the reference's samples on the same
                     prompts: win 1, tie 0.5, loss 0, 95% bootstrap over prompts (task and ref or ref_texts)
      rm/onpolicy_gold_accuracy, rm/onpolicy_pairs   (rm, task, rm_pairs >= 2) the RM's gold-ordering accuracy
                     over all C(n, 2) pairs of n = rm_pairs policy samples per prompt (the evaluated sample and
                     n - 1 more); with best_of_n > 1 the pair is two of the n raw candidates (the RM's own pick
                     would be scored in its favour)
      <name>/onpolicy_gold_accuracy, <name>/onpolicy_pairs   the same pairs scored by each RM of other_rms
                     {name: rm} (train_ppo.py --first-rm: rm_first, an RLP run's first RM beside the one it optimises)
    samples: [{"prompt", "response", "gold"?, "proxy"?, "kl"?, "ref_response"?, "ref_gold"?}]; the reference
    texts come back in "ref_response", so a caller that evaluates repeatedly samples the reference once.
    Generators: policy seed, reference seed + 1, the further policy samples seed + 2.
    """
    P = len(prompts)
    if P == 0:
        raise ValueError("evaluate_policy needs at least one prompt")
    if temperature <= 0:
        raise ValueError(f"evaluation samples at a temperature > 0 (got {temperature}); KL needs a distribution")
    if best_of_n < 1:
        raise ValueError(f"best_of_n must be >= 1 (got {best_of_n})")
    if best_of_n > 1 and rm is None:
        raise ValueError(f"best_of_n={best_of_n} picks the sample with the highest reward: it needs a reward model (rm)")
    if ref_texts is not None and len(ref_texts) != P:
        raise ValueError(f"ref_texts has {len(ref_texts)} responses for {P} prompts")
    dev = next(policy.parameters()).device
    gen = lambda s: torch.Generator(device=dev).manual_seed(s)  # noqa: E731
    kw = dict(max_new_tokens=max_new_tokens, temperature=temperature, batch_size=batch_size, device=dev)
    score = lambda r: score_rollout(rm, tok, r, batch_size=batch_size).tolist()  # noqa: E731  (the sampled ids)
    n = best_of_n
    metrics: dict = {"eval/n": P}
    with _eval_mode(policy, ref, rm):
        # 1. sample the policy: n candidates per prompt, prompt-major (p0 x n, p1 x n, ...)
        roll = sample(policy, tok, [p for p in prompts for _ in range(n)], generator=gen(seed), desc="eval: policy samples", **kw)
        proxy = group = None  # group: (P lists of the texts, {RM name: P lists of their scores}) for the on-policy pairs
        if n > 1:
            cand = torch.tensor(score(roll)).view(P, n)  # (P, n)
            pick = (torch.arange(P) * n + cand.argmax(1)).tolist()  # first maximum on ties
            proxy = cand.amax(1).tolist()
            if task is not None and rm_pairs >= 2:  # two raw candidates per prompt
                group = ([[roll.texts[i * n], roll.texts[i * n + 1]] for i in range(P)], {"rm": cand[:, :2].tolist()})
            roll = _rows(roll, pick)  # (P, ...) the RM's pick per prompt
        texts = roll.texts
        metrics["eval/length"] = roll.response_mask.sum(1).float().mean().item()
        metrics["eval/stopped"] = roll.stopped.float().mean().item()

        # 2. KL to the reference
        kl = None
        if n > 1:
            metrics["objective/kl"] = best_of_n_kl(n)
        elif ref is not None:
            kl = torch.cat([rollout_kl(policy, ref, _rows(roll, list(range(s, min(s + batch_size, P)))), temperature)
                            for s in range(0, P, batch_size)]).tolist()  # (P,)
            metrics["objective/kl"] = _mean(kl)

        # 3. the reference's samples (once; callers that evaluate repeatedly pass them back in)
        if ref_texts is None and ref is not None:
            ref_texts = sample(ref, tok, prompts, generator=gen(seed + 1), desc="eval: reference samples", **kw).texts

        # 4. proxy: RM scores of the samples, and of rm_pairs - 1 more policy samples for the on-policy RM accuracy
        if rm is not None and n == 1:
            proxy = score(roll)
            if task is not None and rm_pairs >= 2:
                m = rm_pairs - 1
                more = sample(policy, tok, [p for p in prompts for _ in range(m)], generator=gen(seed + 2),
                              desc="eval: further policy samples", **kw)
                rms = {"rm": (rm, proxy)} | {name: (r, score_rollout(r, tok, roll, batch_size=batch_size).tolist())
                                             for name, r in (other_rms or {}).items()}
                scored = {name: (first, score_rollout(r, tok, more, batch_size=batch_size).tolist()) for name, (r, first) in rms.items()}
                group = ([[texts[i]] + more.texts[i * m:(i + 1) * m] for i in range(P)],
                         {name: [[first[i]] + rest[i * m:(i + 1) * m] for i in range(P)] for name, (first, rest) in scored.items()})
        if proxy is not None:
            metrics["proxy/score"] = _mean(proxy)

    # 5. gold: score, win rate against the reference, RM accuracy on the policy's pairs; a prompt outside the task's
    # grammar (the user's own prompts) has no gold score (NaN) and is left out of every gold figure (gold/left_out)
    gold = ref_gold = None
    if task is not None:
        gold = [task.gold(p, t) for p, t in zip(prompts, texts)]
        known = [i for i, g in enumerate(gold) if not math.isnan(g)]  # callers warn once (tasks.known_rows)
        if len(known) < P:
            metrics["gold/left_out"] = P - len(known)
        metrics["gold/score"] = _mean([gold[i] for i in known])
        levels = {}
        for i in known:  # a world of varied difficulty (task.difficulty): the gold score per level
            if (lv := task.difficulty(prompts[i])) is not None:
                levels.setdefault(lv, []).append(gold[i])
        metrics.update({f"gold/score_difficulty_{lv}": _mean(g) for lv, g in sorted(levels.items())})
        if ref_texts is not None:
            ref_gold = [task.gold(p, t) for p, t in zip(prompts, ref_texts)]
            wins = win_outcomes([gold[i] for i in known], [ref_gold[i] for i in known])  # (known,) 1 / 0.5 / 0
            lo, hi = bootstrap_ci(wins, seed=seed) if known else (float("nan"), float("nan"))
            metrics.update({"gold/win_rate": _mean(wins.tolist()), "gold/win_rate_lo": lo, "gold/win_rate_hi": hi})
        if task.annotator["noisy_share"]:  # where the annotator (so the RM) errs, and elsewhere
            for name, want in (("noisy", True), ("clean", False)):
                rows = [k for k, i in enumerate(known) if task.noisy(prompts[i]) == want]
                metrics[f"gold/score_{name}"] = _mean([gold[known[k]] for k in rows])
                if ref_texts is not None:
                    metrics[f"gold/win_rate_{name}"] = _mean([wins[k].item() for k in rows])
        if group is not None:  # every pair (j < l) of each prompt's samples
            texts_of, scores_of = group
            golds = [[task.gold(p, t) for t in ts] for p, ts in zip(prompts, texts_of)]
            idx = [(i, j, l) for i, ts in enumerate(texts_of) for j in range(len(ts)) for l in range(j + 1, len(ts))]
            ga, gb = [golds[i][j] for i, j, _ in idx], [golds[i][l] for i, _, l in idx]
            for name, sc in scores_of.items():
                acc, used = rm_pair_accuracy([sc[i][j] for i, j, _ in idx], [sc[i][l] for i, _, l in idx], ga, gb)
                metrics.update({f"{name}/onpolicy_gold_accuracy": acc, f"{name}/onpolicy_pairs": used})

    samples = []
    for i, (p, t) in enumerate(zip(prompts, texts)):
        row = {"prompt": p, "response": t}
        for key, vals in (("gold", gold), ("proxy", proxy), ("kl", kl), ("ref_response", ref_texts), ("ref_gold", ref_gold)):
            if vals is not None:
                row[key] = vals[i]
        samples.append(row)
    return metrics, samples


def rm_report(rm, tok, task, policy, sft_prompts: list[str], held_samples: list[dict], seed: int = 0) -> dict:
    """The RM's accuracy where PPO will use it, beside rm_diagnostics on the held-out labelled pairs:

      sft_pairs/*    rm_diagnostics on two SFT samples (temperature 1.0) per prompt of `sft_prompts`, ordered by
                     the task's annotator: what PPO shows the RM first
      rlp/onpolicy_gold_accuracy_before, _after, rlp/onpolicy_pairs   RLP: gold-ordering accuracy on the first two
                     samples of each held-out policy-samples row, before (the rewards stored in the samples file,
                     from the previous RM) and after retraining (this RM)
    Needs a gold judge (task); returns {} without one.
    """
    out = {}
    if task is None:
        return out
    sft_prompts = [p for p in sft_prompts if task.knows(p)]  # the annotator labels only its own task's prompts
    if sft_prompts:
        p, c, r = policy_sample_pairs(policy, tok, task, sft_prompts, temperature=1.0, seed=seed)
        keep = pairs_that_fit(tok, p, c, r, rm.config.block_size)  # decoded samples can re-encode longer
        p, c, r = ([x[i] for i in keep] for x in (p, c, r))
        s = score_texts(rm, tok, p + p, c + r)
        out.update({f"sft_pairs/{k[3:]}": v for k, v in rm_diagnostics(p, c, r, s[:len(p)], s[len(p):], task).items()})
    hp = [(r["prompt"], r["responses"][0], r["responses"][1], r["rewards"][0], r["rewards"][1]) for r in held_samples
          if len(r["responses"]) >= 2 and r["responses"][0] != r["responses"][1]]
    if held_samples:
        ga = [task.gold(x[0], x[1]) for x in hp]
        gb = [task.gold(x[0], x[2]) for x in hp]
        s = score_texts(rm, tok, [x[0] for x in hp] * 2, [x[1] for x in hp] + [x[2] for x in hp])
        before, n_hp = rm_pair_accuracy([x[3] for x in hp], [x[4] for x in hp], ga, gb)
        after, _ = rm_pair_accuracy(s[:len(hp)].tolist(), s[len(hp):].tolist(), ga, gb)
        out.update({"rlp/onpolicy_gold_accuracy_before": before, "rlp/onpolicy_gold_accuracy_after": after, "rlp/onpolicy_pairs": n_hp})
        print(f"RM accuracy against gold on {n_hp} pairs of held-out policy samples: before {before:.3f}, after {after:.3f}"
              + few_caveat(n_hp))
    return out


def format_diagnostics(d: dict) -> str:
    """The report a researcher reads first: the RM beside the length-only rule, on each set of pairs."""
    lines = []
    for prefix, title in (("rm/", "held-out demonstration pairs"), ("sft_pairs/", "pairs of two SFT samples on held-out prompts")):
        if f"{prefix}n_pairs" not in d:
            continue
        f = lambda k: f"{d[prefix + k]:.3f}" if prefix + k in d and d[prefix + k] == d[prefix + k] else "n/a"  # noqa: E731
        lines += [f"{title}: {d[prefix + 'n_pairs']}",
                  f"  accuracy vs labels   RM {f('accuracy')}   length rule {f('length_rule_accuracy')}",
                  f"  accuracy vs gold     RM {f('gold_accuracy')}   length rule {f('length_rule_gold_accuracy')}"
                  f"   labels themselves {f('label_gold_accuracy')}",
                  f"  calibration (ECE vs gold) {f('ece')}   corr(reward, length) {f('length_corr')}"]
        if prefix + "gold_accuracy_noisy" in d:
            lines.append(f"  accuracy vs gold on the noisy annotator's prompt families {f('gold_accuracy_noisy')}, "
                         f"on the others {f('gold_accuracy_clean')}")
        comps = sorted(k for k in d if k.startswith(prefix + "component/") and not k.endswith("/n"))
        if comps:
            lines.append("  gold accuracy on pairs differing in one component only: " +
                         ", ".join(f"{k.split('/')[-1]} {d[k]:.3f} (n={d[k + '/n']})" for k in comps))
    if "rm/gold_accuracy" not in d:
        lines.append("  no gold judge for this data: gold figures not available")
    return "\n".join(lines)


def rollout_mechanisms(contrastive: bool, task, roll, scores, advantages, values, returns, mask) -> dict:
    """What each method's mechanism does to this iteration's rollouts (logged beside the losses; no randomness):
      value/eos_error             mean V(EOS) - return(EOS): the critic's signed error where the score arrives (GAE)
      contrastive/beats_baseline  share of rollouts whose score beats their prompt's baseline (contrastive: --reward contrastive)
      contrastive/adv_eos_corr    Pearson correlation of the advantage at EOS with score - baseline
      rollout/gold, rollout/reward_gold_corr  (built-in task) mean gold of the training rollouts and the within-batch
                                  correlation of the reward PPO maximises with gold
    scores (B,) as PPO uses them (the contrastive reward under --reward contrastive), advantages / values / returns
    (B, Tr) before whitening, mask (B, Tr)."""
    eos = last_token_index(mask)
    rows = torch.arange(len(eos), device=eos.device)
    adv_eos = advantages[rows, eos].float().cpu()
    out = {}
    if values is not None:
        out["value/eos_error"] = (values[rows, eos] - returns[rows, eos]).float().mean().item()
    if contrastive:
        cr = scores.float().cpu()
        out["contrastive/beats_baseline"] = (cr > 0).float().mean().item()
        out["contrastive/adv_eos_corr"] = pearson(adv_eos, cr)
    if task is not None:
        gold = [task.gold(p, t) for p, t in zip(roll.prompts, roll.texts)]
        known = [i for i, x in enumerate(gold) if not math.isnan(x)]
        if known:
            out["rollout/gold"] = sum(gold[i] for i in known) / len(known)
            out["rollout/reward_gold_corr"] = pearson(scores.float().cpu()[known], [gold[i] for i in known])
    return out
