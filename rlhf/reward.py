"""Reward modelling: the Bradley-Terry loss, contrastive rewards, batched RM scoring, RM diagnostics.

Shapes: B batch (pairs or prompts), k baseline samples per prompt, N items.
"""
from __future__ import annotations

import math
import random
import statistics
from pathlib import Path

import torch
import torch.nn.functional as F

from rlhf import tasks
from rlhf.data import read_json, read_jsonl, record_location
from rlhf.metrics import expected_calibration_error, pair_accuracy, pearson
from rlhf.sampling import sample
from rlhf.sft import join_prompt_response
from rlhf.tokenizer import too_long

AGGREGATES = ("mean", "median", "max", "min")


def bradley_terry_loss(chosen, rejected, margin=None):
    """Bradley-Terry negative log-likelihood of the preferred response.

    Ref: Bradley & Terry 1952; as the RM loss in Ouyang et al. 2022 (arXiv 2203.02155) eq. 1 and
    Lang et al. 2024 (arXiv 2403.19279) Algorithm 1 step 1; the margin as in Touvron et al. 2023 (Llama 2) eq. 2.
        loss = mean_B( -log sigmoid( r(x, y_w) - r(x, y_l) - m ) ),   m = 0 when margin is None
    chosen, rejected, margin: (B,) -> scalar. Written with logsigmoid, which is stable for large gaps.
    """
    assert chosen.shape == rejected.shape and chosen.dim() == 1, (chosen.shape, rejected.shape)
    diff = chosen - rejected
    if margin is not None:
        diff = diff - margin
    return -F.logsigmoid(diff).mean()


def aggregate_baselines(baseline_rewards, how: str = "mean"):
    """g({r(x, y_j)}_{j=1..k}): one baseline per prompt from its k offline samples' rewards.

    Ref: Shen et al. 2024 (arXiv 2403.07708), the contrastive reward's baseline (mean by default;
    median, max and min as ablations).   baseline_rewards (B, k) -> (B,)
    """
    if how not in AGGREGATES:
        raise ValueError(f"baseline aggregate must be one of: {', '.join(AGGREGATES)} (got {how!r})")
    assert baseline_rewards.dim() == 2 and baseline_rewards.shape[1] >= 1, baseline_rewards.shape
    if how == "mean":
        return baseline_rewards.mean(1)
    if how == "median":  # for even k, torch's median is the lower of the two middle values
        return baseline_rewards.median(1).values
    return baseline_rewards.amax(1) if how == "max" else baseline_rewards.amin(1)


def baseline_variance(baseline_rewards) -> tuple[float, float]:
    """How much of the offline baselines' spread is the prompt and how much is sampling noise.

    For P prompts with k baseline rewards each, b (P, k): m_p = mean_j b_pj, s2_p = sum_j (b_pj - m_p)^2 / (k - 1);
        between = var_p(m_p) (unbiased, over prompts)     what the baseline removes: each prompt's own level
        within_over_k = mean_p(s2_p) / k                   the variance of a k-sample mean from sampling alone
    between well above within_over_k: the baseline carries a per-prompt signal; about equal: it is mostly noise.
    (Shen et al. 2024's baseline is the mean of k offline samples' rewards.)  b (P, k), P >= 2, k >= 2 -> (between,
    within_over_k)
    """
    b = torch.as_tensor(baseline_rewards, dtype=torch.float64)
    if b.dim() != 2 or b.shape[0] < 2 or b.shape[1] < 2:
        raise ValueError(f"baseline_variance needs (P, k) rewards with P >= 2 prompts and k >= 2 samples (got {tuple(b.shape)})")
    return b.mean(1).var().item(), b.var(1).mean().item() / b.shape[1]


