"""One set of smoke artefacts on the algo task, built once per test session: data, SFT policy, RM."""
import pytest

from helpers import run


@pytest.fixture(scope="session")
def algo(tmp_path_factory):
    d = tmp_path_factory.mktemp("algo")
    run("prepare_data.py", "--task", "algo", "--out", str(d / "data"), "--n-sft", "3000", "--n-pairs", "3000",
        "--n-rl", "64", "--n-unlabelled", "32", "--n-eval", "64")
    run("train_sft.py", "--preset", "smoke", "--data", str(d / "data"), "--out", str(d / "sft"))
    run("train_rm.py", "--preset", "smoke", "--data", str(d / "data"), "--sft", str(d / "sft" / "ckpt"), "--out", str(d / "rm"))
    return d
