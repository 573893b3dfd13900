"""``bench/sass_profile.py``: the sage8 kernel compiles for Hopper (sm_90) on a machine without a
GPU, and its key loop issues exactly one special-function exp2 per logit (half with the split
exp2, the other half on the FMA units)."""

import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench" / "sass_profile.py"


def profile(tiles: str) -> dict[str, dict[str, float]]:
    out = subprocess.run([sys.executable, str(BENCH), "--tiles", tiles], capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = [line.strip("| ").split(" | ") for line in out.stdout.splitlines()
             if line.startswith("| ")]
    header, rows = lines[0], lines[1:]
    return {row[0]: dict(zip(header[1:], map(float, row[1:]))) for row in rows}


def test_one_exp2_per_logit_on_the_special_function_unit():
    rows = profile('{"num_warps": 8}')
    assert set(rows) == {"fp8", "fp16"}
    for row in rows.values():
        assert row["MUFU"] == 1.0 and row["instructions / logit"] > row["MUFU"] + row["FFMA"]
        assert row["GMMA"] > 0  # the dots run as Hopper warpgroup MMAs


def test_split_exp2_moves_half_of_them_to_the_fma_units():
    rows = profile('{"num_warps": 8, "exp2": "split"}')
    assert all(row["MUFU"] == 0.5 and row["FFMA"] >= 2 for row in rows.values())


def test_carrying_fp8_sums_in_the_mma_accumulator_drops_the_promotion_adds():
    """``fp8_promote=False``: no per-tile fp32 add of the fp8 MMA's partial sums (two per logit)."""
    promoted = profile("{}")["fp8"]
    carried = profile('{"fp8_promote": false}')["fp8"]
    assert carried["FADD"] <= promoted["FADD"] - 1.5
    assert carried["instructions / logit"] < promoted["instructions / logit"] - 1.5