def contrastive_reward(reward, baseline_rewards, how: str = "mean"):
    """r_CR(x, y) = r(x, y) - g({r(x, y_j)}_{j=1..k}).

    Ref: Shen et al. 2024 (arXiv 2403.07708), the contrastive reward used in PPO in place of r.
    reward (B,), baseline_rewards (B, k) -> (B,)
    """
    assert reward.shape[0] == baseline_rewards.shape[0], (reward.shape, baseline_rewards.shape)
    return reward - aggregate_baselines(baseline_rewards, how)


def pair_batch(tok, prompts: list[str], chosen: list[str], rejected: list[str]):
    """Chosen and rejected of B pairs as ONE right-padded batch of 2B rows (chosen first), so a
    pair costs one forward. Returns ids (2B, T), mask (2B, T)."""
    p = tok.encode_prompts(prompts)
    r = tok.encode_responses(list(chosen) + list(rejected))
    ids, mask, _ = join_prompt_response(p + p, r, tok.pad_id)
    return ids, mask


@torch.no_grad()
def score_ids(rm, prompt_ids: list[list[int]], response_ids: list[list[int]], pad_id: int, batch_size: int = 64, device=None):
    """RM scores r(x, y) of N (prompt ids, response ids) rows, read at each row's last real token. -> (N,) on the CPU.
    prompt ids end with SEP, response ids with EOS (as the template writes them); the forwards run on `device`
    (None: the RM's own), `batch_size` rows at a time. Always in fp32, autocast off: under --dtype bf16 the PPO
    rollouts, the contrastive baselines (sample_baselines.py) and every evaluation are then scored alike, whatever
    the --dtype of the script that scores them."""
    device = next(rm.parameters()).device if device is None else device
    was_training = rm.training
    rm.eval()
    out = []
    for s in range(0, len(prompt_ids), batch_size):
        p, r = prompt_ids[s:s + batch_size], response_ids[s:s + batch_size]
        for i in too_long(p, r, rm.config.block_size)[:1]:
            raise ValueError(f"prompt + response {s + i} is {len(p[i]) + len(r[i])} tokens, longer than the reward "
                             f"model's context ({rm.config.block_size})")
        ids, mask, _ = join_prompt_response(p, r, pad_id)
        with torch.autocast(torch.device(device).type, enabled=False):
            out.append(rm.score(ids.to(device), mask.to(device)).float().cpu())
    rm.train(was_training)
    return torch.cat(out) if out else torch.zeros(0)


def read_preference_split(path, data, seed: int, val_fraction: float, max_val_pairs: int, fmt=None) -> tuple:
    """A preferences JSONL and its seeded held-out split, as train_rm.py and train_dpo.py share it -> (task or None,
    training pairs, held-out pairs). Pairs whose chosen equals rejected are skipped (counted); with a built-in task's
    meta.json in `data`, prompts outside its grammar are reported before training (tasks.known_rows). The split: a
    permutation seeded by `seed`, its first max(1, int(N * val_fraction)) pairs held out (at most max_val_pairs used)."""
    rows = read_jsonl(path, "preferences", fmt=fmt)  # any format rlhf.formats reads (fmt: key names, chat template)
    meta = read_json(Path(data) / "meta.json") if (Path(data) / "meta.json").exists() else None
    task = tasks.task_from_meta(meta)
    if task is not None:  # before training: say which rows the gold figures will leave out
        tasks.known_rows(task, [r["prompt"] for r in rows], lambda i: record_location(path, i))
    same = [r for r in rows if r["chosen"] == r["rejected"]]
    if same:
        print(f"warning: skipped {len(same)} of {len(rows)} pairs in {path} whose chosen equals rejected")
        rows = [r for r in rows if r["chosen"] != r["rejected"]]
    if len(rows) < 2:
        raise SystemExit(f"error: {path} has {len(rows)} usable pairs; at least 2 are needed")
    perm = torch.randperm(len(rows), generator=torch.Generator().manual_seed(seed)).tolist()
    n_val = max(1, int(len(rows) * val_fraction))
    return task, [rows[i] for i in perm[n_val:]], [rows[i] for i in perm[:n_val]][:max_val_pairs]


