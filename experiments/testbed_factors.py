"""What each testbed factor does, measured on one reproduce.py seed (its data, SFT and RM; story task, tiny preset):

  1. prompt-dependent annotator noise: the same prompts and demonstrations labelled with --noisy-share 0.25 (flip rate
     0.45 there: coin flips; 0.9: mostly inverted), an RM trained on each from the same SFT; its gold accuracy on the noisy families' pairs against the others', and the
     spread of its accuracy over families, beside the default RM's;
  2. D from SFT samples: an RM trained on pairs of two SFT samples (train_rm.py --pairs-from sft) on the same prompts;
     its gold accuracy on SFT-sample pairs of held-out prompts (sft_pairs/gold_accuracy) beside the default RM's;
  3. the contrastive baselines: the between-prompt variance of the baseline means against the within-prompt
     variance / k (baseline/* of the contrastive PPO run's first row);
  4. prompts of varied difficulty: data with --attributes 1-4, its own SFT and RM; gold of the SFT policy and the RM's
     gold accuracy per number of requested attributes;
  5. a misreading annotator (--noisy-share 0.25 --noisy-kind misread: scary prompts judged as calm ones): an RM
     trained on those labels from the same SFT, and the default RM scored on the same pairs (train_rm.py --epochs 0),
     each on the noisy mood's pairs and the others', and on the pairs that differ in the mood alone; then PPO against
     the misreading RM, and the gold of its held-out samples and of the default PPO run's on the noisy mood's prompts
     and the others'.

    python3 experiments/testbed_factors.py runs/r22 [--threads 2] [--factors noisy,sft_pairs,difficulty,misread]

RUN is a `reproduce.py --out RUN` directory (methods sft and ppo at least; contrastive adds factor 3). The runs go into
RUN/factors/ (each skipped when finished); the table is printed and written to RUN/factors/table.md.
"""
import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


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


def misread_runs(s0: Path, f: Path, rm: list[str], threads: list[str]):
    """Factor 5: the same prompts and demonstrations as the run's data (same seed and sizes), the scary prompts' pairs
    labelled as if calm had been asked for; its RM, the default RM scored on its pairs, PPO against its RM (the run's
    PPO flags) and that policy's held-out evaluation (the run's SFT evaluation's reference samples, same prompts)."""
    n_eval = json.loads((s0 / "data" / "meta.json").read_text())["args"]["n_eval"]
    data, sft = str(f / "data_misread"), str(s0 / "sft" / "ckpt")
    step(f / "data_misread", "prepare_data.py", "--task", "story", "--seed", "0", "--out", data, "--n-eval", str(n_eval),
         "--noisy-share", "0.25", "--noisy-kind", "misread")
    step(f / "rm_misread", *rm, "--data", data, "--out", str(f / "rm_misread"))
    step(f / "rm_default_on_misread", *rm, "--data", data, "--epochs", "0", "--previous-rm", str(s0 / "rm" / "ckpt"),
         "--out", str(f / "rm_default_on_misread"))
    ppo = json.loads((s0 / "ppo" / "config.json").read_text())
    step(f / "ppo_misread", "train_ppo.py", "--preset", "tiny", "--seed", "0", "--data", data, "--sft", sft,
         "--steps", str(ppo["steps"]), "--eval-every", str(ppo["eval_every"]), "--rm", str(f / "rm_misread" / "ckpt"),
         *threads, "--out", str(f / "ppo_misread"))
    step(f / "eval_ppo_misread.json", "evaluate.py", "--policy", str(f / "ppo_misread" / "ckpt"), "--reference", sft,
         "--rm", str(f / "rm_misread" / "ckpt"), "--data", data, "--n-eval", str(n_eval), "--seed", "0", *threads,
         "--reference-samples", str(s0 / "eval" / "sft.json"), "--out", str(f / "eval_ppo_misread.json"))


