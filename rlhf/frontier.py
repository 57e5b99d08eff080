"""The over-optimisation frontier: gold against KL along a training run (Gao et al. 2022, arXiv 2210.10760, fig. 1).

A curve is one run's held-out evaluations in training order: a list of (kl, value) points, value the gold score
(or the proxy), kl the held-out KL(policy || SFT) in nats per response, the first point the start (KL 0). KL need
not grow monotonically along a run, so every reading below takes the first time the curve gets there, and a KL the
run never reached is reported as missing (None), never extrapolated.
"""
from __future__ import annotations

KL_BUDGETS = (2.0, 4.0, 8.0, 16.0)  # nats: where the frontier table reads every curve


def value_at_kl(curve: list[tuple[float, float]], kl: float) -> float | None:
    """The curve's value where its KL first reaches `kl`, linearly interpolated between the two evaluations around it:

        j = the first segment with kl_j <= kl <= kl_{j+1} (or kl_j >= kl >= kl_{j+1}),
        value = v_j + (kl - kl_j) / (kl_{j+1} - kl_j) * (v_{j+1} - v_j)
    An evaluation exactly at `kl` is returned as is; None when no evaluation reaches `kl`.
    curve: [(kl, value)] in training order -> float | None"""
    for (k0, v0), (k1, v1) in zip(curve, curve[1:]):
        if k0 == kl:
            return v0
        if min(k0, k1) <= kl <= max(k0, k1):
            return v0 + (kl - k0) / (k1 - k0) * (v1 - v0)
    if curve and curve[-1][0] == kl:
        return curve[-1][1]
    return None


def moving_average_peak(curve: list[tuple[float, float]], width: int = 3) -> tuple[float | None, float | None]:
    """The highest `width`-point moving average of the values and the KL of that window's middle evaluation:

        peak = max_j (v_j + ... + v_{j+width-1}) / width,  at KL kl_{j + width // 2}
    Smoothing keeps one lucky evaluation (about +-0.03 at 100 prompts) from setting the peak. The first window
    wins a tie. (None, None) when the curve has fewer than `width` points.
    curve: [(kl, value)] in training order -> (peak, kl at the peak)"""
    if len(curve) < width:
        return None, None
    best = None
    for j in range(len(curve) - width + 1):
        avg = sum(v for _, v in curve[j:j + width]) / width
        if best is None or avg > best[0]:
            best = (avg, curve[j + width // 2][0])
    return best


def kl_below(curve: list[tuple[float, float]], level: float) -> float | None:
    """The KL at which the curve's value first falls below `level` (SFT's gold: where optimising the proxy has cost
    more gold than it gained), linearly interpolated between the last evaluation at or above `level` and the first
    one below it:  kl = kl_j + (v_j - level) / (v_j - v_{j+1}) * (kl_{j+1} - kl_j).
    The start counts as at the level; None when no later evaluation falls below it.
    curve: [(kl, value)] in training order -> float | None"""
    for j in range(1, len(curve)):
        if curve[j][1] < level:
            (k0, v0), (k1, v1) = curve[j - 1], curve[j]
            if v0 < level:  # the start itself is below the level (a noisy first evaluation): the start's KL
                return k0
            return k0 + (v0 - level) / (v0 - v1) * (k1 - k0)
    return None


def frontier_readings(curve: list[tuple[float, float]], sft_gold: float, budgets=KL_BUDGETS) -> dict:
    """One run's row of the frontier table: gold at each KL budget, the smoothed peak and its KL, and the KL where
    gold first falls below SFT's. Keys: gold@kl<b> for b in budgets, gold_peak, kl_at_peak, kl_below_sft (None:
    missing). curve: [(kl, gold)] in training order."""
    peak, at = moving_average_peak(curve)
    return {**{f"gold@kl{b:g}": value_at_kl(curve, b) for b in budgets}, "gold_peak": peak, "kl_at_peak": at,
            "kl_below_sft": kl_below(curve, sft_gold)}


def envelope(curves: list[list[tuple[float, float]]], grid: list[float]) -> list[float | None]:
    """The upper envelope of several runs' curves (one method and seed at several KL coefficients) on a KL grid:
    at each grid KL the best value_at_kl over the curves that reach it, None where none does. This is the frontier
    a method reaches when its KL coefficient is chosen for the budget. -> one value per grid point"""
    out = []
    for kl in grid:
        vals = [v for v in (value_at_kl(c, kl) for c in curves) if v is not None]
        out.append(max(vals) if vals else None)
    return out
