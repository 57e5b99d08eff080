"""experiments/speedup_check.py: the paired comparison of a speed-up (bf16, packing) against fp32 seeds, by hand."""
import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))


def test_compare_by_hand():
    """fp32 (0.70, 0.60, 0.65): mean 0.65, std 0.05. bf16 (0.72, 0.60, 0.68): differences (0.02, 0, 0.03), mean 0.01667,
    sd 0.01528, t(0.975, 2) = 4.3027 -> half-width 4.3027 * 0.01528 / sqrt(3) = 0.03795; |0.01667| <= 0.05: within."""
    import speedup_check
    rows = speedup_check.compare({"win": [0.70, 0.60, 0.65]}, {"win": [0.72, 0.60, 0.68]})
    r = rows["win"]
    assert r["fp32_mean"] == pytest.approx(0.65) and r["fp32_std"] == pytest.approx(0.05)
    assert r["diff"] == pytest.approx(0.05 / 3)
    half = 4.302652729911275 * math.sqrt(((0.02 - 0.05 / 3) ** 2 + (0.05 / 3) ** 2 + (0.03 - 0.05 / 3) ** 2) / 2) / math.sqrt(3)
    assert r["diff_lo"] == pytest.approx(0.05 / 3 - half) and r["diff_hi"] == pytest.approx(0.05 / 3 + half)
    assert r["within_spread"] is True
    assert speedup_check.compare({"x": [1.0, 1.1, 0.9]}, {"x": [1.3, 1.4, 1.2]})["x"]["within_spread"] is False  # 0.3 > 0.1
    assert "| win | 0.700, 0.600, 0.650 | 0.720, 0.600, 0.680 | 0.650 ± 0.050 |" in speedup_check.table(rows, "cmd")
    assert "| pack per seed |" in speedup_check.table(rows, "cmd", "pack")
