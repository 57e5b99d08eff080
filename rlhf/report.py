"""The tables and CSVs of a set of evaluated runs (what reproduce.py writes at the end; rlhf.plot draws the pictures).

A run is one evaluated policy: the evaluation JSON that evaluate.py wrote and, for the PPO family, the
training directory whose metrics.jsonl has its logged evaluations. Mean +- std is over runs (seeds).
"""
from __future__ import annotations

import csv
import io
import math
import statistics
from pathlib import Path

from rlhf.data import atomic_write_bytes, read_json, read_metrics, read_objects
from rlhf.frontier import KL_BUDGETS, envelope, frontier_readings

METHODS = ["sft", "best_of_n", "dpo", "ppo", "rloo", "grpo", "contrastive", "rlp_uml", "rlp_spg", "oracle"]  # table order
LABELS = {"sft": "SFT", "best_of_n": "best-of-n (SFT, RM)", "dpo": "DPO (the RM's pairs)", "ppo": "PPO",
          "rloo": "RLOO (no critic)", "grpo": "GRPO (no critic)", "contrastive": "PPO + contrastive rewards",
          "rlp_uml": "RLP-UML", "rlp_spg": "RLP-SPG", "oracle": "PPO on gold (oracle)"}
COLUMNS = [("gold/win_rate", "gold win rate vs SFT"), ("gold/score", "gold"), ("proxy/score", "proxy (first RM)"),
           ("proxy/gain", "proxy minus SFT's (same seed)"), ("objective/kl", "KL to SFT"), ("eval/length", "length")]
# what runs.csv reports of each RM a run used (train_rm.py's diagnostics.json; the rlp/* keys only for RLP's RMs)
RM_KEYS = ["rm/gold_accuracy", "sft_pairs/gold_accuracy", "rlp/onpolicy_gold_accuracy_before",
           "rlp/onpolicy_gold_accuracy_after", "rlp/spg_pairs", "rlp/spg_acceptance", "rlp/spg_gold_accuracy"]


def summarise(evals: dict[str, list[Path]], base: str = "sft", seed_of: dict[str, list[int]] | None = None) -> dict:
    """method -> per-run metrics and mean / std of each column (std is 0 for one run).

    Each seed has its own RM, whose scores have an arbitrary offset, so the proxy's mean over seeds mixes
    scales. `proxy/gain` is the proxy score minus the `base` method's (SFT's) proxy score in the same seed,
    which compares across seeds; it is absent (NaN, shown as "-") when `base` was not evaluated.
    seed_of[m][i] is the seed of the data, SFT and RM of evals[m][i] (default i: one run per seed)."""
    seed_of = seed_of or {m: list(range(len(paths))) for m, paths in evals.items()}
    ref = dict(zip(seed_of.get(base, []), (read_json(p) for p in evals.get(base, []))))
    out = {}
    for m, paths in evals.items():
        rows = [read_json(p) for p in paths]
        for r, seed in zip(rows, seed_of[m]):
            b = ref.get(seed, {})
            if r.get("proxy/score") is not None and b.get("proxy/score") is not None:
                r["proxy/gain"] = float(r["proxy/score"]) - float(b["proxy/score"])
        s = {"seeds": [{k: r.get(k) for k, _ in COLUMNS + [("gold/win_rate_lo", ""), ("gold/win_rate_hi", "")]} for r in rows]}
        for k, _ in COLUMNS:
            xs = [float(r[k]) for r in rows if r.get(k) is not None]
            s[k] = {"mean": statistics.fmean(xs) if xs else float("nan"),
                    "std": statistics.stdev(xs) if len(xs) > 1 else 0.0}
        out[m] = s
    return out


