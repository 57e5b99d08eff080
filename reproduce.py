"""From nothing to the ablation table: every stage for every method and seed, then one table.

Usage:
    python reproduce.py                                   # story task, tiny preset, one seed
    python reproduce.py --seeds 3                         # the README's table
    python reproduce.py --seeds 3 --jobs 2 --threads 1    # two seeds side by side, a thread each (2 cores: faster)
    python reproduce.py --preset smoke --task algo --out runs/repro_smoke   # the end-to-end test, ~2 minutes
    python reproduce.py --noise-sweep                     # also: how each method degrades with noisier labels
    python reproduce.py --out runs/rlp --methods sft,ppo,rlp_uml,rlp_spg --ppo-seeds 3   # as experiments/rlp.sh
    python reproduce.py --seeds 3 --kl-coefs 0.05,0.2,0.01 --curve-every 5   # also the over-optimisation frontier

For each seed s, under OUT/s<s>/ (every stage is one of the repo's scripts; the README lists them):
    prepare_data -> train_sft -> train_rm -> evaluate (SFT, best-of-n)
                                          -> train_ppo (RM)          -> evaluate
                 -> sample_baselines (SFT, k per RL prompt) -> train_ppo (contrastive) -> evaluate
    PPO policy -> sample_baselines (n per unlabelled prompt, T = 1) -> train_rm (UML | SPG) -> train_ppo from SFT
    optional methods: `dpo` (train_dpo on the RM's pairs, from SFT), `rloo` and `grpo` (train_ppo --advantage rloo |
    grpo: no critic, the same rollouts an iteration in groups of k samples a prompt), `oracle` (train_ppo on the gold
    reward, the upper bound)
--ppo-seeds K repeats every train_ppo stage and its evaluation with K PPO seeds (s, s + N, ..., N = --seeds) over
the seed's one SFT, RM, baselines and retrained RMs; the RLP samples come from the first PPO seed's policy.

Every evaluation uses the first RM for the proxy score, so proxy scores compare across methods, and reuses the SFT
row's reference samples (evaluate.py --reference-samples: the same draw, so the same figures, without sampling it again). Outputs in OUT:
table.md and results.json (gold win rate vs SFT with its 95% interval, gold, proxy, KL, length; mean +- std over
runs; each method minus PPO, paired within seeds, with a t-interval over seeds and a per-prompt paired bootstrap;
the frontier table over --kl-coefs), curves.csv (gold and proxy against KL from every PPO run's logged evaluations), winrates.csv, runs.csv (each
PPO run's mechanism logs and its RM's diagnostics), frontier.csv (each PPO-family run's gold at KL 2, 4, 8, 16, its
peak and where gold falls below SFT's; docs/powered.md), and curves.png / winrates.png / frontier.png with matplotlib
(pip install -r requirements-plot.txt). --noise-sweep adds noise_table.md / noise.json: labels, RM and the
PPO-family methods rerun at each --noise-levels flip rate.

Stages are cached: OUT/stages/<stage>.json records the exact command of a finished stage, and a stage whose record
matches is skipped. A changed configuration reruns the stage (and so everything after it whose command changes);
an interrupted stage continues (--resume for training, the sampler's own resume) when its command is the same.
Each stage's output goes to OUT/logs/<stage>.log; a failing stage stops the run and prints its last lines.
"""
from __future__ import annotations

import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from rlhf.config import answer_help, arg, device_error, parse_args
from rlhf.plot import frontier_plot, plots
from rlhf.report import (LABELS, METHODS, curves, frontier, frontier_holm_table, frontier_table, noise_table,
                         paired_differences, paired_table, run_diagnostics, summarise, table, winrates, write_csv, write_text)