def mood_probe(rm_ckpt: Path, prompts_file: Path, task) -> dict[str, tuple[float, float]]:
    """mood -> (share of its held-out prompts on which the RM scores the reference story of the requested mood above the
    reference story of the partner mood, mean score margin of the former over the latter)."""
    from rlhf.checkpoint import load_model
    from rlhf.data import read_jsonl
    from rlhf.reward import score_ids
    from rlhf.tasks.story import parse_prompt
    rm, tok, _ = load_model(rm_ckpt, "rm")
    prompts = [r["prompt"] for r in read_jsonl(prompts_file, "prompts")]
    right = [task.reference(p) for p in prompts]
    other = [task.reference(task.misread(p)) for p in prompts]  # the partner mood's story (StoryTask.misread swaps it)
    ids = tok.encode_prompts(prompts)
    margin = (score_ids(rm, ids, tok.encode_responses(right), tok.pad_id)
              - score_ids(rm, ids, tok.encode_responses(other), tok.pad_id)).tolist()
    out = {}
    for m in task.families:
        ms = [x for p, x in zip(prompts, margin) if parse_prompt(p)[0] == m]
        out[m] = (sum((x > 0) + 0.5 * (x == 0) for x in ms) / len(ms), sum(ms) / len(ms))
    return out


def misread_table(s0: Path, f: Path, g) -> list[str]:
    """Factor 5's two tables: the RMs on the noisy mood's pairs and the others'; the policies' gold there."""
    from rlhf.data import read_objects
    from rlhf.report import prompt_outcomes
    from rlhf.tasks import get_task
    task = get_task("story", noisy_share=0.25, noisy_kind="misread")
    noisy = sorted(m for m in task.families if task.noisy_family(m))
    lines = ["", f"A misreading annotator (--noisy-share 0.25 --noisy-kind misread: {', '.join(noisy)} prompts judged as "
             f"{', '.join(task.misread(f'write a {m} story about mia and a red kite .').split()[2] for m in noisy)}; the same "
             "pairs, labels differing only there):", "",
             "| RM | gold acc., held-out pairs | noisy mood | other moods | mood-only pairs, noisy mood (n) | mood-only, other moods (n) "
             "| gold acc., SFT-sample pairs | noisy mood | other moods |", "|---|---|---|---|---|---|---|---|---|"]
    n = lambda d, k: f"{g(d, k)} ({d.get(k + '/n', 0)})"  # noqa: E731
    for name, d in (("default RM (default labels)", f / "rm_default_on_misread"), ("RM on the misread labels", f / "rm_misread")):
        d = json.loads((d / "diagnostics.json").read_text())
        lines.append(f"| {name} | {g(d, 'rm/gold_accuracy')} | {g(d, 'rm/gold_accuracy_noisy')} | {g(d, 'rm/gold_accuracy_clean')} | "
                     f"{n(d, 'rm/component/mood_noisy')} | {n(d, 'rm/component/mood_clean')} | {g(d, 'sft_pairs/gold_accuracy')} | "
                     f"{g(d, 'sft_pairs/gold_accuracy_noisy')} | {g(d, 'sft_pairs/gold_accuracy_clean')} |")
    lines += ["", "The mood probe: for every held-out prompt, the reference story for its mood against the reference story for "
              "the partner mood (the same name, object and colour: the pair differs in gold only by the mood). Share of "
              "pairs the RM orders as gold does, and the mean RM margin (its normalised score, std 1 on held-out pairs) "
              "of the right story over the other:", "",
              "| RM | " + " | ".join(f"{m}: right, margin" for m in task.families) + " |", "|---|" + "---|" * len(task.families)]
    for name, d in (("default RM", s0 / "rm"), ("RM on the misread labels", f / "rm_misread")):
        probe = mood_probe(d / "ckpt", s0 / "data" / "prompts_eval.jsonl", task)
        lines.append(f"| {name} | " + " | ".join(f"{probe[m][0]:.3f}, {probe[m][1]:+.2f}" for m in task.families) + " |")
    lines += ["", "| policy (held-out prompts) | gold, noisy mood | gold, other moods | win rate vs SFT, noisy mood | "
              "other moods | KL |", "|---|---|---|---|---|---|"]
    mean = lambda xs: sum(xs) / len(xs) if xs else float("nan")  # noqa: E731
    for k, (name, ev) in enumerate((("PPO against the default RM", s0 / "eval" / "ppo.json"),
                                    ("PPO against the misreading RM", f / "eval_ppo_misread.json"))):
        prompts, gold, wins = prompt_outcomes(ev)
        part = {w: [i for i, p in enumerate(prompts) if task.noisy(p) == w and wins[i] is not None] for w in (True, False)}
        if k == 0:  # the reference (SFT) samples, the same for both evaluations
            ref_gold = [r.get("ref_gold") for r in read_objects(ev.with_name(ev.stem + ".samples.jsonl"))]
            lines.append(f"| SFT | {mean([ref_gold[i] for i in part[True]]):.3f} | {mean([ref_gold[i] for i in part[False]]):.3f} "
                         f"| 0.5 | 0.5 | 0 |")
        kl = json.loads(ev.read_text()).get("objective/kl", float("nan"))
        lines.append(f"| {name} | {mean([gold[i] for i in part[True]]):.3f} | {mean([gold[i] for i in part[False]]):.3f} | "
                     f"{mean([wins[i] for i in part[True]]):.3f} | {mean([wins[i] for i in part[False]]):.3f} | {kl:.2f} |")
    lines.append(f"(held-out prompts: {len(part[True])} of the noisy mood, {len(part[False])} of the others; SFT is the "
                 "reference sample, so its win rate is 0.5 by construction)")
    return lines


