"""From nothing to the ablation table: every stage for every method and seed, then one table.

Usage:
    python reproduce.py                                   # story task, tiny preset, one seed
    python reproduce.py --seeds 3                         # the README's table
    python reproduce.py --preset smoke --task algo --out runs/repro_smoke   # the end-to-end test, ~2 minutes
    python reproduce.py --noise-sweep                     # also: how each method degrades with noisier labels

For each seed s, under OUT/s<s>/ (DESIGN.md section 7; every stage is one of the repo's scripts):
    prepare_data -> train_sft -> train_rm -> evaluate (SFT, best-of-n)
                                          -> train_ppo (RM)          -> evaluate
                 -> sample_baselines (SFT, k per RL prompt) -> train_ppo (contrastive) -> evaluate
    PPO policy -> sample_baselines (n per unlabelled prompt, T = 1) -> train_rm (UML | SPG) -> train_ppo from SFT
    (optional method `oracle`: train_ppo on the gold reward, the upper bound)

Every evaluation uses the first RM for the proxy score, so proxy scores compare across methods. Outputs in OUT:
table.md and results.json (gold win rate vs SFT with its 95% interval, gold, proxy, KL, length; mean +- std over
seeds), curves.csv (gold and proxy against KL from every PPO run's logged evaluations), winrates.csv, and
curves.png / winrates.png when matplotlib is installed (pip install -r requirements-plot.txt). --noise-sweep adds
noise_table.md / noise.json: labels, RM and the PPO-family methods rerun at each --noise-levels flip rate.

Stages are cached: OUT/stages/<stage>.json records the exact command of a finished stage, and a stage whose record
matches is skipped. A changed configuration reruns the stage (and so everything after it whose command changes);
an interrupted stage continues (--resume for training, the sampler's own resume) when its command is the same.
Each stage's output goes to OUT/logs/<stage>.log; a failing stage stops the run and prints its last lines.
"""
from __future__ import annotations

import csv
import hashlib
import json
import math
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from rlhf.config import parse_args, read_metrics, run_cli
from rlhf.data import atomic_write_bytes, read_json, write_json

METHODS = ["sft", "best_of_n", "ppo", "contrastive", "rlp_uml", "rlp_spg", "oracle"]
LABELS = {"sft": "SFT", "best_of_n": "best-of-n (SFT, RM)", "ppo": "PPO", "contrastive": "PPO + contrastive rewards",
          "rlp_uml": "RLP-UML", "rlp_spg": "RLP-SPG", "oracle": "PPO on gold (oracle)"}
PPO_FAMILY = ["ppo", "contrastive", "rlp_uml", "rlp_spg", "oracle"]
# What each preset changes beyond passing --preset to every script. Tiny: the README's settings.
SETTINGS = {
    "smoke": dict(data=["--n-sft", "2000", "--n-pairs", "1000", "--n-rl", "32", "--n-unlabelled", "16", "--n-eval", "32"],
                  sft=["--steps", "120", "--n-eval", "0"], rm=["--n-policy-pairs", "0"], ppo=["--batch-size", "16"],
                  ppo_steps=6, eval_every=3, n_eval=32, k_baselines=2, n_rlp=4),
    "tiny": dict(data=[], sft=[], rm=[], ppo=[], ppo_steps=40, eval_every=10, n_eval=400, k_baselines=4, n_rlp=10),
}