PPO_FAMILY = ["ppo", "rloo", "grpo", "contrastive", "rlp_uml", "rlp_spg", "oracle"]
DEFAULT_KL_COEF = 0.05  # train_ppo.py's --kl-coef: runs at it keep their plain stage names and commands
# What each preset changes beyond passing --preset to every script. Tiny: the README's settings.
SETTINGS = {
    "smoke": dict(data=["--n-sft", "2000", "--n-pairs", "1000", "--n-rl", "32", "--n-unlabelled", "16", "--n-eval", "32"],
                  sft=["--steps", "120", "--n-eval", "0"], rm=["--n-policy-pairs", "0"], ppo=["--batch-size", "16"], dpo=[],
                  ppo_steps=6, eval_every=3, n_eval=32, k_baselines=2, n_rlp=4, group_size=4),
    # 2,000 held-out prompts: the per-prompt paired bootstrap of a win-rate difference from PPO is then about
    # +-0.01 wide (docs/powered.md's pilot), well under the seed-to-seed spread
    "tiny": dict(data=["--n-eval", "2000"], sft=[], rm=[], ppo=[], dpo=[], ppo_steps=40, eval_every=10, n_eval=2000,
                 k_baselines=4, n_rlp=10, group_size=4),
    # one GPU (train_*.py's small presets; unmeasured): 2,000 held-out prompts
    "small": dict(data=["--n-eval", "2000"], sft=[], rm=[], ppo=[], dpo=[], ppo_steps=400, eval_every=25, n_eval=2000,
                  k_baselines=4, n_rlp=10, group_size=4),
}


@dataclass
class Args:
    out: str = arg("runs/reproduce", "output directory (stages, logs, table)")
    task: str = arg("story", "built-in task", choices=["story", "algo"])
    preset: str = arg("tiny", "size preset passed to every stage", choices=list(SETTINGS))
    seeds: int = arg(1, "seeds 0..N-1; each runs the whole pipeline", ge=1, le=1000)
    ppo_seeds: int = arg(1, "PPO seeds per seed: every PPO run and its evaluation over the seed's fixed SFT and RMs", ge=1, le=1000)
    methods: str = arg("sft,best_of_n,ppo,contrastive,rlp_uml,rlp_spg", "comma-separated, from " + ",".join(METHODS))
    ppo_steps: int | None = arg(None, "PPO iterations (default: the preset's)", ge=1, le=10**9)
    best_of_n: int = arg(4, "n of the best-of-n baseline", ge=2, le=4096)
    uml_weight: float = arg(0.5, "RLP-UML lambda (paper 0.5)", gt=0.0)
    spg_gamma: float = arg(0.5, "RLP-SPG gamma (paper 0.5)", ge=0.0, le=1.0)
    normalize: bool = arg(True, "train every RM (the first, the RLP ones, the noise sweep's) with --normalize: its rewards "
                          "have mean 0 and std 1 on held-out pairs, so --kl-coef is the same trade-off for every RM "
                          "(--no-normalize: raw scores, as before)")
    noisy_share: float = arg(0.0, "the testbed's prompt-dependent annotator noise (prepare_data.py --noisy-share; 0: off)", ge=0.0, le=1.0)
    noisy_kind: str = arg("flip", "how the noisy families' annotator errs (prepare_data.py --noisy-kind): flip, labels flipped "
                          "at 0.45 on a share of objects; misread, a share of moods judged as their partner mood", choices=["flip", "misread"])
    attributes: str = arg("4", "story prompts request all 4 attributes, or 1 to 4 (prepare_data.py --attributes)", choices=["4", "1-4"])
    unlabelled_ratio: float | None = arg(None, "|U| = this x the labelled pairs (prepare_data.py --unlabelled-ratio; RLP's paper: 2)",
                                         gt=0.0, le=1000.0)
    pairs_from: str = arg("file", "every RM's preference data D: the demonstration pairs of prepare_data.py, or pairs of two SFT "
                          "samples on the same prompts (train_rm.py --pairs-from sft, as RLP's paper builds D; DPO keeps the file's)",
                          choices=["file", "sft"])
    kl_coefs: str = arg(str(DEFAULT_KL_COEF), "comma-separated KL coefficients: every PPO-family method runs at each (the "
                        "frontier: frontier.md, frontier.csv, frontier.png); the tables and the held-out evaluation use the first")
    curve_every: int | None = arg(None, "held-out evaluation every N PPO iterations along each run (train_ppo.py --eval-every; "
                                  "default: the preset's)", ge=1, le=10**9)
    curve_prompts: int | None = arg(None, "held-out prompts of each of those evaluations (train_ppo.py --n-eval; default: "
                                    "train_ppo.py's preset's)", ge=1, le=10**7)
    delta: float = arg(0.03, "the smallest difference in gold win rate from PPO worth detecting: the decision column of the "
                       "paired table (supported / not supported / inconclusive)", gt=0.0, le=1.0)
    noise_sweep: bool = arg(False, "also rerun labels, RM and the PPO-family at --noise-levels")
    noise_levels: str = arg("0.0,0.1,0.25,0.4", "annotator label-flip rates for --noise-sweep, each in [0, 0.5]")
    threads: int = arg(0, "torch CPU threads for every stage (0: the CPUs the stage may use, rlhf.device.cpu_threads; with "
                       "--jobs J, those CPUs divided by J)", ge=0, le=4096)
    jobs: int = arg(1, "seeds run side by side, each stage of a seed in its own process (2 on 2 cores: each stage on one "
                    "thread; docs/performance.md measures what it gains). With --threads N >= 1 the stages' commands, so their "
                    "outputs, are those of --jobs 1 --threads N; a failed stage stops the run once the other seeds' running "
                    "stages end", ge=1, le=64)
    device: str = arg("auto", "--device of every stage that computes (auto: each picks cuda when available, else cpu)",
                      check=device_error)
    dtype: str = arg("auto", "--dtype of every training stage (SFT, RM, PPO family, DPO; auto: each script's default, fp32 "
                     "on the CPU); sampling, scoring and evaluation stages keep their own default", choices=["auto", "fp32", "bf16"])
    pack: bool = arg(False, "--pack on every SFT, RM and PPO-family stage: their training forwards on packed rows (the same "
                     "maths up to float rounding, fewer token slots; DPO and the evaluations as they are)")

