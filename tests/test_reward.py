"""Bradley-Terry loss, contrastive rewards and evaluation statistics against hand-worked values."""
import math

import pytest
import torch

from rlhf.metrics import bootstrap_ci, expected_calibration_error, pair_accuracy, pearson, win_outcomes
from rlhf.reward import aggregate_baselines, baseline_variance, bradley_terry_loss, contrastive_reward, rm_diagnostics


def test_bt_loss_equal_rewards_is_ln2():
    # -log sigmoid(0) = log 2 = 0.693147
    loss = bradley_terry_loss(torch.tensor([0.3, -1.0]), torch.tensor([0.3, -1.0]))
    assert loss.item() == pytest.approx(0.693147, abs=1e-6)


def test_bt_loss_hand_values_and_margin():
    # diff 2: -log sigmoid(2) = log(1 + e^-2) = 0.126928;  diff -1: log(1 + e^1) = 1.313262
    loss = bradley_terry_loss(torch.tensor([3.0, 0.0]), torch.tensor([1.0, 1.0]))
    assert loss.item() == pytest.approx((0.126928 + 1.313262) / 2, abs=1e-6)
    # margin 2 turns the first diff into 0: (log 2 + 1.313262) / 2
    loss = bradley_terry_loss(torch.tensor([3.0, 0.0]), torch.tensor([1.0, 1.0]), torch.tensor([2.0, 0.0]))
    assert loss.item() == pytest.approx((math.log(2) + 1.313262) / 2, abs=1e-6)
    # stable far out: diff -100 costs 100, not inf
    assert bradley_terry_loss(torch.tensor([0.0]), torch.tensor([100.0])).item() == pytest.approx(100.0)


def test_contrastive_reward_hand_example():
    r = torch.tensor([1.0, 0.5])
    base = torch.tensor([[0.0, 1.0, 2.0, 5.0], [0.5, 0.5, 0.5, -1.5]])
    # mean: 1 - 2 = -1;  0.5 - 0 = 0.5
    assert contrastive_reward(r, base).tolist() == [-1.0, 0.5]
    # median (lower middle for even k): 1 - 1 = 0;  0.5 - 0.5 = 0
    assert contrastive_reward(r, base, "median").tolist() == [0.0, 0.0]
    assert aggregate_baselines(base, "max").tolist() == [5.0, 0.5]
    assert aggregate_baselines(base, "min").tolist() == [0.0, -1.5]
    with pytest.raises(ValueError, match="one of: mean, median, max, min"):
        aggregate_baselines(base, "mode")


def test_win_rate_and_bootstrap():
    out = win_outcomes([0.9, 0.5, 0.1, 0.3], [0.2, 0.5, 0.7, 0.3])
    assert out.tolist() == [1.0, 0.5, 0.0, 0.5]
    lo, hi = bootstrap_ci([1.0] * 50 + [0.0] * 50, n_boot=2000)
    # mean 0.5, std error sqrt(0.25 / 100) = 0.05: the 95% interval is about 0.5 +- 0.098
    assert 0.38 < lo < 0.43 and 0.57 < hi < 0.62
    assert bootstrap_ci([0.7] * 10) == pytest.approx((0.7, 0.7))


def test_pair_accuracy_counts_ties_half():
    # pairs (3 > 1) win, (2 == 2) tie, (0 < 5) loss, (4 > -1) win: (1 + 0.5 + 0 + 1) / 4 = 0.625
    assert pair_accuracy([3.0, 2.0, 0.0, 4.0], [1.0, 2.0, 5.0, -1.0]) == 0.625
    assert pair_accuracy(torch.tensor([1.0]), torch.tensor([2.0])) == 0.0  # tensors too
    assert pair_accuracy([0.0, 1.0], [1e-12, 0.0], tie_tol=1e-9) == 0.75  # a tolerance makes near-ties ties
    assert math.isnan(pair_accuracy([], []))


