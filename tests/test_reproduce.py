"""reproduce.py end to end at the smoke size: every method gets a finite row; a second call reuses every stage."""
import json
import math
import subprocess
import sys
import time
from pathlib import Path

from helpers import ROOT, run


def test_reproduce_smoke_end_to_end(tmp_path):
    out = tmp_path / "repro"
    p = run("reproduce.py", "--preset", "smoke", "--task", "algo", "--out", str(out),
            "--methods", "sft,best_of_n,dpo,ppo,rloo,grpo,contrastive,rlp_uml,rlp_spg,oracle")
    res = json.loads((out / "results.json").read_text())
    assert set(res["methods"]) == {"sft", "best_of_n", "dpo", "ppo", "rloo", "grpo", "contrastive", "rlp_uml", "rlp_spg", "oracle"}
    for m, s in res["methods"].items():
        for k in ("gold/win_rate", "gold/score", "proxy/score", "proxy/gain", "objective/kl", "eval/length"):
            assert math.isfinite(s[k]["mean"]), (m, k, s[k])
        assert 0.0 <= s["gold/win_rate"]["mean"] <= 1.0
    table = (out / "table.md").read_text()
    for label in ("SFT", "best-of-n", "DPO", "PPO", "RLOO", "GRPO", "contrastive", "RLP-UML", "RLP-SPG", "oracle"):
        assert label in table, label
    assert res["methods"]["sft"]["objective/kl"]["mean"] == 0.0  # the SFT policy against itself
    assert res["methods"]["sft"]["proxy/gain"]["mean"] == 0.0
    curve = (out / "curves.csv").read_text().splitlines()
    assert curve[0] == "method,seed,step,kl,gold,proxy,kl_coef,pipeline_seed" and len(curve) > 1 + 5 * 2
    assert res["stages_reused"] == 0 and res["stages_run"] > 10
    # a second call finds every stage's record and reruns nothing; a changed setting reruns only what it touches
    p = run("reproduce.py", "--preset", "smoke", "--task", "algo", "--out", str(out),
            "--methods", "sft,best_of_n,dpo,ppo,rloo,grpo,contrastive,rlp_uml,rlp_spg,oracle")
    again = json.loads((out / "results.json").read_text())
    assert again["stages_run"] == 0 and again["stages_reused"] == res["stages_run"]
    assert again["methods"] == res["methods"]
    run("reproduce.py", "--preset", "smoke", "--task", "algo", "--out", str(out), "--methods", "sft,best_of_n", "--best-of-n", "3")
    third = json.loads((out / "results.json").read_text())
    assert third["stages_run"] == 1  # only best-of-n's evaluation changed
    assert "matplotlib" in p.stdout or "png" in p.stdout

    assert res["paired"]["contrastive"]["units"] == 1 and "Difference from PPO, paired" in table
    assert {r["method"] for r in res["frontier"]} == {"ppo", "rloo", "grpo", "contrastive", "rlp_uml", "rlp_spg", "oracle"}

    # a KL sweep, SIGKILLed in its second coefficient's PPO stage, then the same command: it reruns no finished
    # stage, resumes the killed one, and ends with the same SFT and PPO rows as the run above
    killed = tmp_path / "killed"
    cmd = [sys.executable, "reproduce.py", "--preset", "smoke", "--task", "algo", "--methods", "sft,ppo",
           "--kl-coefs", "0.05,0.5", "--out", str(killed)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    while not (killed / "s0" / "ppo_kl0.5" / "config.json").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    assert proc.poll() is None, "reproduce.py ended before it could be killed in the second coefficient's PPO stage"
    proc.kill()
    proc.wait()
    finished = {p.name for p in (killed / "stages").glob("*.json") if not p.name.endswith(".pending.json")}
    assert finished == {"s0_data.json", "s0_sft.json", "s0_rm.json", "s0_ppo.json"} and not (killed / "results.json").exists()
    run(*cmd[1:])
    swept = json.loads((killed / "results.json").read_text())
    assert swept["stages_reused"] == 4 and swept["stages_run"] == 3  # the killed PPO run, then the two evaluations
    assert (killed / "logs" / "s0_ppo_kl0.5.log").read_text().splitlines()[0].endswith("--resume")
    assert swept["methods"]["sft"] == res["methods"]["sft"] and swept["methods"]["ppo"] == res["methods"]["ppo"]
    assert sorted(r["kl_coef"] for r in swept["frontier"]) == [0.05, 0.5]
    assert "KL coefficient 0.05 (frontier also at 0.5)" in (killed / "table.md").read_text()


def test_reproduce_rejects_unknown_method(tmp_path):
    p = run("reproduce.py", "--methods", "ppo,kto", "--out", str(tmp_path / "x"), check=False)
    assert p.returncode != 0 and "--methods" in p.stderr + p.stdout and "kto" in p.stderr + p.stdout
    p = run("reproduce.py", "--noise-sweep", "--noise-levels", "0.1,0.9", "--out", str(tmp_path / "y"), check=False)
    assert p.returncode != 0 and "[0, 0.5]" in p.stderr + p.stdout
    for bad in ("0.05,x", "0.05,0.05", "-1"):
        p = run("reproduce.py", "--kl-coefs", bad, "--out", str(tmp_path / "bad"), check=False)
        assert p.returncode != 0 and "--kl-coefs" in p.stderr + p.stdout, bad


def popen_of(fake_run):
    """A stand-in for subprocess.Popen whose process is fake_run(cmd, **kw) (-> an object with .returncode)."""
    class Proc:
        def __init__(self, cmd, **kw):
            self.returncode = fake_run(cmd, **kw).returncode

        def wait(self):
            return self.returncode

        def kill(self):
            pass
    return Proc


def test_stage_cache_reruns_downstream_of_a_changed_stage(tmp_path, monkeypatch):
    """Stage b reads a's output: changing a's command reruns both; the same commands again rerun nothing."""
    sys.path.insert(0, str(ROOT))
    import reproduce
    from rlhf import stages

    calls, full = [], []

    def fake_run(cmd, **kw):
        calls.append(cmd[1])
        full.append(cmd)
        out = Path(cmd[cmd.index("--out") + 1])
        out.mkdir(parents=True, exist_ok=True)
        return type("R", (), {"returncode": 0})()

    monkeypatch.setattr(stages.subprocess, "Popen", popen_of(fake_run))

    def pipeline(lr):
        st = reproduce.Stages(tmp_path, 2, 0)
        a = st("a", "a.py", "--lr", lr, "--out", tmp_path / "A", out=tmp_path / "A")
        st("b", "b.py", "--in", a / "ckpt", "--out", tmp_path / "B", out=tmp_path / "B")
        st.bar.close()
        return st.ran, st.reused

    assert pipeline(1) == (2, 0)
    assert pipeline(1) == (0, 2)
    assert pipeline(2) == (2, 0) and calls[-2:] == ["a.py", "b.py"]
    # an interrupted stage (its pending record, no done record) reruns with --resume when its command is the same
    done = reproduce.read_json(tmp_path / "stages" / "b.json")
    (tmp_path / "stages" / "b.json").unlink()
    reproduce.write_json(tmp_path / "stages" / "b.pending.json", {k: done[k] for k in ("script", "argv", "inputs")})
    assert pipeline(2) == (1, 1) and full[-1][-1] == "--resume"
    (tmp_path / "stages" / "b.json").unlink()  # killed again, but now with other settings: start it over
    reproduce.write_json(tmp_path / "stages" / "b.pending.json", {"script": "b.py", "argv": [], "inputs": []})
    assert pipeline(2) == (1, 1) and full[-1][-1] == "--overwrite"


def test_proxy_gain_is_taken_seed_by_seed(tmp_path):
    """Each seed's RM has its own offset: the gain column subtracts SFT's proxy of the same seed (worked by hand:
    PPO 2.0 - 1.0 = 1.0 in seed 0, 7.5 - 5.0 = 2.5 in seed 1 -> mean 1.75, std sqrt(1.125))."""
    sys.path.insert(0, str(ROOT))
    from rlhf import report
    ev = {}
    for m, proxies in (("sft", (1.0, 5.0)), ("ppo", (2.0, 7.5))):
        for s, x in enumerate(proxies):
            f = tmp_path / f"{m}{s}.json"
            f.write_text(json.dumps({"gold/win_rate": 0.5, "gold/win_rate_lo": 0.4, "gold/win_rate_hi": 0.6,
                                     "gold/score": 0.7, "proxy/score": x, "objective/kl": 1.0, "eval/length": 40}))
            ev.setdefault(m, []).append(f)
    s = report.summarise(ev)
    assert s["ppo"]["proxy/gain"]["mean"] == 1.75 and math.isclose(s["ppo"]["proxy/gain"]["std"], math.sqrt(1.125))
    assert s["sft"]["proxy/gain"] == {"mean": 0.0, "std": 0.0}
    no_base = report.summarise({"ppo": ev["ppo"]})
    assert math.isnan(no_base["ppo"]["proxy/gain"]["mean"])
    assert "| - |" in report.table(no_base)
    # two PPO seeds over seed 0's SFT (--ppo-seeds 2): both subtract seed 0's SFT proxy, 1.0 -> gains 1.0 and 6.5
    two = report.summarise({"sft": ev["sft"][:1], "ppo": ev["ppo"]}, seed_of={"sft": [0], "ppo": [0, 0]})
    assert two["ppo"]["proxy/gain"]["mean"] == 3.75


def test_stage_count_is_the_number_of_stages_run(tmp_path, monkeypatch):
    """The progress bar's total (count_stages) equals the stages the call runs, for several settings; the default
    call's 17 stages, all methods' 25 and --seeds 3's 51 are the README's; --ppo-seeds repeats only PPO and its eval."""
    sys.path.insert(0, str(ROOT))
    import reproduce
    from rlhf import stages

    cmds = []

    def fake_run(cmd, **kw):
        cmds.append(cmd[1:])
        Path(cmd[cmd.index("--out") + 1]).mkdir(parents=True, exist_ok=True)
        return type("R", (), {"returncode": 0})()

    monkeypatch.setattr(stages.subprocess, "Popen", popen_of(fake_run))
    cases = [([], 17), (["--methods", ",".join(reproduce.METHODS)], 25), (["--seeds", "3"], 51),
             (["--methods", "sft,ppo,contrastive,oracle", "--seeds", "2", "--noise-sweep", "--noise-levels", "0.0,0.25"], None),
             (["--methods", "sft,best_of_n", "--noise-sweep"], None), (["--methods", "rlp_spg", "--ppo-seeds", "2"], None),
             (["--methods", "sft,ppo,rlp_uml", "--ppo-seeds", "3", "--noise-sweep", "--noise-levels", "0.25"], None)]
    for i, (argv, expected) in enumerate(cases):
        args = reproduce.parse_args(reproduce.Args, ["--out", str(tmp_path / f"c{i}"), *argv])
        methods = reproduce.parse_methods(args.methods)
        levels = reproduce.parse_levels(args.noise_levels) if args.noise_sweep else []
        n = reproduce.count_stages(args, methods, levels)
        st = reproduce.Stages(Path(args.out), n, 0)
        cmds.clear()
        reproduce.run_all(st, args, methods, levels)
        st.bar.close()
        assert st.ran == n == len(cmds) and st.reused == 0, (argv, n, st.ran)
        assert len({p.name for p in (Path(args.out) / "stages").glob("*.json")}) == n  # one record per stage
        if expected is not None:
            assert n == expected, (argv, n)
    # the last case: PPO seeds 0, 1, 2 over one SFT, and one RM and RLP RM per annotator; RLP samples from PPO seed 0
    ppo = [c for c in cmds if c[0] == "train_ppo.py" and "noise0.25" not in " ".join(c)]
    assert sorted(c[c.index("--seed") + 1] for c in ppo) == ["0", "0", "1", "1", "2", "2"]
    assert [c[0] for c in cmds].count("train_sft.py") == 1 and [c[0] for c in cmds].count("train_rm.py") == 4  # RM, RLP-UML's RM; twice
    samples = next(c for c in cmds if "prompts_unlabelled.jsonl" in " ".join(c))
    assert samples[samples.index("--policy") + 1] == str(tmp_path / "c6" / "s0" / "ppo" / "ckpt")
    assert all("--normalize" in c for c in cmds if c[0] == "train_rm.py")  # every RM of the pipeline, the RLP ones included
    args = reproduce.parse_args(reproduce.Args, ["--out", str(tmp_path / "raw"), "--methods", "rlp_spg", "--no-normalize"])
    cmds.clear()
    reproduce.run_all(reproduce.Stages(Path(args.out), 99, 0), args, ["rlp_spg"], [])
    assert [c[0] for c in cmds].count("train_rm.py") == 2 and not any("--normalize" in c for c in cmds)
    args = reproduce.parse_args(reproduce.Args, ["--out", str(tmp_path / "sftD"), "--methods", "rlp_uml", "--pairs-from", "sft"])
    cmds.clear()
    reproduce.run_all(reproduce.Stages(Path(args.out), 99, 0), args, ["rlp_uml"], [])
    rms = [c for c in cmds if c[0] == "train_rm.py"]
    assert len(rms) == 2 and all(c[c.index("--pairs-from") + 1] == "sft" for c in rms)
    assert not any("--noisy-share" in c or "--attributes" in c for c in cmds)  # the default world: the data command as before
    assert not any("--noisy-kind" in c or "--dtype" in c for c in cmds)
    # --dtype bf16: every training stage, and no sampling, scoring or evaluation stage
    args = reproduce.parse_args(reproduce.Args, ["--out", str(tmp_path / "bf16"), "--methods", "sft,ppo,contrastive,dpo", "--dtype", "bf16"])
    cmds.clear()
    reproduce.run_all(reproduce.Stages(Path(args.out), 99, 0, dtype=args.dtype), args, ["sft", "ppo", "contrastive", "dpo"], [])
    assert {c[0] for c in cmds if "--dtype" in c} == {"train_sft.py", "train_rm.py", "train_ppo.py", "train_dpo.py"}
    assert all(c[c.index("--dtype") + 1] == "bf16" for c in cmds if "--dtype" in c)
    assert {c[0] for c in cmds if "--dtype" not in c} == {"prepare_data.py", "sample_baselines.py", "evaluate.py"}
    assert not any("--pack" in c for c in cmds)
    cmds.clear()
    args = reproduce.parse_args(reproduce.Args, ["--out", str(tmp_path / "pack"), "--methods", "sft,ppo,contrastive,dpo", "--pack"])
    reproduce.run_all(reproduce.Stages(Path(args.out), 99, 0, pack=args.pack), args, ["sft", "ppo", "contrastive", "dpo"], [])
    assert {c[0] for c in cmds if "--pack" in c} == {"train_sft.py", "train_rm.py", "train_ppo.py"}  # DPO has no --pack
    args = reproduce.parse_args(reproduce.Args, ["--out", str(tmp_path / "w"), "--methods", "sft", "--noisy-share", "0.25",
                                                 "--noisy-kind", "misread", "--attributes", "1-4", "--unlabelled-ratio", "2"])
    cmds.clear()
    reproduce.run_all(reproduce.Stages(Path(args.out), 99, 0), args, ["sft"], [])
    data = next(c for c in cmds if c[0] == "prepare_data.py")
    assert ([data[data.index(f) + 1] for f in ("--noisy-share", "--noisy-kind", "--attributes", "--unlabelled-ratio")]
            == ["0.25", "misread", "1-4", "2.0"])
    # a KL sweep: every PPO-family method at each coefficient (train_ppo.py's default keeps its plain name and command),
    # the held-out evaluation only at the first one, the RLP samples from its PPO run
    for coefs, first in (("0.05,0.2", "ppo"), ("0.2,0.05", "ppo_kl0.2")):
        args = reproduce.parse_args(reproduce.Args, ["--out", str(tmp_path / coefs), "--methods", "sft,ppo,rlp_uml", "--kl-coefs", coefs])
        cmds.clear()
        reproduce.run_all(reproduce.Stages(Path(args.out), 99, 0), args, ["sft", "ppo", "rlp_uml"], [])
        ppo = {Path(c[c.index("--out") + 1]).name: c for c in cmds if c[0] == "train_ppo.py"}
        assert set(ppo) == {"ppo", "ppo_kl0.2", "rlp_uml", "rlp_uml_kl0.2"}
        assert "--kl-coef" not in ppo["ppo"] and ppo["ppo_kl0.2"][ppo["ppo_kl0.2"].index("--kl-coef") + 1] == "0.2"
        evals = [Path(c[c.index("--out") + 1]).name for c in cmds if c[0] == "evaluate.py"]
        assert evals == ["sft.json", f"{first}.json", f"rlp_uml{first[3:]}.json"]
        samples = next(c for c in cmds if "prompts_unlabelled.jsonl" in " ".join(c))
        assert samples[samples.index("--policy") + 1] == str(tmp_path / coefs / "s0" / first / "ckpt")



def test_jobs_run_seeds_side_by_side_with_the_same_commands(tmp_path, monkeypatch):
    """--jobs 2 runs the seeds' stages concurrently (seen: two stages in flight at once), issues exactly the commands
    of --jobs 1 at the same --threads, and returns the same records in the same order; a failing stage stops the
    other seed from starting new stages, and the error names the failed stage."""
    sys.path.insert(0, str(ROOT))
    import threading
    import reproduce
    from rlhf import stages

    lock, state = threading.Lock(), {"now": 0, "most": 0}
    cmds, fail = [], {"stage": None}

    def fake_run(cmd, **kw):
        with lock:
            cmds.append(tuple(cmd[1:]))
            state["now"] += 1
            state["most"] = max(state["most"], state["now"])
        time.sleep(0.02)
        Path(cmd[cmd.index("--out") + 1]).mkdir(parents=True, exist_ok=True)
        with lock:
            state["now"] -= 1
        bad = fail["stage"] is not None and fail["stage"] in " ".join(map(str, cmd))
        if bad and fail.get("raise"):
            raise OSError(f"cannot start {cmd[1]}")  # an error outside any stage's exit status
        return type("R", (), {"returncode": 1 if bad else 0})()

    monkeypatch.setattr(stages.subprocess, "Popen", popen_of(fake_run))
    argv = ["--methods", "sft,ppo,contrastive", "--seeds", "3", "--threads", "1"]

    def go(name, jobs):
        args = reproduce.parse_args(reproduce.Args, ["--out", str(tmp_path / name), *argv, "--jobs", str(jobs)])
        methods = reproduce.parse_methods(args.methods)
        st = reproduce.Stages(Path(args.out), reproduce.count_stages(args, methods, []), args.threads)
        cmds.clear()
        try:
            recs = reproduce.run_all(st, args, methods, [], jobs=jobs)
        finally:
            st.bar.close()
        return st, recs, sorted(c for c in cmds), [c for c in cmds]

    st1, recs1, sorted1, order1 = go("one", 1)
    assert state["most"] == 1
    st2, recs2, sorted2, order2 = go("two", 2)
    assert state["most"] == 2 and st2.ran == st1.ran == len(sorted1)
    strip = lambda cmds: sorted(tuple(a.replace(str(tmp_path / "two"), "X").replace(str(tmp_path / "one"), "X") for a in c) for c in cmds)
    assert strip(sorted1) == strip(sorted2) and order1 != order2  # the same commands, interleaved
    assert [(r["method"], r["seed"], r["run_seed"]) for r in recs1[None]] == [(r["method"], r["seed"], r["run_seed"]) for r in recs2[None]]
    # seed 1's RM fails: seed 1 stops there, the others start nothing new after it (at most their stage in flight)
    fail["stage"] = str(tmp_path / "bad" / "s1" / "rm")
    try:
        go("bad", 2)
        raise AssertionError("the failing stage did not stop the run")
    except SystemExit as e:
        assert str(e).startswith("error: stage s1_rm failed (exit 1)")
    done = {p.name for p in (tmp_path / "bad" / "stages").glob("*.json") if not p.name.endswith(".pending.json")}
    assert not any(n.startswith("s1_ppo") or n.startswith("s2_ppo") for n in done)
    # an error that is not a stage's exit status (here: starting seed 1's RM) stops the others too, and is the one raised
    fail.update(stage=str(tmp_path / "oserr" / "s1" / "rm"), **{"raise": True})
    try:
        go("oserr", 2)
        raise AssertionError("the error did not stop the run")
    except OSError as e:
        assert "cannot start train_rm.py" in str(e)
    done = {p.name for p in (tmp_path / "oserr" / "stages").glob("*.json") if not p.name.endswith(".pending.json")}
    assert not any(n.startswith("s1_ppo") or n.startswith("s2_ppo") for n in done)
