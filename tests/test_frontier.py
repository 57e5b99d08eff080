"""The powered comparison's statistics and the frontier's readings, against values worked out by hand."""
import json
import math

import pytest

from rlhf.frontier import envelope, frontier_readings, kl_below, moving_average_peak, value_at_kl
from rlhf.metrics import (decide, detectable_difference, holm, mean_t_interval, paired_bootstrap, paired_t_pvalue, t_cdf,
                          units_needed)
from rlhf import plot, report

# a hand-made curve in training order: KL goes up to 5 and comes back to 4
CURVE = [(0.0, 0.5), (1.0, 0.6), (3.0, 0.7), (5.0, 0.65), (4.0, 0.55)]


def test_value_at_kl_interpolates_the_first_crossing_and_never_extrapolates():
    assert value_at_kl(CURVE, 2.0) == pytest.approx(0.65)  # 0.6 + (2 - 1) / (3 - 1) * 0.1
    assert value_at_kl(CURVE, 4.0) == pytest.approx(0.675)  # on 3 -> 5 (0.7 + 0.5 * -0.05), not on the way back
    assert value_at_kl(CURVE, 1.0) == 0.6 and value_at_kl(CURVE, 0.0) == 0.5  # evaluations exactly at the KL
    assert value_at_kl(CURVE, 8.0) is None and value_at_kl(CURVE, 16.0) is None  # never reached: missing
    assert value_at_kl([(0.0, 0.5), (2.0, 0.8)], 2.0) == 0.8
    assert value_at_kl([(0.0, 0.5)], 2.0) is None and value_at_kl([], 2.0) is None


def test_moving_average_peak_and_first_fall_below_sft():
    # windows (0.5, 0.6, 0.7) = 0.6 at KL 1, (0.6, 0.7, 0.65) = 0.65 at KL 3, (0.7, 0.65, 0.55) = 0.633 at KL 5
    peak, at = moving_average_peak(CURVE)
    assert peak == pytest.approx(0.65) and at == 3.0
    assert moving_average_peak(CURVE[:2]) == (None, None)
    assert kl_below(CURVE, 0.5) is None  # never below the start's 0.5
    assert kl_below(CURVE, 0.6) == pytest.approx(4.5)  # 5 + (0.65 - 0.6) / (0.65 - 0.55) * (4 - 5)
    assert kl_below([(0.0, 0.5), (2.0, 0.3)], 0.6) == 0.0  # the start itself below the level
    r = frontier_readings(CURVE, sft_gold=0.5)
    assert r == {"gold@kl2": pytest.approx(0.65), "gold@kl4": pytest.approx(0.675), "gold@kl8": None, "gold@kl16": None,
                 "gold_peak": pytest.approx(0.65), "kl_at_peak": 3.0, "kl_below_sft": None}


def test_envelope_is_the_best_curve_at_each_kl():
    other = [(0.0, 0.5), (2.0, 0.8)]
    env = envelope([CURVE, other], [0.0, 2.0, 4.0, 6.0])
    assert env[:3] == [0.5, pytest.approx(0.8), pytest.approx(0.675)] and env[3] is None


def test_paired_t_interval_on_three_numbers():
    # mean 0.03, sd 0.02, t_{0.975, 2} = 4.3027: half-width 4.3027 * 0.02 / sqrt(3) = 0.049683
    m, lo, hi = mean_t_interval([0.01, 0.03, 0.05])
    assert m == pytest.approx(0.03) and lo == pytest.approx(-0.019683, abs=1e-5) and hi == pytest.approx(0.079683, abs=1e-5)


def test_paired_bootstrap_on_a_tiny_table_is_stratified_by_run():
    # run A's differences (0, 1) resample to a mean of 0, 0.5, 1 (probabilities 1/4, 1/2, 1/4); run B's (1, 1) to 1:
    # the statistic (m_A + 1) / 2 takes 0.5, 0.75, 1, so its 2.5% and 97.5% quantiles are 0.5 and 1
    assert paired_bootstrap([[0.0, 1.0], [1.0, 1.0]], n_boot=8000) == (0.75, 0.5, 1.0)
    # runs (0, 0) and (1, 1): resampling within each run always gives 0.5; pooling the four prompts would not
    assert paired_bootstrap([[0.0, 0.0], [1.0, 1.0]]) == (0.5, 0.5, 0.5)
    with pytest.raises(ValueError):
        paired_bootstrap([[0.0], []])