@dataclass
class Args:
    out: str = field(default="runs/reproduce", metadata={"help": "output directory (stages, logs, table)"})
    task: str = field(default="story", metadata={"help": "built-in task", "choices": ["story", "algo"]})
    preset: str = field(default="tiny", metadata={"help": "size preset passed to every stage", "choices": list(SETTINGS)})
    seeds: int = field(default=1, metadata={"help": "seeds 0..N-1; each runs the whole pipeline", "min": 1})
    methods: str = field(default="sft,best_of_n,ppo,contrastive,rlp_uml,rlp_spg",
                         metadata={"help": "comma-separated, from " + ",".join(METHODS)})
    ppo_steps: int | None = field(default=None, metadata={"help": "PPO iterations (default: the preset's)", "min": 1})
    best_of_n: int = field(default=4, metadata={"help": "n of the best-of-n baseline", "min": 2})
    uml_weight: float = field(default=0.5, metadata={"help": "RLP-UML lambda (paper 0.5)", "min": 0.0, "min_exclusive": True})
    spg_gamma: float = field(default=0.5, metadata={"help": "RLP-SPG gamma (paper 0.5)", "min": 0.0, "max": 1.0})
    noise_sweep: bool = field(default=False, metadata={"help": "also rerun labels, RM and the PPO-family at --noise-levels"})
    noise_levels: str = field(default="0.0,0.1,0.25,0.4", metadata={"help": "annotator label-flip rates for --noise-sweep, each in [0, 0.5]"})
    threads: int = field(default=0, metadata={"help": "torch CPU threads for every stage (0: torch's default)", "min": 0})


def _die_with_parent():
    """In the child, before exec: on Linux, ask for SIGKILL when reproduce.py dies (even by SIGKILL), so a killed
    run never leaves a stage writing into a directory that the rerun resumes."""
    try:
        import ctypes
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class Stages:
    """Runs the repo's scripts as cached, resumable stages behind one progress bar."""

    def __init__(self, out: Path, total: int, threads: int):
        self.out, self.threads = out, threads
        (out / "stages").mkdir(parents=True, exist_ok=True)
        (out / "logs").mkdir(parents=True, exist_ok=True)
        self.bar = tqdm(total=total, desc="reproduce", unit="stage")
        self.ran, self.reused = 0, 0
        self.versions: dict[str, str] = {}  # output path -> hash of the command (and inputs) that made it

    def __call__(self, name: str, script: str, *argv, out: Path, kind: str = "train") -> Path:
        """Run `python script argv` unless its record says this exact command already finished.
        kind: train (supports --resume / --overwrite), data (--overwrite), samples (resumable file), eval."""
        argv = [str(a) for a in argv]
        if self.threads and kind != "data":
            argv += ["--threads", str(self.threads)]
        # the versions of the earlier stages whose outputs this one reads: a rerun upstream reruns it too
        inputs = sorted({v for a in argv for o, v in self.versions.items() if a == o or a.startswith(o + "/")})
        cmd = {"script": script, "argv": argv, "inputs": inputs}
        done, pending = self.out / "stages" / f"{name}.json", self.out / "stages" / f"{name}.pending.json"
        self.bar.set_description(f"reproduce [{name}]")
        self.versions[str(out)] = hashlib.sha256(json.dumps(cmd, sort_keys=True).encode()).hexdigest()[:16]
        if done.exists() and {k: read_json(done).get(k) for k in cmd} == cmd and out.exists():
            self.reused += 1
            self.bar.update(1)
            return out
        same = pending.exists() and read_json(pending) == cmd
        done.unlink(missing_ok=True)
        extra = []
        if kind == "train" and out.exists():
            extra = ["--resume"] if same else ["--overwrite"]
        elif kind == "data" and out.exists():
            extra = ["--overwrite"]
        elif kind == "samples" and out.exists() and not same:  # other settings: start the file again
            out.unlink()
            Path(f"{out}.meta.json").unlink(missing_ok=True)
        write_json(pending, cmd)
        log = self.out / "logs" / f"{name}.log"
        t0 = time.time()
        with open(log, "w") as f:
            f.write(" ".join([sys.executable, script, *argv, *extra]) + "\n")
            f.flush()
            rc = subprocess.run([sys.executable, script, *argv, *extra], cwd=Path(__file__).parent,
                                stdout=f, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent).returncode
        if rc != 0:
            tail = "".join(log.read_text(errors="replace").splitlines(keepends=True)[-15:])
            self.bar.close()
            raise SystemExit(f"error: stage {name} failed (exit {rc}); its log is {log}; last lines:\n{tail}")
        write_json(done, {**cmd, "seconds": round(time.time() - t0, 1)})
        pending.unlink(missing_ok=True)
        self.ran += 1
        self.bar.update(1)
        return out

    def seconds(self, name: str) -> float:
        rec = self.out / "stages" / f"{name}.json"
        return read_json(rec).get("seconds", 0.0) if rec.exists() else 0.0


