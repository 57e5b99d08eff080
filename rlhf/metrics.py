"""Evaluation statistics: win rate with ties, bootstrap intervals, calibration, correlation.

Shapes: N items (prompts or pairs).
"""
from __future__ import annotations

import functools
import math
import statistics

import torch


def win_outcomes(scores_a, scores_b, tie_tol: float = 1e-9):
    """Per-item outcome of A against B: 1 win, 0.5 tie (|a - b| <= tie_tol), 0 loss (compared in float64).  scores (N,) -> (N,)"""
    a, b = torch.as_tensor(scores_a, dtype=torch.float64), torch.as_tensor(scores_b, dtype=torch.float64)
    d = a - b
    return torch.where(d > tie_tol, 1.0, torch.where(d < -tie_tol, 0.0, 0.5))


def pair_accuracy(scores_a, scores_b, tie_tol: float = 0.0) -> float:
    """Share of pairs in which A scores above B, a tie counting 1/2: mean of win_outcomes. NaN for no pairs.

        acc = (1 / N) * sum_i ( [a_i > b_i] + 0.5 * [a_i == b_i] )
    The one pairwise-accuracy rule of the project: RM accuracy against labels or gold, the length rule, the
    RM's training accuracy. scores_a, scores_b (N,) -> float
    """
    outcomes = win_outcomes(scores_a, scores_b, tie_tol).double()  # exact: a mean of halves in float64
    return outcomes.mean().item() if outcomes.numel() else float("nan")


def few_caveat(n: int, least: int = 30) -> str:
    """"" for n >= least, else a caveat to print beside an accuracy over n items: with n = 10 its 95% interval is
    still about +-0.3 wide, so the figure alone should not be read."""
    return "" if n >= least else f" (only {n} pair{'' if n == 1 else 's'}: too few to read as an accuracy)"