def test_power_calculation_by_hand():
    # n = 10: (t_{0.975, 9} + t_{0.8, 9}) / sqrt(10) = (2.2622 + 0.8834) / 3.1623 = 0.9947
    assert detectable_difference(1.0, 10) == pytest.approx(0.9947, abs=2e-4)
    assert detectable_difference(1.0, 9) == pytest.approx((2.3060 + 0.8889) / 3, abs=2e-4)  # 1.065 > 1
    assert units_needed(1.0, 1.0) == 10
    assert units_needed(0.05, 0.03) == units_needed(1.0, 0.6)  # only sd / delta matters
    assert units_needed(1.0, 1e-4, most=1000) is None
    with pytest.raises(ValueError):
        detectable_difference(1.0, 1)


def test_decision_rule():
    assert decide(0.001, 0.05, 0.03) == "supported"
    assert decide(-0.02, 0.029, 0.03) == "not supported" and decide(-0.09, -0.01, 0.03) == "not supported"
    assert decide(-0.01, 0.04, 0.03) == "inconclusive"


def _eval(tmp_path, name, gold, ref_gold, prompts=("p0", "p1")):
    ev = tmp_path / f"{name}.json"
    ev.write_text(json.dumps({"gold/score": sum(gold) / len(gold)}))
    rows = [{"prompt": p, "responses": ["x"], "rewards": [g], "gold": g, "ref_response": "y", "ref_gold": r}
            for p, g, r in zip(prompts, gold, ref_gold)]
    (tmp_path / f"{name}.samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return ev


def test_paired_differences_by_hand(tmp_path):
    # seed 0: PPO wins (1, 0), contrastive (1, 1) -> differences (0, 1), mean 0.5; gold (0, 0.4) -> 0.2
    # seed 1: PPO (0.5, 1), contrastive (0, 1) -> (-0.5, 0), mean -0.25; gold (-0.2, 0.2) -> 0
    recs = [{"method": "ppo", "seed": 0, "run_seed": 0, "eval": _eval(tmp_path, "ppo0", [0.5, 0.2], [0.4, 0.4])},
            {"method": "contrastive", "seed": 0, "run_seed": 0, "eval": _eval(tmp_path, "c0", [0.5, 0.6], [0.4, 0.4])},
            {"method": "ppo", "seed": 1, "run_seed": 1, "eval": _eval(tmp_path, "ppo1", [0.3, 0.3], [0.3, 0.1])},
            {"method": "contrastive", "seed": 1, "run_seed": 1, "eval": _eval(tmp_path, "c1", [0.1, 0.5], [0.3, 0.1])}]
    p = report.paired_differences(recs, n_boot=8000)["contrastive"]
    assert p["units"] == 2 and p["unit"] == "seeds"
    w = p["win"]
    assert w["per_unit"] == [0.5, -0.25] and w["mean"] == pytest.approx(0.125)
    half = 12.7062 * math.sqrt(0.28125) / math.sqrt(2)  # t_{0.975, 1} * sd / sqrt(2)
    assert w["lo"] == pytest.approx(0.125 - half, abs=1e-3) and w["hi"] == pytest.approx(0.125 + half, abs=1e-3)
    # bootstrap: (m_0 + m_1) / 2 with m_0 in {0, 0.5, 1}, m_1 in {-0.5, -0.25, 0}; the extremes have probability 1/16
    assert (w["boot_lo"], w["boot_hi"]) == (-0.25, 0.5) and w["decision"] == "inconclusive"
    assert p["gold"]["per_unit"] == [pytest.approx(0.2), pytest.approx(0.0)]
    assert "| PPO + contrastive rewards | +0.125 [" in report.paired_table({"contrastive": p})
    # one pipeline seed, two PPO seeds: SFT (one run) pairs with both PPO runs; the units are the PPO seeds
    one = [recs[0], {**recs[2], "seed": 0, "run_seed": 1, "eval": _eval(tmp_path, "ppo0b", [0.3, 0.3], [0.4, 0.4])},
           {"method": "sft", "seed": 0, "run_seed": 0, "eval": _eval(tmp_path, "sft0", [0.4, 0.4], [0.4, 0.4])}]
    s = report.paired_differences(one)["sft"]  # SFT ties (0.5, 0.5); PPO seed 0 (1, 0), PPO seed 1 (0, 0)
    assert s["unit"] == "PPO seeds of one seed" and s["win"]["per_unit"] == [0.0, 0.5]
    bad = [recs[0], {**recs[1], "eval": _eval(tmp_path, "other", [0.5, 0.6], [0.4, 0.4], prompts=("p0", "q"))}]
    with pytest.raises(ValueError, match="different prompts"):
        report.paired_differences(bad)


def test_frontier_table_pairs_runs_at_the_same_coefficient():
    rows = []
    for m, seed, pts in (("ppo", 0, CURVE), ("ppo", 1, [(0.0, 0.5), (4.0, 0.6)]),
                         ("contrastive", 0, [(0.0, 0.5), (4.0, 0.75)]), ("contrastive", 1, [(0.0, 0.5), (2.0, 0.6)])):
        rows += [{"method": m, "seed": seed, "pipeline_seed": seed, "step": i, "kl": kl, "gold": g, "proxy": None,
                  "kl_coef": 0.05} for i, (kl, g) in enumerate(pts)]
    runs, table = report.frontier(rows)
    assert len(runs) == 4
    c = next(r for r in table if r["method"] == "contrastive")
    # gold at KL 2: contrastive 0.625 and 0.6, PPO 0.65 and 0.55 -> differences -0.025, +0.05
    assert c["gold@kl2"] == pytest.approx(0.6125) and c["gold@kl2_n"] == 2
    mean, lo, hi = c["gold@kl2_minus_ppo"]
    assert mean == pytest.approx(0.0125) and lo < mean < hi
    # KL 4: contrastive seed 1 never gets there (missing, not extrapolated): one pair, no interval
    assert c["gold@kl4_n"] == 1 and c["gold@kl4_minus_ppo"] == (pytest.approx(0.075), None, None)
    assert c["gold@kl8"] is None and "missing" in report.frontier_table(table)
    # the paired t-test on (-0.025, +0.05): t = 0.0125 / 0.0375 = 1/3 on 1 df (Cauchy), p = 1 - 2 atan(1/3) / pi
    assert c["gold@kl2_minus_ppo_p"] == pytest.approx(1 - 2 * math.atan(1 / 3) / math.pi, abs=1e-4)
    assert c["gold@kl4_minus_ppo_p"] is None  # one pair: no test


def test_t_cdf_and_paired_t_pvalue_by_hand():
    for t in (0.5, 2.0, 4.303, 1e4):  # df = 2: 1/2 + t / (2 sqrt(2 + t^2)); df = 1 (Cauchy): 1/2 + atan(t) / pi
        assert t_cdf(t, 2) == pytest.approx(0.5 + t / (2 * math.sqrt(2 + t * t)), abs=1e-12)
        assert t_cdf(t, 1) == pytest.approx(0.5 + math.atan(t) / math.pi, abs=1e-12)
        assert t_cdf(-t, 2) == pytest.approx(1 - t_cdf(t, 2))
    far = [t_cdf(t, 9) for t in (2.0, 5.0, 10.0, 20.0)]  # the far tail: rising, never above 1
    assert far == sorted(far) and max(t_cdf(t, 9) for t in (1e3, 1e6)) <= 1.0
    assert 0 <= paired_t_pvalue([1, 1 + 1e-9, 1 - 1e-9]) < 1e-12  # t about 1.7e9
    # (1, 2, 3): mean 2, sd 1, t = 2 sqrt(3) on 2 df -> p = 2 (1 - CDF) = 1 - sqrt(12) / sqrt(14)
    assert paired_t_pvalue([1, 2, 3]) == pytest.approx(1 - math.sqrt(12 / 14), abs=1e-9)
    assert paired_t_pvalue([-1, -2, -3]) == paired_t_pvalue([1, 2, 3])
    for v in ([0.1, 0.3, 0.2, 0.25], [0.01, -0.02, 0.03]):  # p < 0.05 exactly when the 95% t-interval excludes 0
        _, lo, hi = mean_t_interval(v)
        assert (paired_t_pvalue(v) < 0.05) == (lo > 0 or hi < 0)
    assert paired_t_pvalue([0.0, 0.0]) == 1.0 and paired_t_pvalue([0.2, 0.2]) == 0.0
    with pytest.raises(ValueError, match="at least 2"):
        paired_t_pvalue([1.0])


def test_holm_by_hand():
    # sorted 0.005, 0.01, 0.03, 0.04 -> x4, x3, x2, x1 = 0.02, 0.03, 0.06, 0.04 -> running max 0.02, 0.03, 0.06, 0.06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.9]) == [1.0, 1.0] and holm([]) == []


def test_frontier_holm_tests_every_paired_reading_together():
    rows = [{"method": "ppo", "kl_coef": 0.2, "gold@kl2": 0.8},
            {"method": "rloo", "kl_coef": 0.2, "gold@kl2_minus_ppo": (0.03, 0.01, 0.05), "gold@kl2_minus_ppo_p": 0.01,
             "gold_peak_minus_ppo": (0.0, -0.1, 0.1), "gold_peak_minus_ppo_p": 0.9},
            {"method": "grpo", "kl_coef": 0.01, "gold@kl8_minus_ppo": (0.06, 0.01, 0.11), "gold@kl8_minus_ppo_p": 0.02,
             "gold@kl16_minus_ppo": (0.1, None, None), "gold@kl16_minus_ppo_p": None}]  # one pair: not a test
    n, hits = report.frontier_holm(rows)
    assert n == 3 and [(h["method"], h["reading"]) for h in hits] == [("rloo", "gold@kl2"), ("grpo", "gold@kl8")]
    assert [h["holm_p"] for h in hits] == pytest.approx([0.03, 0.04])  # 0.01 x 3, then max(0.03, 0.02 x 2)
    md = report.frontier_holm_table(rows)
    assert md.startswith("2 of the 3 paired gold readings") and "| GRPO (no critic) | 0.01 | gold at KL 8 | +0.060" in md
    assert report.frontier_holm_table([{"method": "ppo", "kl_coef": 0.2}]) == ""


def test_frontier_band_is_each_seeds_envelope_up_to_the_common_reach():
    def rows(seed, coef, pts):
        return [{"method": "ppo", "seed": 0, "pipeline_seed": seed, "step": i, "kl": kl, "gold": g, "proxy": g + 1.0,
                 "kl_coef": coef} for i, (kl, g) in enumerate(pts)]
    # seed 0 at two coefficients, seed 1 at one; seed 1 stops at KL 3, so the band ends there
    curve_rows = (rows(0, 0.05, [(0.0, 0.5), (2.0, 0.7)]) + rows(0, 0.01, [(0.0, 0.5), (4.0, 0.6)])
                  + rows(1, 0.05, [(0.0, 0.4), (3.0, 0.7)]))
    xs, mean, lo, hi, n = report.frontier_band(curve_rows, "ppo", "gold", points=4)
    # seed 0's envelope at KL 0, 1, 2, 3: 0.5, max(0.6, 0.525), max(0.7, 0.55), 0.575 (only the 0.01 run gets to 3)
    # seed 1's: 0.4, 0.5, 0.6, 0.7
    assert n == 2 and xs == [0.0, 1.0, 2.0, 3.0]
    assert mean == pytest.approx([0.45, 0.55, 0.65, 0.6375])
    assert lo == pytest.approx([0.4, 0.5, 0.6, 0.575]) and hi == pytest.approx([0.5, 0.6, 0.7, 0.7])
    # the proxy is each run's gain since its start (each RM has its own offset): seed 0 0, 0.1, 0.2, 0.075; seed 1
    # 0, 0.1, 0.2, 0.3
    assert report.frontier_band(curve_rows, "ppo", "proxy", points=4)[1] == pytest.approx([0.0, 0.1, 0.2, 0.1875])
    assert report.frontier_band(curve_rows, "rloo") is None


def test_frontier_plot_draws_every_method_or_says_how_to_get_the_png(tmp_path):
    rows = [{"method": m, "seed": 0, "pipeline_seed": s, "step": i, "kl": kl, "gold": g, "proxy": g, "kl_coef": 0.05}
            for m in ("ppo", "contrastive") for s in (0, 1) for i, (kl, g) in enumerate(CURVE)]
    msg = plot.frontier_plot(tmp_path, rows)
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert "matplotlib is not installed" in msg and not (tmp_path / "frontier.png").exists()
        return
    assert msg == "wrote frontier.png" and (tmp_path / "frontier.png").read_bytes()[:4] == b"\x89PNG"
    assert plot.frontier_plot(tmp_path / "none", []) == "no logged curves: no frontier.png"


def test_run_diagnostics_skips_unlogged_and_undecided_accuracies(tmp_path):
    """runs.csv's mechanism logs by hand; an on-policy accuracy written as null (no pair decided by gold, which
    small evaluations meet) is left out of its mean rather than breaking the report."""
    run, rm = tmp_path / "ppo", tmp_path / "rm"
    run.mkdir(), rm.mkdir()
    rows = [{"step": 0, "rm/onpolicy_gold_accuracy": 0.5},
            {"step": 1, "ppo/advantages/var": 2.0, "value/eos_error": 0.25},
            {"step": 2, "ppo/advantages/var": 4.0, "value/eos_error": -0.75},
            {"step": 3, "rm/onpolicy_gold_accuracy": 0.75},
            {"step": 4, "rm/onpolicy_gold_accuracy": None}]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (d,) = report.run_diagnostics([{"flip_rate": 0.0, "method": "ppo", "run_seed": 0, "rm": rm, "dir": run}])
    assert d["advantage_var_first10"] == 3.0 and d["advantage_var_last10"] == 3.0
    assert d["value_eos_error_first10"] == -0.25
    assert d["onpolicy_acc_last"] == 0.75  # the last one logged with a value
    assert d["first_rm_onpolicy_acc_last"] is None