# `--help` answers here, from Args alone: the imports below load torch and take seconds
answer_help(__name__, Args, description=__doc__.split("\n")[0])

from rlhf.data import read_json, write_json
from rlhf.stages import CountStages, Stages
from rlhf.run import provenance, run_cli


def pipeline(st, args, d: Path, tag: str, seed: int, methods: list[str], sft: Path | None = None,
             flip_rate: float | None = None) -> list[dict]:
    """One seed (or one noise level) of every method. Returns one record per evaluated run: method, seed (of the
    data, SFT and RM), run_seed (its own: the PPO seed), flip_rate, eval (JSON), rm (its RM's directory) and dir
    (its training directory; PPO family only). The first PPO seed is `seed`, with the one-PPO-seed names."""
    cfg = SETTINGS[args.preset]
    steps = args.ppo_steps or cfg["ppo_steps"]
    pre = ["--preset", args.preset, "--seed", seed]
    rm_flags = [*cfg["rm"], *(["--normalize"] if args.normalize else []), *(["--pairs-from", "sft"] if args.pairs_from == "sft" else [])]
    world = [*(["--noisy-share", args.noisy_share] if args.noisy_share else []),
             *(["--noisy-kind", args.noisy_kind] if args.noisy_kind != "flip" else []), *(["--attributes", args.attributes]
             if args.attributes != "4" else []), *(["--unlabelled-ratio", args.unlabelled_ratio] if args.unlabelled_ratio else [])]
    data = st(f"{tag}data", "prepare_data.py", "--task", args.task, "--out", d / "data", "--seed", seed, *cfg["data"], *world,
              *(["--flip-rate", flip_rate] if flip_rate is not None else []), out=d / "data", kind="data")
    if sft is None:
        sft = st(f"{tag}sft", "train_sft.py", *pre, "--data", data, *cfg["sft"], "--out", d / "sft", out=d / "sft") / "ckpt"
    rm = st(f"{tag}rm", "train_rm.py", *pre, "--data", data, "--sft", sft, *rm_flags, "--out", d / "rm", out=d / "rm") / "ckpt"
    ppo_seeds = [seed + p * args.seeds for p in range(args.ppo_seeds)]
    coefs = parse_coefs(args.kl_coefs)
    curve = ["--eval-every", args.curve_every or cfg["eval_every"], *(["--n-eval", args.curve_prompts] if args.curve_prompts else [])]
    # method -> (seed, name, dir, RM, KL coefficient); the table's runs are those at coefs[0]
    runs = {m: [(seed, m, None, rm, None)] for m in ("sft", "best_of_n") if m in methods}

    def ppo(m: str, run_rm: Path, *flags, first_only: bool = False):
        for c in coefs[:1] if first_only else coefs:
            for ps in ppo_seeds[:1] if first_only else ppo_seeds:
                name = run_name(m, seed, ps, c)
                st(f"{tag}{name}", "train_ppo.py", "--preset", args.preset, "--seed", ps, "--data", data, "--sft", sft,
                   "--steps", steps, *curve, *cfg["ppo"], "--rm", run_rm, *flags,
                   *(["--kl-coef", c] if c != DEFAULT_KL_COEF else []), "--out", d / name, out=d / name)
                runs.setdefault(m, []).append((ps, name, d / name, run_rm, c))

    if "dpo" in methods:  # the RM's pairs and held-out split, from SFT with SFT as the reference (train_dpo.py's epochs)
        st(f"{tag}dpo", "train_dpo.py", *pre, "--data", data, "--sft", sft, *cfg["dpo"], "--out", d / "dpo", out=d / "dpo")
        runs["dpo"] = [(seed, "dpo", d / "dpo", rm, None)]
    for m in ("rloo", "grpo"):  # the same --batch-size rollouts an iteration as PPO: batch / k prompts x k samples
        if m in methods:
            ppo(m, rm, "--advantage", m, "--group-size", cfg["group_size"])
    if any(m in methods for m in ("ppo", "rlp_uml", "rlp_spg")):
        ppo("ppo", rm, first_only="ppo" not in methods)  # RLP alone samples from the first PPO seed only
    if "contrastive" in methods:
        base = st(f"{tag}baselines", "sample_baselines.py", "--policy", sft, "--rm", rm, "--prompts", data / "prompts_rl.jsonl",
                  "--k", cfg["k_baselines"], "--seed", seed, "--out", d / "baselines.jsonl", out=d / "baselines.jsonl", kind="samples")
        ppo("contrastive", rm, "--reward", "contrastive", "--baselines", base)
    if "rlp_uml" in methods or "rlp_spg" in methods:
        samples = st(f"{tag}rlp_samples", "sample_baselines.py", "--policy", d / run_name("ppo", seed, seed, coefs[0]) / "ckpt", "--rm", rm, "--prompts",
                     data / "prompts_unlabelled.jsonl", "--k", cfg["n_rlp"], "--temperature", 1.0, "--seed", seed,
                     "--out", d / "rlp_samples.jsonl", out=d / "rlp_samples.jsonl", kind="samples")
        for m, flags in (("rlp_uml", ["--uml-weight", args.uml_weight]), ("rlp_spg", ["--spg-gamma", args.spg_gamma])):
            if m in methods:
                ppo(m, st(f"{tag}rm_{m}", "train_rm.py", *pre, "--data", data, "--sft", sft, "--policy-samples", samples,
                          *flags, *rm_flags, "--out", d / f"rm_{m}", out=d / f"rm_{m}") / "ckpt",
                    "--first-rm", rm)  # the first RM's on-policy accuracy along the curve, beside the retrained one's
    if "oracle" in methods:
        ppo("oracle", rm, "--reward", "gold")
    records = []
    for m in methods:
        for ps, name, run_dir, run_rm, c in runs[m]:
            ev = None
            if c is None or c == coefs[0]:  # the other coefficients' runs: their logged evaluations (the frontier) only
                extra = ["--best-of-n", args.best_of_n] if m == "best_of_n" else []
                if m != "sft" and "sft" in methods:  # the SFT row's reference samples: the same draw, reused (evaluate.py)
                    extra += ["--reference-samples", d / "eval" / "sft.json"]
                label = f"{m}-s{seed}" + (f"-ps{ps}" if ps != seed else "")
                ev = st(f"{tag}eval_{name}", "evaluate.py", "--policy", run_dir / "ckpt" if run_dir else sft, "--reference", sft,
                        "--rm", rm, "--data", data, "--n-eval", cfg["n_eval"], "--seed", seed, *extra,
                        "--out", d / "eval" / f"{name}.json", "--name", label, out=d / "eval" / f"{name}.json", kind="eval")
            records.append({"method": m, "seed": seed, "run_seed": ps, "flip_rate": flip_rate, "eval": ev, "kl_coef": c,
                            "rm": Path(run_rm).parent, "dir": run_dir if m in PPO_FAMILY else None})
    return records