def pairs_fitting(tok, rows: list[dict], block_size: int, path) -> list[dict]:
    """The pairs whose prompt + longer response fit the context; the rest skipped with a warning (none left: an error)."""
    kept = [rows[i] for i in pairs_that_fit(tok, *([x[k] for x in rows] for k in ("prompt", "chosen", "rejected")), block_size)]
    if len(kept) < len(rows):
        print(f"warning: skipped {len(rows) - len(kept)} of {len(rows)} pairs from {path} longer than the context ({block_size} tokens)")
    if not kept:
        raise ValueError(f"{path}: no pair fits the model's context of {block_size} tokens (prompt + response, in tokens)")
    return kept


def longest_pair(tok, rows: list[dict]) -> int:
    """Tokens of the longest prompt + longer response among the pairs (the longest row a batch of them can hold)."""
    p = tok.encode_prompts([r["prompt"] for r in rows])
    c, r = tok.encode_responses([x["chosen"] for x in rows]), tok.encode_responses([x["rejected"] for x in rows])
    return max(len(a) + max(len(b), len(d)) for a, b, d in zip(p, c, r))


def pairs_that_fit(tok, prompts: list[str], chosen: list[str], rejected: list[str], block_size: int) -> list[int]:
    """Indices of the (prompt, chosen, rejected) texts whose prompt + longer response, as the template encodes
    them, fit a context of block_size tokens (rlhf.tokenizer.too_long)."""
    longer = [max(c, r, key=len) for c, r in zip(tok.encode_responses(chosen), tok.encode_responses(rejected))]
    skip = set(too_long(tok.encode_prompts(prompts), longer, block_size))
    return [i for i in range(len(prompts)) if i not in skip]


def score_texts(rm, tok, prompts: list[str], responses: list[str], batch_size: int = 64, device=None):
    """RM scores of N (prompt, response) texts, encoded with the template (score_ids). -> (N,) on the CPU.
    Texts that were sampled have their ids already: score_rollout scores those exactly."""
    return score_ids(rm, tok.encode_prompts(prompts), tok.encode_responses(responses), tok.pad_id, batch_size, device)


def score_rollout(rm, tok, roll, batch_size: int = 64):
    """RM scores of a Rollout's own token ids, not of its decoded texts (which can re-encode to other, even more,
    ids: a byte token that is not valid UTF-8 decodes to U+FFFD). A response cut at max_new_tokens gets the EOS
    the RM saw in training when it still fits the RM's context. -> (B,) on the CPU."""
    prompts, responses = rollout_ids(roll)
    for i, stopped in enumerate(roll.stopped.tolist()):
        if not stopped and len(prompts[i]) + len(responses[i]) < rm.config.block_size:
            responses[i].append(tok.eos_id)
    return score_ids(rm, prompts, responses, tok.pad_id, batch_size)


def rollout_ids(roll) -> tuple[list[list[int]], list[list[int]]]:
    """A Rollout's rows as id lists without padding: (prompt ids ending with SEP, response ids up to and including
    EOS, or every sampled token of a response that never stopped)."""
    q, qm = roll.query_ids.cpu(), roll.query_mask.cpu().bool()
    r, rm = roll.response_ids.cpu(), roll.response_mask.cpu().bool()
    return [row[m].tolist() for row, m in zip(q, qm)], [row[m].tolist() for row, m in zip(r, rm)]


def _acc(correct):
    return (sum(correct) / len(correct)) if correct else float("nan")