FACTORS = ("noisy", "sft_pairs", "difficulty", "misread")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--skip-difficulty", action="store_true", help="leave factor 4 (its own SFT) out")
    ap.add_argument("--factors", default=",".join(FACTORS), help=f"comma-separated, from {','.join(FACTORS)} (default: all)")
    a = ap.parse_args()
    factors = a.factors.split(",")
    if not factors or any(x not in FACTORS for x in factors):
        ap.error(f"--factors {a.factors}: choose from {','.join(FACTORS)}")
    run = Path(a.run).resolve()
    s0, f = run / "s0", run / "factors"
    sft, threads = str(s0 / "sft" / "ckpt"), ["--threads", str(a.threads)]
    rm = ["train_rm.py", "--preset", "tiny", "--seed", "0", "--sft", sft, "--normalize", *threads]
    if "noisy" in factors:
        for tag, flip in (("", "0.45"), ("90", "0.9")):  # coin-flip labels there; mostly inverted labels there
            step(f / f"data_noisy{tag}", "prepare_data.py", "--task", "story", "--out", str(f / f"data_noisy{tag}"),
                 "--noisy-share", "0.25", "--noisy-flip-rate", flip)
            step(f / f"rm_noisy{tag}", *rm, "--data", str(f / f"data_noisy{tag}"), "--out", str(f / f"rm_noisy{tag}"))
    if "sft_pairs" in factors:
        step(f / "rm_sftD", *rm, "--data", str(s0 / "data"), "--pairs-from", "sft", "--out", str(f / "rm_sftD"))
    mixed = "difficulty" in factors and not a.skip_difficulty
    if mixed:
        difficulty_runs(f, threads)
    if "misread" in factors:
        misread_runs(s0, f, rm, threads)

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
    row0 = json.loads((s0 / "contrastive" / "metrics.jsonl").open().readline()) if (s0 / "contrastive").exists() else {}
    between, within = row0.get("baseline/between_prompt_var"), row0.get("baseline/within_prompt_var_over_k")
    if between is not None:
        lines += ["", f"Contrastive baselines (k = 4 SFT samples per RL prompt, the first RM): between-prompt variance of the "
                      f"baseline means {between:.3f}, within-prompt variance / k {within:.3f} (ratio {between / within:.1f})"]
    if mixed:
        lines += difficulty_table(f, g)
    if "misread" in factors:
        lines += misread_table(s0, f, g)
    lines += ["", f"Command: python3 experiments/testbed_factors.py {a.run} --threads {a.threads}"
              + (" --skip-difficulty" if a.skip_difficulty else "") + (f" --factors {a.factors}" if factors != list(FACTORS) else "")]
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