def run_name(m: str, seed: int, ps: int, kl_coef: float) -> str:
    """A PPO-family run's directory and stage name: the method, then _kl<c> off train_ppo.py's default coefficient,
    then _ps<ps> for PPO seeds after the seed's first (so the one-coefficient, one-PPO-seed names stay as they were)."""
    return m + (f"_kl{kl_coef:g}" if kl_coef != DEFAULT_KL_COEF else "") + (f"_ps{ps}" if ps != seed else "")


def run_seed(st, args, methods: list[str], levels: list[float], seed: int) -> dict:
    """Every stage of one seed: the pipeline, then its PPO family at each noise level (with the seed's SFT).
    Returns flip rate (None: the data's own annotator) -> that seed's run records."""
    fam = [m for m in methods if m in PPO_FAMILY]
    d = Path(args.out) / f"s{seed}"
    records = {None: pipeline(st, args, d, f"s{seed}_", seed, methods), **{lvl: [] for lvl in levels}}
    for lvl in levels:  # the same prompts and demonstrations (same seed); only the labels change
        if fam:
            records[lvl] = pipeline(st, args, d / f"noise{lvl}", f"s{seed}_noise{lvl}_", seed, fam,
                                    sft=d / "sft" / "ckpt", flip_rate=lvl)
        else:
            st(f"s{seed}_noise{lvl}_data", "prepare_data.py", "--task", args.task, "--out", d / f"noise{lvl}" / "data",
               "--seed", seed, *SETTINGS[args.preset]["data"], "--flip-rate", lvl, out=d / f"noise{lvl}" / "data", kind="data")
    return records