def test_ece_and_pearson_by_hand():
    # bin [0.8, 0.9): p = 0.8, 0.8 with y = 1, 0 -> |0.8 - 0.5| = 0.3, weight 2/4
    # bin [0.2, 0.3): p = 0.2, 0.2 with y = 0, 0 -> |0.2 - 0| = 0.2, weight 2/4;  ECE = 0.25
    assert expected_calibration_error([0.8, 0.8, 0.2, 0.2], [1, 0, 0, 0]) == pytest.approx(0.25)
    assert pearson([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)
    assert pearson([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert pearson([1, 1, 1], [1, 2, 3]) == 0.0


def test_rm_diagnostics_counts_length_rule():
    prompts = ["p"] * 4
    chosen = ["a b c", "a", "a b", "a b c d"]
    rejected = ["a", "a b c", "a b c", "a"]
    d = rm_diagnostics(prompts, chosen, rejected, [1.0, 1.0, 0.0, 2.0], [0.0, 2.0, 0.0, 1.0])
    assert d["rm/accuracy"] == pytest.approx((1 + 0 + 0.5 + 1) / 4)
    assert d["rm/length_rule_accuracy"] == pytest.approx((1 + 0 + 0 + 1) / 4)
    assert "rm/gold_accuracy" not in d


def test_score_texts_batched_equals_one_by_one():
    """Batching pads rows to the longest; the score of each row must not move."""
    from rlhf.model import GPTConfig, ScalarModel
    from rlhf.reward import score_texts
    from rlhf.tokenizer import Tokenizer
    texts = ["a b c d e f g .", "a .", "b c d .", "reverse : a b c ."]
    tok = Tokenizer.train(texts * 10, vocab_size=300)
    torch.manual_seed(0)
    rm = ScalarModel(GPTConfig(vocab_size=tok.vocab_size, block_size=64, n_layer=2, n_head=2, n_embd=32))
    prompts, responses = ["reverse : a b c ."] * 3 + ["copy : a ."], ["c b a .", "a", "c b a c b a c b a .", "a ."]
    batched = score_texts(rm, tok, prompts, responses, batch_size=4)
    single = torch.cat([score_texts(rm, tok, [p], [r]) for p, r in zip(prompts, responses)])
    torch.testing.assert_close(batched, single, atol=1e-5, rtol=1e-5)


def test_rm_scores_are_fp32_under_bf16_autocast():
    """Rollouts (scored inside PPO's autocast) and baselines (scored by sample_baselines.py, perhaps at another
    --dtype) must be scored alike: score_ids turns autocast off, so the scores equal the fp32 ones exactly."""
    from rlhf.model import GPTConfig, ScalarModel
    from rlhf.precision import autocast
    from rlhf.reward import score_texts
    from rlhf.tokenizer import Tokenizer
    texts = ["a b c d e f g .", "a .", "b c d .", "reverse : a b c ."]
    tok = Tokenizer.train(texts * 10, vocab_size=300)
    torch.manual_seed(0)
    rm = ScalarModel(GPTConfig(vocab_size=tok.vocab_size, block_size=64, n_layer=2, n_head=2, n_embd=64))
    prompts, responses = ["reverse : a b c ."] * 2, ["c b a .", "a b c d e f g ."]
    fp32 = score_texts(rm, tok, prompts, responses)
    with autocast("bf16", "cpu"):
        under_bf16 = score_texts(rm, tok, prompts, responses)
        ids, mask = torch.tensor([[5, 6, 7, 8]]), torch.ones(1, 4, dtype=torch.bool)
        raw = rm.score(ids, mask)  # autocast is really on around it: the forward itself rounds to bf16
    assert not torch.equal(raw, rm.score(ids, mask))
    assert torch.equal(under_bf16, fp32)


def test_score_rollout_reads_the_sampled_ids_even_when_they_are_not_utf8():
    """The RM's input rows are the sampled ids themselves (prompt, SEP, response up to EOS; EOS added to a response
    cut at max_new_tokens), never a re-encoding of the decoded text: a lone UTF-8 lead byte decodes to U+FFFD,
    which re-encodes to other ids."""
    from rlhf.model import GPTConfig, ScalarModel
    from rlhf.reward import score_rollout
    from rlhf.sampling import Rollout
    from rlhf.tokenizer import Tokenizer
    tok = Tokenizer.train(["a b c d e f g ."] * 20, vocab_size=300)
    rm = ScalarModel(GPTConfig(vocab_size=tok.vocab_size, block_size=32, n_layer=1, n_head=2, n_embd=16))
    lead = tok.tk.token_to_id("Ã")  # the byte-level token of byte 0xC3, a UTF-8 lead byte with no continuation
    a, b = tok.encode(" a"), tok.encode(" b")
    P, pad = tok.pad_id, tok.pad_id
    q = torch.tensor([[P, P, *a, tok.sep_id], [*a, *b, *a, tok.sep_id]])  # left-padded prompts
    qm = (q != pad).float()
    r = torch.tensor([[*b, lead, lead, tok.eos_id, pad], [lead, *a, lead, lead, lead]])  # row 1 never stops
    rmask = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]], dtype=torch.float)
    roll = Rollout(["a", "a b a"], [tok.decode_response(x) for x in r.tolist()], q, qm, r, rmask, torch.tensor([True, False]))
    assert "\ufffd" in roll.texts[0]  # the decoded text has lost the bytes
    seen, real = [], rm.score

    def recording_score(ids, mask):  # the rows the RM is given, padding removed
        seen.extend(row[m.bool()].tolist() for row, m in zip(ids, mask))
        return real(ids, mask)
    rm.score = recording_score
    score_rollout(rm, tok, roll)
    assert seen[0] == [*a, tok.sep_id, *b, lead, lead, tok.eos_id]
    assert seen[1] == [*a, *b, *a, tok.sep_id, lead, *a, lead, lead, lead, tok.eos_id]  # cut: EOS appended