def bootstrap_ci(values, n_boot: int = 2000, alpha: float = 0.05, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean: resample the N items with replacement n_boot times.

    values (N,) -> (lower, upper) of the (1 - alpha) interval.
    """
    v = torch.as_tensor(values, dtype=torch.float64)
    if v.numel() == 0:
        raise ValueError("bootstrap_ci needs at least one value")
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, v.numel(), (n_boot, v.numel()), generator=g)
    means = v[idx].mean(1)
    return (torch.quantile(means, alpha / 2).item(), torch.quantile(means, 1 - alpha / 2).item())


def expected_calibration_error(probs, labels, n_bins: int = 10) -> float:
    """ECE = sum_b (n_b / N) * |mean(p in b) - mean(y in b)| over n_bins equal-width bins of p.

    probs (N,) predicted P(y = 1), labels (N,) in {0, 1}.
    """
    p, y = torch.as_tensor(probs, dtype=torch.float64), torch.as_tensor(labels, dtype=torch.float64)
    bins = (p * n_bins).long().clamp(0, n_bins - 1)
    ece = torch.zeros((), dtype=torch.float64)
    for b in range(n_bins):
        m = bins == b
        if m.any():
            ece += m.sum() / p.numel() * (p[m].mean() - y[m].mean()).abs()
    return ece.item()


def pearson(x, y) -> float:
    """Pearson correlation of two (N,) sequences; 0.0 when either is constant."""
    x, y = torch.as_tensor(x, dtype=torch.float64), torch.as_tensor(y, dtype=torch.float64)
    x, y = x - x.mean(), y - y.mean()
    denom = (x.square().sum() * y.square().sum()).sqrt()
    return 0.0 if denom == 0 else (x * y).sum().div(denom).item()


def t_cdf(t: float, df: int, n: int = 2000) -> float:
    """Student's t CDF with df degrees of freedom (symmetric about 0):
        CDF(t) = 1/2 + integral_0^t c (1 + x^2 / df)^(-(df + 1) / 2) dx,  c = Gamma((df+1)/2) / (sqrt(df pi) Gamma(df/2))
               = 1/2 + c sqrt(df) integral_0^atan(t / sqrt(df)) cos(u)^(df - 1) du      (x = sqrt(df) tan u)
    The second form's integrand is smooth on a bounded interval, so Simpson's rule on n intervals stays accurate for
    any t, far tails included (df = 1 gives 1/2 + atan(t) / pi, df = 2 gives 1/2 + t / (2 sqrt(2 + t^2)): the tests
    check both)."""
    if df < 1:
        raise ValueError(f"t_cdf needs df >= 1 (got {df})")
    if t < 0:
        return 1.0 - t_cdf(-t, df, n)
    c = math.exp(math.lgamma((df + 1) / 2) - math.lgamma(df / 2)) / math.sqrt(df * math.pi)
    f = lambda u: math.cos(u) ** (df - 1)  # noqa: E731
    top = math.atan(t / math.sqrt(df))
    h = top / n
    area = h / 3 * (f(0) + f(top) + sum((4 if i % 2 else 2) * f(i * h) for i in range(1, n)))
    return min(1.0, 0.5 + c * math.sqrt(df) * area)


@functools.lru_cache(maxsize=4096)
def t_quantile(q: float, df: int) -> float:
    """The q-quantile (0.5 < q < 1) of Student's t with df degrees of freedom, by bisection on t_cdf
    (t_quantile(0.975, 2) = 4.303, as tables give)."""
    if not 0.5 < q < 1 or df < 1:
        raise ValueError(f"t_quantile needs 0.5 < q < 1 and df >= 1 (got q={q}, df={df})")
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < q:
        hi *= 2
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if t_cdf(mid, df) < q else (lo, mid)
    return (lo + hi) / 2


def mean_t_interval(values, alpha: float = 0.05) -> tuple[float, float, float]:
    """Mean and its (1 - alpha) Student t-interval over N >= 2 values (seeds; for a paired comparison, the per-seed
    differences):  mean +- t_{1 - alpha/2, N - 1} * sd / sqrt(N), sd with N - 1.  values (N,) -> (mean, lo, hi)"""
    v = [float(x) for x in values]
    if len(v) < 2:
        raise ValueError(f"a t-interval needs at least 2 values (got {len(v)})")
    m = sum(v) / len(v)
    half = t_quantile(1 - alpha / 2, len(v) - 1) * statistics.stdev(v) / math.sqrt(len(v))
    return m, m - half, m + half


def paired_t_pvalue(values) -> float:
    """Two-sided p-value of the paired t-test that the mean of N >= 2 per-unit differences is 0:
        t = mean / (sd / sqrt(N)),  p = 2 * (1 - CDF_t(|t|; N - 1)),  sd with N - 1
    (the test whose 95% interval is mean_t_interval: p < 0.05 exactly when that interval excludes 0). With sd = 0,
    p is 1 when every difference is 0 and 0 otherwise.  values (N,) -> p"""
    v = [float(x) for x in values]
    if len(v) < 2:
        raise ValueError(f"a paired t-test needs at least 2 values (got {len(v)})")
    m, sd = statistics.fmean(v), statistics.stdev(v)
    if sd == 0:
        return 1.0 if m == 0 else 0.0
    return min(1.0, 2 * (1 - t_cdf(abs(m) / (sd / math.sqrt(len(v))), len(v) - 1)))


def holm(pvalues) -> list[float]:
    """Holm's step-down adjustment of m p-values for testing them together (Holm 1979, "A simple sequentially
    rejective multiple test procedure"); it controls the chance of any false rejection at alpha when each adjusted
    p is compared with alpha. With p_(1) <= ... <= p_(m) in ascending order:
        adjusted p_(i) = max_{j <= i} min(1, (m - j + 1) * p_(j))
    pvalues (m,) -> adjusted p-values (m,), in the input's order"""
    p = [float(x) for x in pvalues]
    out, running = [0.0] * len(p), 0.0
    for rank, i in enumerate(sorted(range(len(p)), key=lambda i: p[i])):
        running = max(running, min(1.0, (len(p) - rank) * p[i]))
        out[i] = running
    return out


def paired_bootstrap(diffs_by_run, n_boot: int = 4000, alpha: float = 0.05, seed: int = 0) -> tuple[float, float, float]:
    """Per-prompt paired bootstrap of a difference between two methods, pooled over runs (seeds):

        stat = (1 / S) * sum_s mean_i d_{s,i},   d_{s,i} = (method's outcome - PPO's) on prompt i of run pair s
    Each replicate resamples the prompts of every run pair with replacement, separately (stratified by run pair), so
    the interval is the evaluation's noise given the trained policies: it leaves out the seed-to-seed noise of
    training, which the t-interval over seeds (mean_t_interval) keeps.
    diffs_by_run: S lists of per-prompt differences -> (stat, lo, hi) of the (1 - alpha) percentile interval"""
    runs = [torch.as_tensor(d, dtype=torch.float64) for d in diffs_by_run]
    if not runs or any(d.numel() == 0 for d in runs):
        raise ValueError("paired_bootstrap needs at least one run pair, each with at least one prompt")
    g = torch.Generator().manual_seed(seed)
    reps = torch.zeros(n_boot, dtype=torch.float64)
    for d in runs:
        reps += d[torch.randint(0, d.numel(), (n_boot, d.numel()), generator=g)].mean(1)
    reps /= len(runs)
    stat = sum(d.mean().item() for d in runs) / len(runs)
    return stat, torch.quantile(reps, alpha / 2).item(), torch.quantile(reps, 1 - alpha / 2).item()


def detectable_difference(sd: float, n: int, alpha: float = 0.05, power: float = 0.8) -> float:
    """The smallest true mean difference a two-sided paired t-test over n units with difference sd `sd` detects
    with probability `power` at level alpha (the usual approximation, ignoring the far tail):

        delta = (t_{1 - alpha/2, n-1} + t_{power, n-1}) * sd / sqrt(n)"""
    if n < 2:
        raise ValueError(f"a paired t-test needs at least 2 units (got {n})")
    return (t_quantile(1 - alpha / 2, n - 1) + t_quantile(power, n - 1)) * sd / math.sqrt(n)


def units_needed(sd: float, delta: float, alpha: float = 0.05, power: float = 0.8, most: int = 10**5) -> int | None:
    """The fewest units (seeds) n >= 2 with detectable_difference(sd, n) <= delta: the power calculation of a
    pre-registered paired comparison. None when even `most` units do not reach it. (The detectable difference
    falls as n grows, so: double n until it is reached, then bisect.)"""
    ok = lambda n: detectable_difference(sd, n, alpha, power) <= delta  # noqa: E731
    hi = 2
    while not ok(hi):
        if hi >= most:
            return None
        hi = min(2 * hi, most)
    lo = max(2, hi // 2)  # lo fails (or is 2), hi passes
    if ok(lo):
        return lo
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if ok(mid) else (mid, hi)
    return hi


def decide(lo: float, hi: float, delta: float) -> str:
    """The pre-registered decision on "the method improves on PPO" from the 95% interval [lo, hi] of its difference
    from PPO and the smallest effect of interest delta:
        supported      lo > 0           (the whole interval is an improvement)
        not supported  hi < delta       (an improvement as large as delta is ruled out; this includes worse)
        inconclusive   otherwise        (the interval holds 0 and reaches delta: more seeds needed)"""
    if lo > 0:
        return "supported"
    if hi < delta:
        return "not supported"
    return "inconclusive"