def table(summary: dict, first_col: str = "method") -> str:
    """A markdown table of `summarise`'s output (keys: row labels): mean +- std per column, each run's win rate."""
    head = f"| {first_col} | " + " | ".join(label for _, label in COLUMNS) + " | per-seed win rate [95% CI] |"
    lines = [head, "|" + "---|" * (len(COLUMNS) + 2)]
    for name, s in summary.items():
        cells = ["-" if math.isnan(s[k]["mean"]) else f"{s[k]['mean']:.3f} ± {s[k]['std']:.3f}" if len(s["seeds"]) > 1
                 else f"{s[k]['mean']:.3f}" for k, _ in COLUMNS]
        ci = "; ".join(f"{r['gold/win_rate']:.3f} [{r['gold/win_rate_lo']:.3f}, {r['gold/win_rate_hi']:.3f}]" for r in s["seeds"])
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {ci} |")
    return "\n".join(lines) + "\n"


def noise_table(noise: dict[float, dict]) -> str:
    """flip rate -> `summarise` output as markdown: a method x flip-rate table of win rates, then each level's table."""
    pivot = ["| method | " + " | ".join(f"flip {lvl}" for lvl in noise) + " |", "|---|" + "---|" * len(noise)]
    for m in dict.fromkeys(m for v in noise.values() for m in v):
        cells = [f"{v[m]['gold/win_rate']['mean']:.3f} ± {v[m]['gold/win_rate']['std']:.3f}" if m in v else "-" for v in noise.values()]
        pivot.append(f"| {LABELS[m]} | " + " | ".join(cells) + " |")
    return ("gold win rate vs SFT at each annotator label-flip rate (same prompts and demonstrations, same SFT policy; "
            "labels, RM and every later stage rerun)\n\n" + "\n".join(pivot) + "\n" +
            "".join(f"\n### label-flip rate {lvl}\n\n" + table({LABELS[m]: s for m, s in v.items()}) for lvl, v in noise.items()))


def curves(runs: list[dict], start: dict[int, Path]) -> list[dict]:
    """Every logged evaluation of every PPO-family run: (method, seed, step, KL, gold, proxy, KL coefficient) -> curves.csv.
    runs: dicts with method, run_seed (the run's own seed: the row's seed), seed (its SFT's seed: the row's
    pipeline_seed), dir (its training directory) and optionally kl_coef (its --kl-coef; None: not recorded).
    proxy is the score of the RM that run trained against (for RLP the retrained RM; none for the oracle).
    A run without its own step-0 evaluation starts at its SFT's evaluation (KL 0): start[seed], an SFT eval JSON."""
    rows = []
    for run in runs:
        m, seed = run["method"], run["run_seed"]
        logged = read_metrics(run["dir"] / "metrics.jsonl")
        if run["seed"] in start and not any(r.get("step") == 0 and "gold/score" in r for r in logged):
            e = read_json(start[run["seed"]])
            own_rm = m in ("ppo", "rloo", "grpo", "contrastive")  # RLP runs train on another RM; the oracle on none
            rows.append({"method": m, "seed": seed, "step": 0, "kl": 0.0, "gold": e["gold/score"],
                         "proxy": e.get("proxy/score") if own_rm else None, "kl_coef": run.get("kl_coef"),
                         "pipeline_seed": run["seed"]})
        for r in logged:
            if "gold/score" in r:  # an evaluation line: objective/kl is then the held-out KL
                rows.append({"method": m, "seed": seed, "step": r.get("step"), "kl": r["objective/kl"],
                             "gold": r["gold/score"], "proxy": r.get("proxy/score"), "kl_coef": run.get("kl_coef"),
                             "pipeline_seed": run["seed"]})
    return rows


def _units(pairs: list[tuple[int, int]]) -> tuple[str, callable]:
    """The independent units of a paired comparison: the pipeline seeds when there are two or more (each averaged
    over its PPO seeds), else the PPO seeds of the one pipeline seed (then conditional on its data, SFT and RM)."""
    if len({s for s, _ in pairs}) >= 2:
        return "seeds", lambda s, ps: s
    return "PPO seeds of one seed", lambda s, ps: (s, ps)