def rm_diagnostics(prompts, chosen, rejected, s_chosen, s_rejected, task=None) -> dict:
    """How a reward model orders held-out pairs, and what it may have learned instead of content.

    rm/accuracy            agreement with the annotator's labels (chosen scored above rejected; ties 1/2)
    rm/length_rule_accuracy the same for the rule "the longer response wins" (ties 1/2)
    rm/length_corr         Pearson correlation of the RM score with the response's length in words
    with a gold judge (pairs whose gold scores differ; pairs whose prompt is outside the task are left out and
    counted in rm/gold_left_out):
    rm/gold_accuracy       agreement with the gold ordering
    rm/length_rule_gold_accuracy  "longer wins" against the gold ordering
    rm/label_gold_accuracy  how often the annotator's label itself agrees with gold (the label noise)
    rm/ece                 expected calibration error of sigmoid(r_chosen - r_rejected) against gold
    rm/component/<name>    gold accuracy on pairs that differ in that gold component only
    rm/family_gold_accuracy_std  the spread of the RM's error from prompt to prompt: std over prompt families
                           (task.family; those with 10 decided pairs or more) of each family's gold accuracy
    rm/gold_accuracy_noisy, rm/gold_accuracy_clean  (with prompt-dependent annotator noise, noisy_share > 0) gold
                           accuracy on the noisy families' pairs and on the others'; rm/component/<name>_noisy and
                           _clean (with /n) the same split of the one-component pairs (a misreading annotator errs in
                           one component: story's mood)
    rm/gold_accuracy_difficulty_<d>  (a world of varied difficulty, task.difficulty) gold accuracy per level
    """
    sc, sr = torch.as_tensor(s_chosen, dtype=torch.float64), torch.as_tensor(s_rejected, dtype=torch.float64)
    lc = [len(t.split()) for t in chosen]
    lr = [len(t.split()) for t in rejected]
    out = {"rm/n_pairs": len(prompts),
           "rm/accuracy": pair_accuracy(sc, sr),
           "rm/length_rule_accuracy": pair_accuracy(lc, lr),
           "rm/length_corr": pearson(torch.cat([sc, sr]), lc + lr),
           "rm/reward_mean": torch.cat([sc, sr]).mean().item(), "rm/reward_std": torch.cat([sc, sr]).std().item()}
    if task is None:
        return out
    gc = [task.gold(p, t) for p, t in zip(prompts, chosen)]
    gr = [task.gold(p, t) for p, t in zip(prompts, rejected)]
    decided = [i for i in range(len(prompts)) if gc[i] > gr[i] or gc[i] < gr[i]]  # NaN (no gold judgement): left out
    if any(math.isnan(g) for g in gc):
        out["rm/gold_left_out"] = sum(math.isnan(g) for g in gc)
    sign = {i: 1.0 if gc[i] > gr[i] else -1.0 for i in decided}  # +1: gold prefers chosen
    gold_order = lambda xs, ys, idx: pair_accuracy([sign[i] * xs[i] for i in idx], [sign[i] * ys[i] for i in idx])  # noqa: E731
    out["rm/gold_accuracy"] = gold_order(sc.tolist(), sr.tolist(), decided)
    out["rm/length_rule_gold_accuracy"] = gold_order(lc, lr, decided)
    out["rm/label_gold_accuracy"] = _acc([1.0 if sign[i] > 0 else 0.0 for i in decided])
    if decided:
        probs = torch.sigmoid(sc - sr)[decided]
        out["rm/ece"] = expected_calibration_error(probs, [1.0 if sign[i] > 0 else 0.0 for i in decided])
    comps = {}
    for i in decided:
        a, b = task.gold_components(prompts[i], chosen[i]), task.gold_components(prompts[i], rejected[i])
        diff = [k for k in a if a[k] != b.get(k)]
        if len(diff) == 1:
            comps.setdefault(diff[0], []).append(i)
    for name, idx in sorted(comps.items()):
        out[f"rm/component/{name}"] = gold_order(sc.tolist(), sr.tolist(), idx)
        out[f"rm/component/{name}/n"] = len(idx)
        if task.annotator["noisy_share"]:
            for part, want in (("noisy", True), ("clean", False)):
                sub = [i for i in idx if task.noisy(prompts[i]) == want]
                if sub:  # (none: no figure, rather than NaN)
                    out[f"rm/component/{name}_{part}"] = gold_order(sc.tolist(), sr.tolist(), sub)
                    out[f"rm/component/{name}_{part}/n"] = len(sub)
    fams = {}
    for i in decided:
        fams.setdefault(task.family(prompts[i]), []).append(i)
    accs = [gold_order(sc.tolist(), sr.tolist(), idx) for idx in fams.values() if len(idx) >= 10]
    if len(accs) >= 2:
        out["rm/family_gold_accuracy_std"] = statistics.stdev(accs)
    levels = {}
    for i in decided:
        if (lv := task.difficulty(prompts[i])) is not None:
            levels.setdefault(lv, []).append(i)
    for lv, idx in sorted(levels.items()):
        out[f"rm/gold_accuracy_difficulty_{lv}"] = gold_order(sc.tolist(), sr.tolist(), idx)
    if task.annotator["noisy_share"]:
        for name, want in (("noisy", True), ("clean", False)):
            out[f"rm/gold_accuracy_{name}"] = gold_order(sc.tolist(), sr.tolist(), [i for i in decided if task.noisy(prompts[i]) == want])
    return out


