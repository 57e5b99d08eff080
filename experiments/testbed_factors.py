"""What each testbed factor does, measured on one reproduce.py seed (its data, SFT and RM; story task, tiny preset):

  1. prompt-dependent annotator noise: the same prompts and demonstrations labelled with --noisy-share 0.25 (flip rate
     0.45 there: coin flips; 0.9: mostly inverted), an RM trained on each from the same SFT; its gold accuracy on the noisy families' pairs against the others', and the
     spread of its accuracy over families, beside the default RM's;
  2. D from SFT samples: an RM trained on pairs of two SFT samples (train_rm.py --pairs-from sft) on the same prompts;
     its gold accuracy on SFT-sample pairs of held-out prompts (sft_pairs/gold_accuracy) beside the default RM's;
  3. the contrastive baselines: the between-prompt variance of the baseline means against the within-prompt
     variance / k (baseline/* of the contrastive PPO run's first row);
  4. prompts of varied difficulty: data with --attributes 1-4, its own SFT and RM; gold of the SFT policy and the RM's
     gold accuracy per number of requested attributes.

    python3 experiments/testbed_factors.py runs/r22 [--threads 2]

RUN is a `reproduce.py --out RUN` directory (default methods). The two RMs go into RUN/factors/ (skipped when their
diagnostics.json exists); the table is printed and written to RUN/factors/table.md.
"""
import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def step(out: Path, *argv):
    """Run a script unless its output is finished (diagnostics.json, eval.json, meta.json or the JSON itself); an
    unfinished training run resumes, unfinished data is written again."""
    if any((out / n).exists() for n in ("diagnostics.json", "eval.json", "meta.json")) or out.is_file():
        return
    extra = ([] if not out.exists() else ["--overwrite"] if argv[0] == "prepare_data.py"
             else ["--resume"] if argv[0].startswith("train_") else [])
    print(" ".join([*argv, *extra]), flush=True)
    subprocess.run([sys.executable, *argv, *extra], cwd=ROOT, check=True)


def difficulty_runs(f: Path, threads: list[str]):
    step(f / "data_mixed", "prepare_data.py", "--task", "story", "--out", str(f / "data_mixed"), "--attributes", "1-4")
    step(f / "sft_mixed", "train_sft.py", "--preset", "tiny", "--data", str(f / "data_mixed"), *threads, "--out", str(f / "sft_mixed"))
    step(f / "rm_mixed", "train_rm.py", "--preset", "tiny", "--seed", "0", "--sft", str(f / "sft_mixed" / "ckpt"), "--normalize",
         *threads, "--data", str(f / "data_mixed"), "--out", str(f / "rm_mixed"))
    step(f / "eval_mixed.json", "evaluate.py", "--policy", str(f / "sft_mixed" / "ckpt"), "--reference", "none",
         "--rm", str(f / "rm_mixed" / "ckpt"), "--data", str(f / "data_mixed"), "--n-eval", "400", *threads,
         "--out", str(f / "eval_mixed.json"))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--skip-difficulty", action="store_true", help="leave factor 4 (its own SFT) out")
    a = ap.parse_args()
    run = Path(a.run).resolve()
    s0, f = run / "s0", run / "factors"
    sft, threads = str(s0 / "sft" / "ckpt"), ["--threads", str(a.threads)]
    rm = ["train_rm.py", "--preset", "tiny", "--seed", "0", "--sft", sft, "--normalize", *threads]
    for tag, flip in (("", "0.45"), ("90", "0.9")):  # coin-flip labels there; mostly inverted labels there
        step(f / f"data_noisy{tag}", "prepare_data.py", "--task", "story", "--out", str(f / f"data_noisy{tag}"),
             "--noisy-share", "0.25", "--noisy-flip-rate", flip)
        step(f / f"rm_noisy{tag}", *rm, "--data", str(f / f"data_noisy{tag}"), "--out", str(f / f"rm_noisy{tag}"))
    step(f / "rm_sftD", *rm, "--data", str(s0 / "data"), "--pairs-from", "sft", "--out", str(f / "rm_sftD"))
    mixed = not a.skip_difficulty
    if mixed:
        difficulty_runs(f, threads)

    diag = {name: json.loads((d / "diagnostics.json").read_text())
            for name, d in (("default RM", s0 / "rm"), ("noisy families, flip 0.45", f / "rm_noisy"),
                            ("noisy families, flip 0.9", f / "rm_noisy90"), ("D from SFT samples", f / "rm_sftD"))
            if (d / "diagnostics.json").exists()}
    g = lambda d, k: f"{d[k]:.3f}" if isinstance(d.get(k), float) else "-"  # noqa: E731
    lines = ["| RM | gold acc., held-out pairs of its D | noisy families | other families | std over families | "
             "gold acc., SFT-sample pairs | noisy | other | std over families |", "|---|---|---|---|---|---|---|---|---|"]
    for name, d in diag.items():
        lines.append(f"| {name} | {g(d, 'rm/gold_accuracy')} | {g(d, 'rm/gold_accuracy_noisy')} | {g(d, 'rm/gold_accuracy_clean')} | "
                     f"{g(d, 'rm/family_gold_accuracy_std')} | {g(d, 'sft_pairs/gold_accuracy')} | {g(d, 'sft_pairs/gold_accuracy_noisy')} | "
                     f"{g(d, 'sft_pairs/gold_accuracy_clean')} | {g(d, 'sft_pairs/family_gold_accuracy_std')} |")
    row0 = json.loads((s0 / "contrastive" / "metrics.jsonl").open().readline())
    between, within = row0.get("baseline/between_prompt_var"), row0.get("baseline/within_prompt_var_over_k")
    if between is not None:
        lines += ["", f"Contrastive baselines (k = 4 SFT samples per RL prompt, the first RM): between-prompt variance of the "
                      f"baseline means {between:.3f}, within-prompt variance / k {within:.3f} (ratio {between / within:.1f})"]
    if mixed:
        lines += difficulty_table(f, g)
    lines += ["", f"Command: python3 experiments/testbed_factors.py {a.run} --threads {a.threads}"
              + (" --skip-difficulty" if a.skip_difficulty else "")]
    f.mkdir(parents=True, exist_ok=True)
    (f / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def difficulty_table(f: Path, g) -> list[str]:
    mixed, ev = json.loads((f / "rm_mixed" / "diagnostics.json").read_text()), json.loads((f / "eval_mixed.json").read_text())
    lines = ["", "Prompts of varied difficulty (--attributes 1-4; its own SFT and RM; eval prompts per level: 4, 27, 184, 185):", "",
              "| attributes requested | SFT gold | RM gold acc., held-out pairs | RM gold acc., SFT-sample pairs |", "|---|---|---|---|"]
    for lv in (1, 2, 3, 4):
        lines.append(f"| {lv} | {g(ev, f'gold/score_difficulty_{lv}')} | {g(mixed, f'rm/gold_accuracy_difficulty_{lv}')} | "
                     f"{g(mixed, f'sft_pairs/gold_accuracy_difficulty_{lv}')} |")
    return lines


if __name__ == "__main__":
    main()