def prompt_outcomes(eval_json: Path) -> tuple[list[str], list[float | None], list[float | None]]:
    """(prompts, gold, win outcome against the reference: 1 / 0.5 / 0) per held-out prompt, from the samples file
    evaluate.py wrote beside eval_json (<stem>.samples.jsonl; None where the prompt has no gold score)."""
    from rlhf.metrics import win_outcomes
    rows = read_objects(Path(eval_json).with_name(Path(eval_json).stem + ".samples.jsonl"))
    gold = [r.get("gold") for r in rows]
    known = [i for i, r in enumerate(rows) if r.get("gold") is not None and r.get("ref_gold") is not None]
    wins = [None] * len(rows)
    for i, w in zip(known, win_outcomes([rows[i]["gold"] for i in known], [rows[i]["ref_gold"] for i in known]).tolist()):
        wins[i] = w
    return [r["prompt"] for r in rows], gold, wins


def paired_differences(records: list[dict], base: str = "ppo", delta: float = 0.03, n_boot: int = 4000) -> dict:
    """method -> its difference from `base` (PPO) in gold win rate vs SFT and in gold score, paired within seeds.

    records: evaluated runs (method, seed, run_seed, eval). A run pairs with the base run of the same seed and PPO
    seed; a method with one run a seed (SFT, best-of-n, DPO) pairs with each of the seed's base runs. Per metric:
        mean, lo, hi   mean over units of the per-unit difference, 95% t-interval (rlhf.metrics.mean_t_interval;
                       NaN with one unit)
        boot_lo, boot_hi   per-prompt paired bootstrap pooled over units (rlhf.metrics.paired_bootstrap)
        decision       rlhf.metrics.decide on the t-interval with `delta` (win rate only)
    plus units (their number) and unit (what they are: _units)."""
    from rlhf.metrics import decide, mean_t_interval, paired_bootstrap
    base_runs = {(r["seed"], r["run_seed"]): r for r in records if r["method"] == base}
    if not base_runs:
        return {}
    unit_name, unit_of = _units(list(base_runs))
    cache = {}

    def outcomes(path):
        if path not in cache:
            cache[path] = prompt_outcomes(path)
        return cache[path]

    out = {}
    for m in dict.fromkeys(r["method"] for r in records if r["method"] != base):
        runs = [r for r in records if r["method"] == m]
        per_unit = {}  # unit -> {"win": [per-prompt diff vectors], "gold": [...]}
        for r in runs:
            if sum(x["seed"] == r["seed"] for x in runs) == 1:  # one run this seed: against each of the seed's base runs
                partners = [b for (s, _), b in base_runs.items() if s == r["seed"]]
            else:  # one run per PPO seed: the base run of the same PPO seed
                partners = [base_runs[(r["seed"], r["run_seed"])]] if (r["seed"], r["run_seed"]) in base_runs else []
            for b in partners:
                (pa, ga, wa), (pb, gb, wb) = outcomes(r["eval"]), outcomes(b["eval"])
                if pa != pb:
                    raise ValueError(f"{r['eval']} and {b['eval']} evaluated different prompts: a paired difference needs the same ones")
                u = per_unit.setdefault(unit_of(r["seed"], b["run_seed"]), {"win": [], "gold": []})
                u["win"].append([x - y if x is not None and y is not None else None for x, y in zip(wa, wb)])
                u["gold"].append([x - y if x is not None and y is not None else None for x, y in zip(ga, gb)])
        if not per_unit:
            continue
        res = {"units": len(per_unit), "unit": unit_name}
        for key in ("win", "gold"):
            vecs = []
            for u in per_unit.values():  # average a unit's run pairs prompt by prompt (the same prompts within a seed)
                cols = list(zip(*u[key]))
                vecs.append([sum(c) / len(c) for c in cols if None not in c])
            means = [sum(v) / len(v) for v in vecs]
            mean, lo, hi = mean_t_interval(means) if len(means) >= 2 else (means[0], float("nan"), float("nan"))
            _, blo, bhi = paired_bootstrap(vecs, n_boot=n_boot)
            res[key] = {"mean": mean, "lo": lo, "hi": hi, "boot_lo": blo, "boot_hi": bhi, "per_unit": means,
                        **({"decision": decide(lo, hi, delta) if len(means) >= 2 else "inconclusive"} if key == "win" else {})}
        out[m] = res
    return out