def run_all(st, args, methods: list[str], levels: list[float], jobs: int = 1) -> dict:
    """Every stage of the call, seed by seed, or `jobs` seeds side by side (seeds share no stage; each stage is its
    own process). Returns flip rate (None: the data's own annotator) -> run records, in seed order, then table order."""
    if jobs > 1:
        def one_seed(seed):
            try:
                return run_seed(st, args, methods, levels, seed)
            except BaseException as e:  # a failed stage has recorded itself; anything else is recorded here
                st.fail(f"seed {seed}", e)
                raise

        with ThreadPoolExecutor(max_workers=jobs) as pool:
            futures = [pool.submit(one_seed, seed) for seed in range(args.seeds)]
            try:
                per_seed = [f.result() for f in futures]
            except KeyboardInterrupt:  # Ctrl-C: stop the running stages too
                st.fail("the run (interrupted)", KeyboardInterrupt())
                st.kill_running()
                raise
            except BaseException:  # a failure: the other seeds end the stage they are running and start no other
                for f in futures:
                    f.cancel()
                raise st.error or sys.exc_info()[1] from None  # the first failure's own error, whichever seed saw it
    else:
        per_seed = [run_seed(st, args, methods, levels, seed) for seed in range(args.seeds)]
    records = {lvl: [r for recs in per_seed for r in recs[lvl]] for lvl in (None, *levels)}
    return {lvl: sorted(recs, key=lambda r: METHODS.index(r["method"])) for lvl, recs in records.items()}


