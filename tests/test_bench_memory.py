"""``bench/memory.py --tiny`` runs on the CPU: every scenario of the GPU benchmark, end to end."""

import re
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench" / "memory.py"


def test_the_memory_benchmark_smoke_runs_every_scenario():
    out = subprocess.run([sys.executable, str(BENCH), "--tiny", "--steps", "2"], capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    rows = re.findall(r"^\| (.+?) \| .*\|$", out.stdout, re.M)
    assert [r for r in rows if "swapped" in r or "1.3B" in r] == [
        "14B fp8, 0 blocks swapped", "14B fp8, 1 blocks swapped", "14B fp8, 2 blocks swapped",
        "A14B fp8, 0 blocks swapped per expert", "A14B fp8, 1 blocks swapped per expert",
        "A14B fp8, 2 blocks swapped per expert", "1.3B bf16, text encoder on the CPU, low_vram"]
    assert "OOM" not in out.stdout
    assert re.search(r"\| fp8 e4m3 \(row scales\) \| dequantise to bf16 \| [\d.]+ \| 0\.00\d+ \|",
                     out.stdout)