def weak_rm_warning(diag: dict, margin: float = 0.03) -> str | None:
    """A message when an RM's held-out gold accuracy (rm_diagnostics, stored in its checkpoint by
    train_rm.py) is within `margin` of chance or of the "longer wins" rule, else None."""
    acc, rule = diag.get("rm/gold_accuracy"), diag.get("rm/length_rule_gold_accuracy")
    if acc is None or acc != acc:  # no gold judge, or no decided pairs
        return None
    rule = 0.5 if rule is None or rule != rule else rule
    if acc < max(0.5, rule) + margin:
        return (f"it orders held-out pairs as the gold judge does only {acc:.1%} of the time (chance 50.0%, "
                f"'longer wins' {rule:.1%}); PPO against it will mostly optimise noise or length")
    return None


@torch.no_grad()
def policy_sample_pairs(policy, tok, task, prompts: list[str], max_new_tokens: int | None = None, temperature: float = 1.0,
                        seed: int = 0, chunk: int = 512) -> tuple[list[str], list[str], list[str]]:
    """Two samples per prompt from `policy`, ordered by the task's simulated annotator -> (prompts,
    chosen, rejected). Pairs of identical samples are dropped. This is the distribution PPO's RM meets
    first (SFT samples), unlike the demonstration pairs it was trained on. Prompts are sampled `chunk` at a
    time (one generator throughout), which bounds the KV cache. max_new_tokens None: up to 96, as far as the
    longest prompt leaves room in the context."""
    if max_new_tokens is None:
        max_new_tokens = min(96, policy.config.block_size - max(len(q) for q in tok.encode_prompts(prompts)))
    gen = torch.Generator(next(policy.parameters()).device).manual_seed(seed)
    texts = []
    for i in range(0, len(prompts), chunk):
        texts += sample(policy, tok, [p for p in prompts[i:i + chunk] for _ in range(2)], max_new_tokens,
                        temperature=temperature, generator=gen, desc="pairs of two SFT samples").texts
    rng = random.Random(seed)
    out = ([], [], [])
    for i, p in enumerate(prompts):
        a, b = texts[2 * i], texts[2 * i + 1]
        if a == b:
            continue
        c, r = (a, b) if task.annotate(p, a, b, rng) == 0 else (b, a)
        for lst, x in zip(out, (p, c, r)):
            lst.append(x)
    return out


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


def baseline_rows(baselines: dict[str, torch.Tensor], prompts: list[str]) -> torch.Tensor:
    """The baseline rewards of each distinct prompt, in first-seen order: load_baselines' table -> (P, k)."""
    return torch.stack([baselines[p] for p in dict.fromkeys(prompts)])