def count_stages(args, methods: list[str], levels: list[float]) -> int:
    """The number of stages run_all calls for these arguments (it runs run_all with a CountStages)."""
    counter = CountStages()
    run_all(counter, args, methods, levels)
    return counter.n


def no_op_warnings(records: list[dict]) -> dict[str, str]:
    """method -> a note for its table row when some of its runs trained on an RLP-SPG RM that made 0 synthetic pairs
    (the first RM's data again: that row is not RLP-SPG)."""
    out = {}
    for m in dict.fromkeys(r["method"] for r in records):
        runs = [r for r in records if r["method"] == m]
        zero = [r for r in runs if (r["rm"] / "diagnostics.json").exists()
                and read_json(r["rm"] / "diagnostics.json").get("rlp/spg_pairs") == 0]
        if zero:
            out[m] = f"WARNING: 0 synthetic pairs in {len(zero)} of {len(runs)} runs, so they retrained on the first RM's data"
    return out


def by_method(records: list[dict], methods: list[str], key: str) -> dict[str, list]:
    """method -> the `key` of each of its run records, in order."""
    return {m: [r[key] for r in records if r["method"] == m] for m in methods}


def parse_methods(text: str) -> list[str]:
    methods = [m.strip() for m in text.split(",") if m.strip()]
    bad = [m for m in methods if m not in METHODS]
    if bad or not methods:
        raise SystemExit(f"error: --methods: unknown {', '.join(bad) or '(empty)'}; allowed: {', '.join(METHODS)}")
    return [m for m in METHODS if m in methods]  # table order


def parse_coefs(text: str) -> list[float]:
    try:
        coefs = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise SystemExit(f"error: --kl-coefs: {text!r} is not a comma-separated list of numbers") from None
    if not coefs or any(not 0.0 <= c <= 100.0 for c in coefs) or len(set(coefs)) < len(coefs):
        raise SystemExit(f"error: --kl-coefs: each coefficient must be in [0, 100], each once, got {text!r}")
    return coefs


def parse_levels(text: str) -> list[float]:
    try:
        levels = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise SystemExit(f"error: --noise-levels: {text!r} is not a comma-separated list of numbers") from None
    if not levels or any(not 0.0 <= x <= 0.5 for x in levels):
        raise SystemExit(f"error: --noise-levels: each flip rate must be in [0, 0.5], got {text!r}")
    return levels


