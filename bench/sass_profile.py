"""Static profile of the sage8 attention kernel: its Hopper machine code, without a GPU.

Triton compiles ``sage8_attention_kernel`` ahead of time for sm_90 (as it would specialise it
for a contiguous bf16 ``[B, L, H, 128]`` call: 16-byte aligned pointers and strides, unit
strides as constants), ``nvdisasm`` (shipped with Triton) disassembles it, and the key loop's
instructions are counted, the rarely taken accumulator rescale left out. Per logit means per
element of the ``BLOCK_M x BLOCK_N`` score tile, i.e. instructions a thread issues per tile
divided by the logits it owns. What it shows: issue slots per logit (the special-function unit
runs one ``MUFU.EX2`` per logit at a quarter of the issue rate), register spills (``LDL`` /
``STL``), the fp8 accumulator's promotion adds and layout shuffles (``SHFL`` / ``PRMT``).

    python bench/sass_profile.py                         # the Hopper default tiles, both P·V
    python bench/sass_profile.py --tiles '{"num_warps": 8}'
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import subprocess

os.environ.pop("TRITON_INTERPRET", None)  # machine code, not the interpreter
os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")  # the GPU builds' default (fused FMAs)

import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402

from wanrt.kernels.triton_kernels import sage8_attention_kernel as KERNEL  # noqa: E402
from wanrt.kernels.triton_ops import tiles_for  # noqa: E402

HOPPER_TILES = tiles_for(128, 9)
SHOWN = ("MUFU", "FFMA", "FADD", "FMUL", "I2FP", "F2FP", "SHFL", "PRMT", "LDL", "STL", "GMMA")


def compile_sm90(pv: str, tiles: dict, heads: int = 40, head_dim: int = 128):
    """The kernel as ``triton_ops.sage8_attention`` launches it for ``[1, L, heads, head_dim]``."""
    fp8 = pv == "fp8"
    signature = {"out_ptr": "*bf16", "q_ptr": "*i8", "q_scale_ptr": "*fp32", "k_ptr": "*i8",
                 "k_scale_ptr": "*fp32", "v_ptr": "*fp8e4nv" if fp8 else "*fp16",
                 "stride_vb": "i32", "stride_vh": "i32", "stride_vl": "i32", "stride_vd": "i32",
                 "v_scale_ptr": "*fp32", "k_desc": "constexpr", "v_desc": "constexpr",
                 "Lq": "i32", "Lk": "i32", "NQ": "i32", "NK": "i32"}
    constants = dict(H=heads, D=head_dim, Q_BLOCK=128, K_BLOCK=64, BLOCK_M=tiles["block_m"],
                     BLOCK_N=tiles["block_n"], PV_FP8=fp8, EMULATE_FP8_CAST=False,
                     WARP_SPECIALIZE=tiles["warp_specialize"], TMA=False, EXP2=tiles["exp2"],
                     FP8_PROMOTE=tiles["fp8_promote"],
                     k_desc=None, v_desc=None, **({"stride_vl": 1} if fp8 else
                                                   {"stride_vd": 1, "v_scale_ptr": None}))
    aligned = [n for n in signature if n.startswith("stride")]
    return build_sm90(KERNEL, signature, constants, aligned, num_warps=tiles["num_warps"],
                      num_stages=tiles["num_stages"])


def build_sm90(kernel, signature: dict, constants: dict, aligned: list[str] = (), **options):
    """``kernel`` compiled ahead of time for sm_90: ``signature`` types its runtime arguments,
    ``constants`` fixes the rest; pointers and the ``aligned`` integers are taken as multiples of
    16 (as Triton specialises them at launch). ``options``: ``num_warps``, ``num_stages``."""
    signature = {**signature, **{name: "constexpr" for name in constants}}
    index = kernel.arg_names.index
    source = triton.compiler.ASTSource(
        fn=kernel, signature=signature,
        constexprs={(index(n),): v for n, v in constants.items()},
        attrs={(index(n),): [["tt.divisibility", 16]] for n, t in signature.items()
               if t != "constexpr" and (t.startswith("*") or n in aligned)})
    return triton.compile(source, target=GPUTarget("cuda", 90, 32), options=options)


def disassemble(cubin: bytes) -> list[str]:
    nvdisasm = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin",
                            "nvdisasm")
    path = f"/tmp/sage8_{os.getpid()}.cubin"
    with open(path, "wb") as f:
        f.write(cubin)
    try:
        return subprocess.run([nvdisasm, "-c", path], capture_output=True, text=True,
                              check=True).stdout.splitlines()
    finally:
        os.unlink(path)


def opcode(line: str) -> str | None:
    m = re.search(r"/\*[0-9a-f]{4,6}\*/\s+(?:@!?U?P\w+\s+)?([A-Z0-9_]+)", line)
    return m and m.group(1)


def key_loop(lines: list[str], accumulators: int) -> collections.Counter:
    """Opcode counts of the loop with the most ``MUFU.EX2`` (the key loop), without the
    shortest span a branch skips that holds a multiply per accumulator register (the rescale,
    run only when a row max grows)."""
    labels = {m.group(1): i for i, l in enumerate(lines)
              if (m := re.match(r"\s*\.L_x_(\d+):", l))}
    loops = [(labels[m.group(1)], i) for i, l in enumerate(lines)
             if (m := re.search(r"BRA `\(\.L_x_(\d+)\)", l)) and labels.get(m.group(1), i) < i]
    start, end = max(loops, key=lambda r: sum("MUFU.EX2" in l for l in lines[r[0]:r[1]]))
    body = lines[start:end + 1]
    targets = {m.group(1): i for i, l in enumerate(body)
               if (m := re.match(r"\s*\.L_x_(\d+):", l))}
    skips = [(i, targets[m.group(1)]) for i, l in enumerate(body)
             if (m := re.search(r"@!?P\d BRA `\(\.L_x_(\d+)\)", l)) and targets.get(m.group(1), 0) > i]
    rescales = [(a, b) for a, b in skips
                if sum(opcode(l) == "FMUL" for l in body[a:b]) >= accumulators]
    if rescales:
        a, b = min(rescales, key=lambda r: r[1] - r[0])
        body = body[:a + 1] + body[b:]
    counts = collections.Counter(filter(None, map(opcode, body)))
    counts["GMMA"] = sum(n for op, n in counts.items() if op.endswith("GMMA"))
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiles", type=json.loads, default={},
                        help="JSON overriding the Hopper default tiles")
    args = parser.parse_args()
    tiles = {**HOPPER_TILES, **args.tiles}
    if tiles["tma"]:
        parser.error("--tiles: tma is not profiled here (its descriptors are runtime arguments)")
    print(f"Triton {triton.__version__}, sm_90, [1, L, 40, 128], tiles {tiles}\n")
    print(f"| P·V | instructions / logit | {' | '.join(SHOWN)} | shared KiB |")
    print(f"|{'---|' * (len(SHOWN) + 3)}")
    for pv in ("fp8", "fp16"):
        kernel = compile_sm90(pv, tiles)
        threads = 32 * tiles["num_warps"]
        counts = key_loop(disassemble(kernel.asm["cubin"]), tiles["block_m"] * 128 // threads)
        logits = tiles["block_m"] * tiles["block_n"] / threads
        issued = sum(n for op, n in counts.items() if op != "GMMA")
        per = " | ".join(f"{counts[op] / logits:.2f}" for op in SHOWN)
        print(f"| {pv} | {issued / logits:.1f} | {per} | {kernel.metadata.shared / 1024:.0f} |")


if __name__ == "__main__":
    main()