def pipeline(st: Stages, args, d: Path, tag: str, seed: int, methods: list[str], sft: Path | None = None,
             flip_rate: float | None = None) -> dict[str, Path]:
    """One seed (or one noise level) of every method; returns method -> its evaluation JSON."""
    cfg = SETTINGS[args.preset]
    steps = args.ppo_steps or cfg["ppo_steps"]
    pre = ["--preset", args.preset, "--seed", seed]
    data = st(f"{tag}data", "prepare_data.py", "--task", args.task, "--out", d / "data", "--seed", seed, *cfg["data"],
              *(["--flip-rate", flip_rate] if flip_rate is not None else []), out=d / "data", kind="data")
    if sft is None:
        sft = st(f"{tag}sft", "train_sft.py", *pre, "--data", data, *cfg["sft"], "--out", d / "sft", out=d / "sft") / "ckpt"
    rm = st(f"{tag}rm", "train_rm.py", *pre, "--data", data, "--sft", sft, *cfg["rm"], "--out", d / "rm", out=d / "rm") / "ckpt"
    ppo_args = [*pre, "--data", data, "--sft", sft, "--steps", steps, "--eval-every", cfg["eval_every"], *cfg["ppo"]]
    policies, rms = {}, {}
    if "sft" in methods:
        policies["sft"] = sft
    if "best_of_n" in methods:
        policies["best_of_n"] = sft
    if any(m in methods for m in ("ppo", "rlp_uml", "rlp_spg")):
        policies["ppo"] = st(f"{tag}ppo", "train_ppo.py", *ppo_args, "--rm", rm, "--out", d / "ppo", out=d / "ppo") / "ckpt"
    if "contrastive" in methods:
        base = st(f"{tag}baselines", "sample_baselines.py", "--policy", sft, "--rm", rm, "--prompts", data / "prompts_rl.jsonl",
                  "--k", cfg["k_baselines"], "--seed", seed, "--out", d / "baselines.jsonl", out=d / "baselines.jsonl", kind="samples")
        policies["contrastive"] = st(f"{tag}contrastive", "train_ppo.py", *ppo_args, "--rm", rm, "--reward", "contrastive",
                                     "--baselines", base, "--out", d / "contrastive", out=d / "contrastive") / "ckpt"
    if "rlp_uml" in methods or "rlp_spg" in methods:
        samples = st(f"{tag}rlp_samples", "sample_baselines.py", "--policy", policies["ppo"], "--rm", rm, "--prompts",
                     data / "prompts_unlabelled.jsonl", "--k", cfg["n_rlp"], "--temperature", 1.0, "--seed", seed,
                     "--out", d / "rlp_samples.jsonl", out=d / "rlp_samples.jsonl", kind="samples")
        for m, flags in (("rlp_uml", ["--uml-weight", args.uml_weight]), ("rlp_spg", ["--spg-gamma", args.spg_gamma])):
            if m in methods:
                rms[m] = st(f"{tag}rm_{m}", "train_rm.py", *pre, "--data", data, "--sft", sft, "--policy-samples", samples,
                            *flags, *cfg["rm"], "--out", d / f"rm_{m}", out=d / f"rm_{m}") / "ckpt"
                policies[m] = st(f"{tag}{m}", "train_ppo.py", *ppo_args, "--rm", rms[m], "--out", d / m, out=d / m) / "ckpt"
    if "oracle" in methods:
        policies["oracle"] = st(f"{tag}oracle", "train_ppo.py", *ppo_args, "--rm", rm, "--reward", "gold",
                                "--out", d / "oracle", out=d / "oracle") / "ckpt"
    evals = {}
    for m in methods:
        extra = ["--best-of-n", args.best_of_n] if m == "best_of_n" else []
        evals[m] = st(f"{tag}eval_{m}", "evaluate.py", "--policy", policies[m], "--reference", sft, "--rm", rm, "--data", data,
                      "--n-eval", cfg["n_eval"], "--seed", seed, *extra, "--out", d / "eval" / f"{m}.json",
                      "--name", f"{m}-s{seed}", out=d / "eval" / f"{m}.json", kind="eval")
    return evals


