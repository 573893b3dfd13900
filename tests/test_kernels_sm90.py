"""The quantisation kernels compile for Hopper (sm_90) on a machine without a GPU. The other
kernel tests run Triton's interpreter, which accepts code the GPU compiler may reject (fp8
casts, transposed stores); this builds the machine code (``probes/compile_sm90.py``)."""

import json
import subprocess
import sys
from pathlib import Path

PROBE = Path(__file__).parent / "probes" / "compile_sm90.py"


def test_quantisation_kernels_build_for_hopper():
    out = subprocess.run([sys.executable, str(PROBE)], capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    sizes = json.loads(out.stdout.splitlines()[-1])
    assert set(sizes) == {"fp8 rows, per-row scales", "fp8 rows, per-tensor scale",
                          "V to fp8, transposed", "Q/K to int8"}
    assert all(size > 1000 for size in sizes.values())
