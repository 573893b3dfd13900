"""``bench/attention.py --tiny``: the GPU benchmark's code paths run on CPU (interpreted Triton,
tiny shapes, compile backend eager) and print every table with accuracy beside each number."""

import os
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench"


def test_attention_bench_smoke(tmp_path):
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    result = subprocess.run(
        [sys.executable, str(BENCH / "attention.py"), "--tiny", "--sweep", "--no-warm",
         "--dit-backends", "sage8"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert "non-default torch settings:" in out and "caches: fresh under" in out
    rows = [line.split(" | ") for line in out.splitlines() if line.startswith("| [1, 130, 2, 64]")]
    by_name = {row[1]: row for row in rows}
    for name in ("SDPA bf16", "sage8 fp8 P·V", "sage8 fp16 P·V"):
        cosine, rel = float(by_name[name][6]), float(by_name[name][7].rstrip(" |"))
        assert cosine >= 0.999 and rel <= 5e-2, (name, cosine, rel)
    assert "not importable" in by_name["sageattention 1.0.6"][-1] or len(by_name) == 5
    assert out.count("| fp8 | 64 | 64 |") + out.count("| fp16 | 64 | 64 |") == 8  # tiny sweep
    dit = {line.split(" | ")[1]: line for line in out.splitlines() if line.startswith("| tiny |")}
    assert set(dit) == {"ours blocks auto (dense)", "diffusers compile_repeated_blocks",
                        "ours blocks sage8"}
    assert "error" not in out