def test_weak_rm_warning():
    from rlhf.reward import weak_rm_warning
    assert weak_rm_warning({"rm/gold_accuracy": 0.69, "rm/length_rule_gold_accuracy": 0.50}) is None
    assert "51.0%" in weak_rm_warning({"rm/gold_accuracy": 0.51, "rm/length_rule_gold_accuracy": 0.40})
    # beats chance but not the length rule by the margin: it learned length
    assert "'longer wins' 66.0%" in weak_rm_warning({"rm/gold_accuracy": 0.67, "rm/length_rule_gold_accuracy": 0.66})
    assert weak_rm_warning({}) is None and weak_rm_warning({"rm/gold_accuracy": float("nan")}) is None


def test_baseline_variance_by_hand():
    # prompt means 2 and 6: between = ((2-4)^2 + (6-4)^2) / 1 = 8; within: s2 = 2 for each, / k = 2 -> 1
    assert baseline_variance([[1.0, 3.0], [5.0, 7.0]]) == pytest.approx((8.0, 1.0))
    with pytest.raises(ValueError, match="P >= 2 prompts and k >= 2"):
        baseline_variance([[1.0], [2.0]])


def test_t_quantile_and_interval_by_hand():
    from rlhf.metrics import mean_t_interval, t_quantile
    for df, table in ((1, 12.706), (2, 4.303), (10, 2.228), (30, 2.042)):  # two-sided 95% values of a t table
        assert t_quantile(0.975, df) == pytest.approx(table, abs=1e-3)
    # 1, 2, 3: mean 2, sd 1, se 1 / sqrt(3); half width 4.3027 * 0.57735 = 2.4841
    m, lo, hi = mean_t_interval([1.0, 2.0, 3.0])
    assert m == 2.0 and lo == pytest.approx(2 - 2.4841, abs=1e-3) and hi == pytest.approx(2 + 2.4841, abs=1e-3)
    with pytest.raises(ValueError, match="at least 2"):
        mean_t_interval([1.0])