COLUMNS = [("gold/win_rate", "gold win rate vs SFT"), ("gold/score", "gold"), ("proxy/score", "proxy (first RM)"),
           ("proxy/gain", "proxy minus SFT's (same seed)"), ("objective/kl", "KL to SFT"), ("eval/length", "length")]


def summarise(evals: dict[str, list[Path]], base: str = "sft") -> dict:
    """method -> per-seed metrics and mean / std of each column (std is 0 for one seed).

    Each seed has its own RM, whose scores have an arbitrary offset, so the proxy's mean over seeds mixes
    scales. `proxy/gain` is the proxy score minus the `base` method's (SFT's) proxy score in the same seed,
    which compares across seeds; it is absent (NaN, shown as "-") when `base` was not evaluated."""
    ref = [read_json(p) for p in evals.get(base, [])]
    out = {}
    for m, paths in evals.items():
        rows = [read_json(p) for p in paths]
        for r, b in zip(rows, ref):  # seed by seed: both lists are in seed order
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
    head = f"| {first_col} | " + " | ".join(label for _, label in COLUMNS) + " | per-seed win rate [95% CI] |"
    lines = [head, "|" + "---|" * (len(COLUMNS) + 2)]
    for name, s in summary.items():
        cells = ["-" if math.isnan(s[k]["mean"]) else f"{s[k]['mean']:.3f} ± {s[k]['std']:.3f}" if len(s["seeds"]) > 1
                 else f"{s[k]['mean']:.3f}" for k, _ in COLUMNS]
        ci = "; ".join(f"{r['gold/win_rate']:.3f} [{r['gold/win_rate_lo']:.3f}, {r['gold/win_rate_hi']:.3f}]" for r in s["seeds"])
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {ci} |")
    return "\n".join(lines) + "\n"


def write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, [text.encode()])


def curves(runs: dict[str, list[Path]], start: list[Path]) -> list[dict]:
    """Every logged evaluation of every PPO-family run: (method, seed, step, KL, gold, proxy) -> curves.csv.
    proxy is the score of the RM that run trained against (for RLP the retrained RM; none for the oracle).
    A run without its own step-0 evaluation starts at its seed's SFT evaluation (KL 0) from `start` (SFT eval JSONs)."""
    rows = []
    for m, dirs in runs.items():
        for seed, d in enumerate(dirs):
            logged = read_metrics(d / "metrics.jsonl")
            if seed < len(start) and not any(r.get("step") == 0 and "gold/score" in r for r in logged):
                e = read_json(start[seed])
                own_rm = m in ("ppo", "contrastive")  # RLP runs train on another RM; the oracle on none
                rows.append({"method": m, "seed": seed, "step": 0, "kl": 0.0, "gold": e["gold/score"],
                             "proxy": e.get("proxy/score") if own_rm else None})
            for r in logged:
                if "gold/score" in r:  # an evaluation line: objective/kl is then the held-out KL
                    rows.append({"method": m, "seed": seed, "step": r.get("step"), "kl": r["objective/kl"],
                                 "gold": r["gold/score"], "proxy": r.get("proxy/score")})
    return rows