def paired_table(paired: dict, base_label: str = "PPO", delta: float = 0.03) -> str:
    """paired_differences as markdown: per method, the difference from PPO with both intervals and the decision."""
    def cell(x, lo, hi):
        return f"{x:+.3f} [{lo:+.3f}, {hi:+.3f}]" if not math.isnan(lo) else f"{x:+.3f}"
    lines = [f"| method | win rate minus {base_label}'s: mean [95% t over units] | paired bootstrap over prompts | "
             f"gold minus {base_label}'s [95% t] | bootstrap | units | decision (delta {delta:g}) |", "|---|---|---|---|---|---|---|"]
    for m, r in paired.items():
        w, g = r["win"], r["gold"]
        lines.append(f"| {LABELS[m]} | {cell(w['mean'], w['lo'], w['hi'])} | [{w['boot_lo']:+.3f}, {w['boot_hi']:+.3f}] | "
                     f"{cell(g['mean'], g['lo'], g['hi'])} | [{g['boot_lo']:+.3f}, {g['boot_hi']:+.3f}] | "
                     f"{r['units']} {r['unit']} | {w['decision']} |")
    return "\n".join(lines) + "\n"


def run_curve(rows: list[dict], key: str = "gold") -> list[tuple[float, float]]:
    """One run's curves.csv rows -> [(kl, value)] in training order (rows without the value left out)."""
    return [(float(r["kl"]), float(r[key])) for r in sorted(rows, key=lambda r: r["step"]) if r.get(key) not in (None, "")]


def frontier(curve_rows: list[dict], base: str = "ppo", budgets=KL_BUDGETS) -> tuple[list[dict], list[dict]]:
    """The frontier table from curves(): (one row per run: method, kl_coef, pipeline_seed, seed and
    rlhf.frontier.frontier_readings, SFT's gold being the run's own first evaluation, on the same prompts; one row
    per method and coefficient: each reading's mean over the runs that have it and their number, and for the gold
    readings the paired difference from `base` at the same coefficient and seeds: mean and 95% t-interval over
    units (_units: pipeline seeds, each averaged over its PPO seeds, or one seed's PPO seeds) that have both, and the
    paired t-test's two-sided p-value under `{reading}_minus_{base}_p` (from 2 units on))."""
    from rlhf.metrics import mean_t_interval, paired_t_pvalue
    groups = {}
    for r in curve_rows:
        groups.setdefault((r["method"], r.get("kl_coef"), r.get("pipeline_seed"), r["seed"]), []).append(r)
    runs = []
    for (m, c, s, seed), rows in groups.items():
        curve = run_curve(rows)
        if curve:
            runs.append({"method": m, "kl_coef": c, "pipeline_seed": s, "seed": seed,
                         **frontier_readings(curve, curve[0][1], budgets)})
    keys = [k for k in runs[0] if k not in ("method", "kl_coef", "pipeline_seed", "seed")] if runs else []
    _, unit_of = _units([(r["pipeline_seed"], r["seed"]) for r in runs if r["method"] == base])
    table_rows = []
    for m, c in dict.fromkeys((r["method"], r["kl_coef"]) for r in runs):
        mine = {(r["pipeline_seed"], r["seed"]): r for r in runs if r["method"] == m and r["kl_coef"] == c}
        theirs = {(r["pipeline_seed"], r["seed"]): r for r in runs if r["method"] == base and r["kl_coef"] == c}
        row = {"method": m, "kl_coef": c, "runs": len(mine)}
        for k in keys:
            xs = [r[k] for r in mine.values() if r[k] is not None]
            row[k] = statistics.fmean(xs) if xs else None
            row[f"{k}_n"] = len(xs)
            if m != base and k.startswith("gold"):
                per_unit = {}
                for key, r in mine.items():
                    if key in theirs and None not in (r[k], theirs[key][k]):
                        per_unit.setdefault(unit_of(*key), []).append(r[k] - theirs[key][k])
                d = [statistics.fmean(v) for v in per_unit.values()]
                row[f"{k}_minus_{base}"] = mean_t_interval(d) if len(d) >= 2 else ((d[0], None, None) if d else None)
                row[f"{k}_minus_{base}_p"] = paired_t_pvalue(d) if len(d) >= 2 else None
        table_rows.append(row)
    return runs, table_rows


