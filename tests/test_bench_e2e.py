"""``bench/e2e.py --tiny`` runs on the CPU for each model setting: build, text encode, sampling,
decode and mp4, cold then warm in one process."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench" / "e2e.py"


@pytest.mark.parametrize("model,describes", [
    ("t2v-1.3B", "unipc steps, CFG 5"),
    ("a14b-4step", "euler steps, CFG 1, torch.float32, fp8 blocks + merged rank-64 LoRA, 2 experts"),
])
def test_the_end_to_end_benchmark_smoke_runs(model, describes):
    out = subprocess.run([sys.executable, str(BENCH), "--tiny", "--model", model, "--repeat", "2"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert describes in out.stdout
    assert re.findall(r"^### generation \d: (\w+)", out.stdout, re.M) == ["cold", "warm"]
    totals = re.findall(r"^\| \*\*total: text encode to mp4\*\* \| \*\*([\d.]+)\*\* \|", out.stdout, re.M)
    assert len(totals) == 2 and all(float(t) > 0 for t in totals)


def test_the_a14b_benchmark_times_each_fp8_matmul_setting():
    """``--fp8-matmul off,tensor`` runs the generations once per setting in one process (on the
    CPU both dequantise: no fp8 GEMMs there), and a bf16 model refuses the option."""
    out = subprocess.run([sys.executable, str(BENCH), "--tiny", "--model", "a14b-4step",
                          "--fp8-matmul", "off,tensor"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert re.findall(r"^## fp8 blocks: (.*)", out.stdout, re.M) == [
        "dequantised per matmul", "fp8 GEMMs, activations quantised per tensor"]
    assert re.findall(r"^### generation \d: (.*)", out.stdout, re.M) == [
        "cold (first in this process)", "first with this setting (blocks recompile)"]
    refused = subprocess.run([sys.executable, str(BENCH), "--tiny", "--fp8-matmul", "tensor"],
                             capture_output=True, text=True, timeout=300)
    assert refused.returncode == 2 and "needs fp8 weights" in refused.stderr