def write_csv(path: Path, rows: list[dict]) -> None:
    import io
    buf = io.StringIO()
    if rows:
        w = csv.DictWriter(buf, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    write_text(path, buf.getvalue())


def plots(out: Path, curve_rows: list[dict], summary: dict) -> str:
    """curves.png and winrates.png with matplotlib, or a line saying how to get them."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed: wrote the CSVs only (pip install -r requirements-plot.txt for the PNGs)"
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, key in zip(axes, ("gold", "proxy")):
        for m in dict.fromkeys(r["method"] for r in curve_rows):
            for seed in sorted({r["seed"] for r in curve_rows if r["method"] == m}):
                pts = [(r["kl"], r[key]) for r in sorted(curve_rows, key=lambda r: r["step"])  # in training order
                       if r["method"] == m and r["seed"] == seed and r[key] not in (None, "")]
                if pts and key == "proxy":  # each run's RM has its own offset: plot the gain since the run's start
                    pts = [(kl, y - pts[0][1]) for kl, y in pts]
                if pts:
                    ax.plot(*zip(*pts), marker="o", label=LABELS[m] if seed == 0 else None,
                            color=f"C{METHODS.index(m)}", alpha=0.8)
        ax.set_xlabel("KL(policy || SFT), nats per response")
        ax.set_ylabel("gold score" if key == "gold" else "proxy gain since the run's start\n(the RM each run trained against)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "curves.png.tmp.png", dpi=110)
    (out / "curves.png.tmp.png").replace(out / "curves.png")
    fig, ax = plt.subplots(figsize=(7, 3.5))
    names = list(summary)
    means = [summary[m]["gold/win_rate"]["mean"] for m in names]
    los = [min(r["gold/win_rate_lo"] for r in summary[m]["seeds"]) for m in names]
    his = [max(r["gold/win_rate_hi"] for r in summary[m]["seeds"]) for m in names]
    ax.bar(range(len(names)), means, yerr=[[a - b for a, b in zip(means, los)], [b - a for a, b in zip(means, his)]],
           color=[f"C{METHODS.index(m)}" for m in names], capsize=4)
    ax.axhline(0.5, color="grey", lw=0.8, ls="--")
    ax.set_xticks(range(len(names)), [LABELS[m] for m in names], rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("gold win rate vs SFT")
    fig.tight_layout()
    fig.savefig(out / "winrates.png.tmp.png", dpi=110)
    (out / "winrates.png.tmp.png").replace(out / "winrates.png")
    plt.close("all")
    return "wrote curves.png and winrates.png"


def parse_methods(text: str) -> list[str]:
    methods = [m.strip() for m in text.split(",") if m.strip()]
    bad = [m for m in methods if m not in METHODS]
    if bad or not methods:
        raise SystemExit(f"error: --methods: unknown {', '.join(bad) or '(empty)'}; allowed: {', '.join(METHODS)}")
    return [m for m in METHODS if m in methods]  # table order


def parse_levels(text: str) -> list[float]:
    try:
        levels = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise SystemExit(f"error: --noise-levels: {text!r} is not a comma-separated list of numbers") from None
    if not levels or any(not 0.0 <= x <= 0.5 for x in levels):
        raise SystemExit(f"error: --noise-levels: each flip rate must be in [0, 0.5], got {text!r}")
    return levels


def count_stages(methods: list[str], seeds: int, levels: list[float]) -> int:
    """Stages the progress bar expects: data, SFT, RM, then one per method-specific step and one eval per method."""
    per = {"sft": 1, "best_of_n": 1, "contrastive": 3, "oracle": 2, "rlp_uml": 3, "rlp_spg": 3}
    ppo = 1 if any(m in methods for m in ("ppo", "rlp_uml", "rlp_spg")) else 0
    rlp = 1 if any(m in methods for m in ("rlp_uml", "rlp_spg")) else 0
    n = 3 + ppo + rlp + sum(per.get(m, 1) for m in methods)
    ppo_family = [m for m in methods if m in PPO_FAMILY]
    n_noise = (2 + ppo + rlp + sum(per.get(m, 1) for m in ppo_family)) if ppo_family else 2
    return seeds * (n + len(levels) * n_noise)


def main(argv=None):
    args = parse_args(Args, argv, description=__doc__.split("\n")[0])
    methods = parse_methods(args.methods)
    levels = parse_levels(args.noise_levels) if args.noise_sweep else []
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "config.json", {**vars(args), "methods": methods})
    st = Stages(out, count_stages(methods, args.seeds, levels), args.threads)
    t0 = time.time()
    evals = {m: [] for m in methods}
    noise_evals = {lvl: {m: [] for m in methods if m in PPO_FAMILY} for lvl in levels}
    for seed in range(args.seeds):
        d = out / f"s{seed}"
        for m, p in pipeline(st, args, d, f"s{seed}_", seed, methods).items():
            evals[m].append(p)
        for lvl in levels:  # the same prompts and demonstrations (same seed); only the labels change
            fam = [m for m in methods if m in PPO_FAMILY]
            if fam:
                for m, p in pipeline(st, args, d / f"noise{lvl}", f"s{seed}_noise{lvl}_", seed, fam,
                                     sft=d / "sft" / "ckpt", flip_rate=lvl).items():
                    noise_evals[lvl][m].append(p)
            else:
                st(f"s{seed}_noise{lvl}_data", "prepare_data.py", "--task", args.task, "--out", d / f"noise{lvl}" / "data",
                   "--seed", seed, *SETTINGS[args.preset]["data"], "--flip-rate", lvl, out=d / f"noise{lvl}" / "data", kind="data")
    st.bar.close()
    summary = summarise(evals)
    runs = {m: [out / f"s{s}" / m for s in range(args.seeds)] for m in methods if m in PPO_FAMILY}
    curve_rows = curves(runs, evals.get("sft", []))
    write_csv(out / "curves.csv", curve_rows)
    write_csv(out / "winrates.csv", [{"method": m, "seed": s, **{k: r[k] for k in ("gold/win_rate", "gold/win_rate_lo", "gold/win_rate_hi")}}
                                     for m, v in summary.items() for s, r in enumerate(v["seeds"])])
    wall = time.time() - t0
    header = (f"task {args.task}, preset {args.preset}, {args.seeds} seed(s), {SETTINGS[args.preset]['n_eval']} held-out prompts; "
              f"PPO {args.ppo_steps or SETTINGS[args.preset]['ppo_steps']} iterations; best-of-{args.best_of_n}\n\n")
    md = header + table({LABELS[m]: s for m, s in summary.items()})
    results = {"config": {**vars(args), "methods": methods}, "methods": summary,
               "stage_seconds": {p.stem: read_json(p).get("seconds") for p in sorted((out / "stages").glob("*.json"))
                                 if not p.name.endswith(".pending.json")},
               "wall_seconds_this_call": round(wall, 1), "stages_run": st.ran, "stages_reused": st.reused}
    if levels:
        noise = {lvl: summarise(v) for lvl, v in noise_evals.items() if any(v.values())}
        pivot = ["| method | " + " | ".join(f"flip {lvl}" for lvl in noise) + " |", "|---|" + "---|" * len(noise)]
        for m in dict.fromkeys(m for v in noise.values() for m in v):
            cells = [f"{v[m]['gold/win_rate']['mean']:.3f} ± {v[m]['gold/win_rate']['std']:.3f}" if m in v else "-" for v in noise.values()]
            pivot.append(f"| {LABELS[m]} | " + " | ".join(cells) + " |")
        nmd = ("gold win rate vs SFT at each annotator label-flip rate (same prompts and demonstrations, same SFT policy; "
               "labels, RM and every later stage rerun)\n\n" + "\n".join(pivot) + "\n" +
               "".join(f"\n### label-flip rate {lvl}\n\n" + table({LABELS[m]: s for m, s in v.items()}) for lvl, v in noise.items()))
        write_text(out / "noise_table.md", header + nmd)
        write_json(out / "noise.json", {str(k): v for k, v in noise.items()})
        results["noise"] = {str(k): v for k, v in noise.items()}
    write_json(out / "results.json", results)
    write_text(out / "table.md", md)
    print(md)
    print(plots(out, curve_rows, summary))
    print(f"{st.ran} stage(s) run, {st.reused} reused, {wall / 60:.1f} min; {out}/table.md, results.json, curves.csv")


if __name__ == "__main__":
    run_cli(main)
