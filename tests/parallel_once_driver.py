"""Under ``torchrun --nproc-per-node 2``: what ``wan_core.parallel.once`` gives each rank. Writes
``OUT/once-rankR.json``: the calls each rank made, the value it got (a nested structure of
tensors and plain data, and a nested ``once`` call), and the error it saw when rank 0's call fails."""

import json
import sys

import torch

from wanrt.wan_core import parallel

calls = []


@parallel.once
def inner(x):
    calls.append("inner")
    return x + 1


@parallel.once
def outer(x):
    calls.append("outer")
    return {"sum": inner(x).sum(), "label": f"from rank {parallel.current().rank}",
            "pair": (inner(x), [3])}


@parallel.once
def fails():
    raise ValueError("bad prompt")


if __name__ == "__main__":
    out = sys.argv[1]
    mesh = parallel.init("cfg", timeout_s=60)
    got = outer(torch.arange(3.0))
    try:
        fails()
        error = None
    except Exception as e:  # the test reads what each rank saw
        error = f"{type(e).__name__}: {e}"
    with open(f"{out}/once-rank{mesh.rank}.json", "w") as f:
        json.dump({"calls": calls, "sum": got["sum"].item(), "label": got["label"],
                   "pair": [got["pair"][0].tolist(), got["pair"][1]], "error": error}, f)
    parallel.shutdown()