def main(argv=None):
    args = parse_args(Args, argv, description=__doc__.split("\n")[0])
    methods = parse_methods(args.methods)
    levels = parse_levels(args.noise_levels) if args.noise_sweep else []
    coefs = parse_coefs(args.kl_coefs)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "config.json", {**vars(args), "methods": methods, "provenance": provenance()})
    threads, jobs = args.threads, min(args.jobs, args.seeds)
    if jobs > 1 and not threads:  # each of the jobs' stages gets its share of the CPUs
        from rlhf.device import cpu_threads
        threads = max(1, cpu_threads() // jobs)
    st = Stages(out, count_stages(args, methods, levels), threads, args.device, args.dtype, args.pack)
    t0 = time.time()
    try:
        records = run_all(st, args, methods, levels, jobs=jobs)
    finally:
        st.bar.close()
    runs = records.pop(None)
    base = [r for r in runs if r["eval"] is not None]  # the table's runs: at the first KL coefficient
    summary = summarise(by_method(base, methods, "eval"), seed_of=by_method(base, methods, "seed"))
    sft_evals = {r["seed"]: r["eval"] for r in base if r["method"] == "sft"}
    curve_rows = curves([r for r in runs if r["dir"]], sft_evals)
    write_csv(out / "curves.csv", curve_rows)
    write_csv(out / "winrates.csv", winrates(summary, by_method(base, methods, "run_seed")))
    write_csv(out / "runs.csv", run_diagnostics([r for recs in (runs, *records.values()) for r in recs if r["dir"]]))
    paired = paired_differences(base, delta=args.delta) if "ppo" in methods else {}
    frontier_runs, frontier_rows = frontier(curve_rows)
    write_csv(out / "frontier.csv", frontier_runs)
    wall = time.time() - t0
    header = (f"task {args.task}, preset {args.preset}, {args.seeds} seed(s)"
              f"{f' x {args.ppo_seeds} PPO seeds' if args.ppo_seeds > 1 else ''}, {SETTINGS[args.preset]['n_eval']} held-out prompts; "
              f"PPO {args.ppo_steps or SETTINGS[args.preset]['ppo_steps']} iterations at KL coefficient {coefs[0]:g}"
              + (f" (frontier also at {', '.join(f'{c:g}' for c in coefs[1:])})" if len(coefs) > 1 else "")
              + f"; best-of-{args.best_of_n}"
              + (f"; RLOO and GRPO: the same rollouts an iteration and the same iterations as PPO, in groups of "
                 f"{SETTINGS[args.preset]['group_size']} samples a prompt" if {"rloo", "grpo"} & set(methods) else "")
              + ("; DPO: one epoch over the RM's training pairs" if "dpo" in methods else "") + "\n\n")
    warnings = no_op_warnings(base)
    md = header + table({LABELS[m] + (f" ({warnings[m]})" if m in warnings else ""): s for m, s in summary.items()})
    if paired:
        md += ("\n### Difference from PPO, paired (the same data, SFT, RM, prompts and seeds)\n\n" + paired_table(paired, delta=args.delta))
    if frontier_rows:
        md += ("\n### The frontier: each PPO-family run's logged held-out evaluations read at fixed KL (missing: never reached)\n\n"
               + frontier_table(frontier_rows) + "\n" + frontier_holm_table(frontier_rows))
    results = {"config": {**vars(args), "methods": methods}, "methods": summary,
               "stage_seconds": {p.stem: read_json(p).get("seconds") for p in sorted((out / "stages").glob("*.json"))
                                 if not p.name.endswith(".pending.json")},
               "wall_seconds_this_call": round(wall, 1), "stages_run": st.ran, "stages_reused": st.reused,
               "warnings": warnings, "paired": paired, "frontier": frontier_rows}
    if levels:
        fam = [m for m in methods if m in PPO_FAMILY]
        records = {lvl: [r for r in recs if r["eval"] is not None] for lvl, recs in records.items()}
        noise = {lvl: summarise(by_method(recs, fam, "eval"), seed_of=by_method(recs, fam, "seed"))
                 for lvl, recs in records.items() if recs}
        write_text(out / "noise_table.md", header + noise_table(noise))
        write_json(out / "noise.json", {str(k): v for k, v in noise.items()})
        results["noise"] = {str(k): v for k, v in noise.items()}
    write_json(out / "results.json", results)
    write_text(out / "table.md", md)
    print(md)
    print(plots(out, curve_rows, summary))
    print(frontier_plot(out, curve_rows))
    print(f"{st.ran} stage(s) run, {st.reused} reused, {wall / 60:.1f} min; {out}/table.md, results.json, curves.csv")


if __name__ == "__main__":
    run_cli(main)