def _reading_name(k: str) -> str:
    """A frontier reading's column title: gold@kl4 -> gold at KL 4."""
    names = {"gold_peak": "peak gold (3-pt avg)", "kl_at_peak": "KL at the peak", "kl_below_sft": "KL where gold < SFT's"}
    return names.get(k, k.replace("gold@kl", "gold at KL "))


def frontier_table(rows: list[dict], base: str = "ppo", base_label: str = "PPO") -> str:
    """frontier()'s per-method rows as markdown: mean (n runs that reached it) and, below PPO, the paired difference."""
    if not rows:
        return ""
    keys = [k for k in rows[0] if k not in ("method", "kl_coef", "runs") and not k.endswith("_n") and "_minus_" not in k]
    lines = ["| method | KL coef | runs | " + " | ".join(_reading_name(k) for k in keys) + " |",
             "|---|---|---|" + "---|" * len(keys)]
    for r in rows:
        cells = []
        for k in keys:
            v = "missing" if r[k] is None else f"{r[k]:.3f}" + (f" ({r[k + '_n']}/{r['runs']})" if r[k + "_n"] < r["runs"] else "")
            diff = r.get(f"{k}_minus_{base}")
            if diff:
                mean, lo, hi = diff
                v += f"; {mean:+.3f}" + (f" [{lo:+.3f}, {hi:+.3f}]" if lo is not None else "") + f" vs {base_label}"
            cells.append(v)
        lines.append(f"| {LABELS[r['method']]} | {r['kl_coef']} | {r['runs']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def frontier_holm(rows: list[dict], base: str = "ppo", alpha: float = 0.05) -> tuple[int, list[dict]]:
    """The frontier's paired gold readings tested together: every reading of frontier()'s rows with a p-value (each
    method but `base`, each coefficient, each gold reading) is one test; Holm's adjustment (rlhf.metrics.holm) over
    all of them. -> (number of tests, the readings with an unadjusted p < alpha, ascending p: method, kl_coef,
    reading, (mean, lo, hi), p, holm_p)"""
    from rlhf.metrics import holm
    tests = [(r, k[: -len(f"_minus_{base}_p")]) for r in rows for k in r
             if k.endswith(f"_minus_{base}_p") and r[k] is not None]
    adjusted = holm([r[f"{k}_minus_{base}_p"] for r, k in tests])
    hits = [{"method": r["method"], "kl_coef": r["kl_coef"], "reading": k, "diff": r[f"{k}_minus_{base}"],
             "p": r[f"{k}_minus_{base}_p"], "holm_p": a} for (r, k), a in zip(tests, adjusted)
            if r[f"{k}_minus_{base}_p"] < alpha]
    return len(tests), sorted(hits, key=lambda h: h["p"])


def frontier_holm_table(rows: list[dict], base: str = "ppo", base_label: str = "PPO", alpha: float = 0.05) -> str:
    """frontier_holm() as markdown: the readings whose 95% interval excludes 0, each with its Holm-adjusted p."""
    n, hits = frontier_holm(rows, base, alpha)
    if not n:
        return ""
    lines = [f"{len(hits)} of the {n} paired gold readings above have a 95% interval that excludes 0. Tested together "
             f"(Holm's adjustment over all {n}), a reading stands at level {alpha} only if its adjusted p is below {alpha}:",
             "", f"| method | KL coef | reading | difference from {base_label} [95% CI] | p | Holm-adjusted p |",
             "|---|---|---|---|---|---|"]
    for h in hits:
        mean, lo, hi = h["diff"]
        lines.append(f"| {LABELS[h['method']]} | {h['kl_coef']} | {_reading_name(h['reading'])} "
                     f"| {mean:+.3f} [{lo:+.3f}, {hi:+.3f}] | {h['p']:.4f} | {h['holm_p']:.3f} |")
    return "\n".join(lines) + "\n"


def winrates(summary: dict, run_seeds: dict[str, list[int]]) -> list[dict]:
    """winrates.csv: each run's gold win rate vs SFT and its 95% interval; run_seeds[m]: the runs' own seeds."""
    return [{"method": m, "seed": seed, **{k: r[k] for k in ("gold/win_rate", "gold/win_rate_lo", "gold/win_rate_hi")}}
            for m, v in summary.items() for seed, r in zip(run_seeds[m], v["seeds"])]


def run_diagnostics(runs: list[dict]) -> list[dict]:
    """runs.csv: per run, the mechanism logs of train_ppo.py summarised (the mean PPO advantage variance before
    whitening over its last 10 iterations and over its first 10, the mean signed value error at EOS over the first
    10, the last logged on-policy gold accuracy of the RM it trained against and of the first RM) and the
    diagnostics of that RM (RM_KEYS). runs: dicts with flip_rate, method, run_seed, rm, dir and optionally kl_coef."""
    def mean_of(logged, key, part):
        xs = [r[key] for r in logged if isinstance(r.get(key), (int, float)) and r[key] == r[key]]  # logged, not null or NaN
        xs = xs[:10] if part == "first" else xs[-10:] if part == "last10" else xs[-1:]
        return statistics.fmean(xs) if xs else None
    rows = []
    for run in runs:
        logged = read_metrics(run["dir"] / "metrics.jsonl")
        diag = read_json(run["rm"] / "diagnostics.json") if (run["rm"] / "diagnostics.json").exists() else {}
        rows.append({"flip_rate": run["flip_rate"], "method": run["method"], "kl_coef": run.get("kl_coef"),
                     "seed": run["run_seed"], "rm": run["rm"].name,
                     "advantage_var_last10": mean_of(logged, "ppo/advantages/var", "last10"),
                     "advantage_var_first10": mean_of(logged, "ppo/advantages/var", "first"),
                     "value_eos_error_first10": mean_of(logged, "value/eos_error", "first"),
                     "onpolicy_acc_last": mean_of(logged, "rm/onpolicy_gold_accuracy", "last"),
                     "first_rm_onpolicy_acc_last": mean_of(logged, "rm_first/onpolicy_gold_accuracy", "last"),
                     **{k: diag.get(k) for k in RM_KEYS}})
    return rows


def write_text(path: Path, text: str) -> None:
    """Write `text` to `path` atomically."""
    atomic_write_bytes(path, [text.encode()])


def write_csv(path: Path, rows: list[dict]) -> None:
    """rows (dicts with the same keys) as CSV with a header; an empty file for no rows."""
    buf = io.StringIO()
    if rows:
        w = csv.DictWriter(buf, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    write_text(path, buf.getvalue())


def runs_by_seed(curve_rows: list[dict], m: str) -> dict:
    """Method m's curves.csv rows by run: (pipeline seed, seed) -> KL coefficient -> rows."""
    runs = {}
    for r in curve_rows:
        if r["method"] == m:
            runs.setdefault((r.get("pipeline_seed"), r["seed"]), {}).setdefault(r.get("kl_coef"), []).append(r)
    return runs


def frontier_band(curve_rows: list[dict], m: str, key: str = "gold", points: int = 60):
    """Method m's frontier over seeds: each seed's upper envelope over its KL coefficients (rlhf.frontier.envelope) on
    a grid up to the largest KL every seed reached; the proxy as its gain since the run's start (each RM has its own
    offset). -> (grid KLs, mean over seeds, min, max, number of seeds), or None when no run logged the key."""
    per_seed = []
    for by_coef in runs_by_seed(curve_rows, m).values():
        cs = [run_curve(rows, key) for rows in by_coef.values()]
        cs = [[(kl, v - c[0][1]) for kl, v in c] if key == "proxy" else c for c in cs if c]
        if cs:
            per_seed.append(cs)
    if not per_seed:
        return None
    reach = min(max(kl for c in cs for kl, _ in c) for cs in per_seed)
    grid = [reach * i / (points - 1) for i in range(points)]
    env = [envelope(cs, grid) for cs in per_seed]
    keep = [j for j in range(points) if all(e[j] is not None for e in env)]
    cols = [[e[j] for e in env] for j in keep]
    return ([grid[j] for j in keep], [statistics.fmean(c) for c in cols], [min(c) for c in cols],
            [max(c) for c in cols], len(per_seed))
