"""8-bit attention: the sage8 kernel against cuDNN SDPA (and PyPI's ``sageattention`` 1.0.6 when
importable) at Wan shapes, then the DiT forward with sage8 against diffusers' regional compile,
all in one process, the accuracy beside every number.

Kernel rows: q, k, v ``[1, L, H, 128]`` bf16 with (L, H) = (32760, 12) (1.3B at 832x480x81),
(32760, 40) (14B) and (75600, 40) (14B at 1280x720x81); K carries a per-channel offset 8x its
spread, as DiT keys do. TFLOP/s counts ``4·B·H·L²·D``. Accuracy: cosine and rel. L2 against fp32
attention (torch SDPA in fp32) on the first ``--ref-heads`` heads. The ``quantise`` row times
sage8's quantisation passes alone (part of every sage8 row).

DiT rows (Wan 2.1 1.3B / 14B, random bf16 weights, latent [1, 16, 21, 60, 104] = 32,760 tokens,
context [1, 512, 4096], t = 999): diffusers ``WanTransformer3DModel`` with
``compile_repeated_blocks(fullgraph=True)`` and ours with compile mode ``blocks``, attention
``auto`` (dense) and each of ``--dit-backends``; one model on the GPU at a time (diffusers holds
our tensors, not a copy). First call cold (Inductor and Triton caches are fresh folders, set
before torch is imported) and warm (recompiled after ``torch._dynamo.reset()`` from those
caches); then the median of ``--runs``. Accuracy: the velocity against ours dense.

    python bench/attention.py                        # all of it (~7 min on an H100)
    python bench/attention.py --skip-dit             # kernel rows only (~1.5 min)
    python bench/attention.py --skip-kernel --models 1.3B --no-warm
    python bench/attention.py --skip-dit --sweep     # + the kernel's tiles at [1, 32760, 40, 128]
    python bench/attention.py --tiny                 # CPU smoke run (interpreted Triton)
"""

from __future__ import annotations

import argparse
import json
import os
import traceback

import harness  # bench/ is on sys.path when run as a script

KERNEL_SHAPES = [(1, 32760, 12, 128), (1, 32760, 40, 128), (1, 75600, 40, 128)]
TINY_SHAPES = [(1, 130, 2, 64)]
SWEEP = dict(block_m=(128,), block_n=(64, 128), num_warps=(4, 8), num_stages=(2, 3, 4),
             warp_specialize=(False,), tma=(False,), exp2=("mufu",), fp8_promote=(True,))
TINY_SWEEP = dict(block_m=(64,), block_n=(64,), num_warps=(4,), num_stages=(1,),
                  warp_specialize=(False,), tma=(False, True), exp2=("mufu", "split"),
                  fp8_promote=(True,))


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--skip-kernel", action="store_true", help="no kernel rows")
    p.add_argument("--skip-dit", action="store_true", help="no DiT rows")
    p.add_argument("--sweep", action="store_true", help="time the kernel's tiles")
    p.add_argument("--sweep-shape", default="1,32760,40,128", help="B,L,H,D of the sweep")
    p.add_argument("--sweep-grid", type=json.loads, default={},
                   help='JSON overriding sweep axes, e.g. \'{"block_m": [128, 256]}\'')
    p.add_argument("--models", default="1.3B,14B", help="DiT models: 1.3B, 14B")
    p.add_argument("--dit-backends", default="sage8,sage8-fp16",
                   help="attention backends of ours besides auto (comma-separated)")
    p.add_argument("--dense-first-blocks", type=int, default=0,
                   help="sage8 DiT rows: the first N blocks stay dense")
    p.add_argument("--runs", type=int, default=5, help="timed calls per row")
    p.add_argument("--ref-heads", type=int, default=4, help="heads compared against fp32")
    p.add_argument("--no-warm", action="store_true", help="skip the warm first calls")
    p.add_argument("--backend", default=None, help="torch.compile backend (default inductor; "
                                                     "eager with --tiny)")
    p.add_argument("--budget-s", type=float, default=470, help="skip rows past this many seconds")
    p.add_argument("--tiny", action="store_true", help="CPU smoke run: tiny shapes, interpreter")
    return p.parse_args()


def main() -> None:
    args = parse_args()
    if args.tiny:
        os.environ.setdefault("TRITON_INTERPRET", "1")
    cache = harness.use_fresh_caches()  # before torch is imported: cold first calls

    import torch

    from wanrt import kernels
    from wanrt.kernels import triton_ops

    device = torch.device("cpu" if args.tiny else "cuda")
    args.backend = args.backend or ("eager" if args.tiny else "inductor")
    tiles = {d: triton_ops.attention_tiles(d, device) for d in (64, 128)}
    pv = "fp8" if kernels.fp8_dot_supported(device.type) else "fp16"
    print("\n".join(harness.settings(
        channels_last="not used (attention only; the DiT has no convolutions on its hot path)",
        caches=f"fresh under {cache} (cold first calls)",
        sage8_tiles_by_head_dim=tiles, sage8_default_pv=pv,
        dense_attention="auto (" + ("sdpa-cudnn on Hopper" if device.type == "cuda" else "sdpa") + ")",
        compile_backend=args.backend)), flush=True)
    deadline = harness.Deadline(args.budget_s)
    if not args.skip_kernel:
        kernel_rows(args, device, deadline)
    if args.sweep:
        sweep(args, device, deadline)
    if not args.skip_dit:
        dit_rows(args, device, deadline)


# ---------------------------------------------------------------------------------------------
# Kernel

def qkv(shape, device, dtype, seed=0):
    import torch
    b, seq, h, d = shape
    g = torch.Generator(device=device).manual_seed(seed)
    q = torch.randn(shape, generator=g, device=device, dtype=dtype)
    k = torch.randn(shape, generator=g, device=device) + 8 * torch.randn(h, d, generator=g,
                                                                         device=device)
    v = torch.randn(shape, generator=g, device=device, dtype=dtype)
    return q, k.to(dtype), v


def fp32_attention(q, k, v):
    """fp32 SDPA (memory-efficient kernel on CUDA: no L x L matrix), ``[B, L, H, D]``."""
    import torch
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel
    kernel = SDPBackend.EFFICIENT_ATTENTION if q.is_cuda else SDPBackend.MATH
    with sdpa_kernel(kernel):
        out = F.scaled_dot_product_attention(*(t.float().transpose(1, 2) for t in (q, k, v)))
    return out.transpose(1, 2).to(torch.float32)


def attention_impls(device):
    """``{row name: fn(q, k, v) or a reason it cannot run}``."""
    import torch

    from wanrt import kernels
    from wanrt.kernels import triton_ops
    from wanrt.wan_core.attention import BACKENDS

    impl = ({"cuDNN SDPA bf16": BACKENDS["sdpa-cudnn"]} if device.type == "cuda"
            else {"SDPA bf16": BACKENDS["sdpa"]})
    for pv in ("fp8", "fp16"):
        if pv == "fp8" and not (kernels.fp8_dot_supported(device.type) or device.type == "cpu"):
            impl[f"sage8 {pv} P·V"] = "no fp8 dots on this GPU (sm89+)"
        else:
            impl[f"sage8 {pv} P·V"] = (lambda q, k, v, pv=pv:
                                       triton_ops.sage8_attention(q, k, v, pv=pv))

    def quantise(q, k, v):
        triton_ops.quantize_int8_blocks(q, 128)
        triton_ops.quantize_int8_blocks(k, 64, mean=k.mean(dim=1, dtype=torch.float32))
        return triton_ops.quantize_v_fp8(v, pad_to=128)[0]

    impl["quantise (Q, K int8 + V fp8)"] = quantise
    try:
        from importlib.metadata import version

        from sageattention import sageattn
        impl[f"sageattention {version('sageattention')}"] = (
            lambda q, k, v: sageattn(q, k, v, tensor_layout="NHD", is_causal=False))
    except Exception as e:  # noqa: BLE001 - absent or broken: say so in the table
        impl["sageattention 1.0.6"] = f"not importable ({type(e).__name__}: {e})"[:120]
    return impl


def kernel_rows(args, device, deadline) -> None:
    import torch

    print("\n| shape [B, L, H, D] | implementation | first call s | median ms | TFLOP/s | "
          "vs cuDNN | cosine | rel. L2 |\n|---|---|---|---|---|---|---|---|", flush=True)
    runs = 1 if args.tiny else args.runs
    for shape in TINY_SHAPES if args.tiny else KERNEL_SHAPES:
        b, seq, h, d = shape
        flops = 4 * b * h * seq * seq * d
        q, k, v = qkv(shape, device, torch.bfloat16)
        heads = slice(0, min(args.ref_heads, h))
        ref = fp32_attention(q[:, :, heads], k[:, :, heads], v[:, :, heads])
        cudnn_ms = None
        for name, fn in attention_impls(device).items():
            if isinstance(fn, str) or not deadline.ok():
                print(f"| {list(shape)} | {name} | – | – | – | – | – | "
                      f"{fn if isinstance(fn, str) else 'skipped: budget'} |", flush=True)
                continue
            try:
                first_s, _ = harness.first_call(lambda: fn(q, k, v), device)
                ms, _, out = harness.timed(lambda: fn(q, k, v), runs, device,
                                           warmup=0 if args.tiny else 1)
            except Exception as e:  # noqa: BLE001 - one failing row must not end the run
                print(f"| {list(shape)} | {name} | error: {type(e).__name__}: "
                      f"{str(e).splitlines()[0][:120]} |", flush=True)
                continue
            cudnn_ms = cudnn_ms or ms
            if name.startswith("quantise"):  # a part of the sage8 call, not an attention
                print(f"| {list(shape)} | {name} | {first_s:.2f} | {ms:.2f} | – | – | – | – |",
                      flush=True)
                continue
            cosine, rel = harness.accuracy(out[:, :, heads], ref)
            print(f"| {list(shape)} | {name} | {first_s:.2f} | {ms:.2f} | "
                  f"{flops / ms / 1e9:.0f} | {cudnn_ms / ms:.2f}x | {cosine:.6f} | {rel:.2e} |",
                  flush=True)
        del q, k, v, ref
        harness.free(device)


def sweep(args, device, deadline) -> None:
    """Time every tile combination of the sage8 kernel at one shape, both P·V types; the
    current default (``triton_ops.attention_tiles``) is marked."""
    import itertools

    import torch

    from wanrt import kernels
    from wanrt.kernels import triton_ops

    shape = (1, 200, 2, 64) if args.tiny else tuple(int(n) for n in args.sweep_shape.split(","))
    q, k, v = qkv(shape, device, torch.bfloat16)
    flops = 4 * shape[0] * shape[2] * shape[1] ** 2 * shape[3]
    default = triton_ops.attention_tiles(shape[3], device)
    grid = dict(TINY_SWEEP if args.tiny else SWEEP)
    if device.type == "cuda" and torch.cuda.get_device_capability()[0] >= 9:
        grid["warp_specialize"] = (False, True)  # Triton's automatic warp specialisation
        grid["tma"] = (False, True)  # tiles through Hopper's tensor memory accelerator
    grid.update(args.sweep_grid)
    heads = slice(0, min(args.ref_heads, shape[2]))
    ref = fp32_attention(q[:, :, heads], k[:, :, heads], v[:, :, heads])
    print(f"\n### sage8 tile sweep at {list(shape)} (default {default})\n\n"
          f"| P·V | {' | '.join(grid)} | median ms | TFLOP/s | cosine | rel. L2 |\n"
          f"|{'---|' * (len(grid) + 5)}", flush=True)
    pvs = ["fp16", "fp8"] if kernels.fp8_dot_supported(device.type) or args.tiny else ["fp16"]
    for pv in pvs:  # fp16 first: the variant within the accuracy bar
        for values in itertools.product(*grid.values()):
            t = dict(zip(grid, values))
            if pv == "fp16" and t["fp8_promote"] != default["fp8_promote"]:
                continue  # an fp8 P·V option: the fp16 kernel ignores it
            if not deadline.ok():
                print("| skipped: budget |")
                return
            row = f"| {pv}{' (default)' if t == default else ''} | {' | '.join(map(str, values))}"
            try:
                ms, _, out = harness.timed(
                    lambda: triton_ops.sage8_attention(q, k, v, pv=pv, **t),
                    1 if args.tiny else 5, device, warmup=0 if args.tiny else 1)
                cosine, rel = harness.accuracy(out[:, :, heads], ref)
                print(f"{row} | {ms:.2f} | {flops / ms / 1e9:.0f} | {cosine:.6f} | {rel:.2e} |",
                      flush=True)
            except Exception as e:  # noqa: BLE001 - e.g. out of shared memory
                print(f"{row} | error: {type(e).__name__}: {str(e).splitlines()[0][:80]} | | | |",
                      flush=True)
    del q, k, v
    harness.free(device)


# ---------------------------------------------------------------------------------------------
# DiT forward

def dit_rows(args, device, deadline) -> None:
    import torch
    from dit_eager import CONFIGS, diffusers_like  # bench/ is on sys.path

    from wanrt.wan_core.dit import WanModel, init_random_
    from wanrt.wan_core.runtime import AttentionOptions, CompileOptions, RuntimeOptions, apply

    dtype = torch.bfloat16
    latent = (3, 8, 12) if args.tiny else (21, 60, 104)
    text = 8 if args.tiny else 512
    print("\n| model | implementation | cold first call s | warm first call s | median ms | "
          "vs diffusers | cosine | rel. L2 vs ours dense |\n|---|---|---|---|---|---|---|---|",
          flush=True)
    for name in ["tiny"] if args.tiny else args.models.split(","):
        config = CONFIGS[name]
        g = torch.Generator().manual_seed(0)
        x = torch.randn(1, config.in_dim, *latent, generator=g).to(device, dtype)
        context = torch.randn(1, text, config.text_dim, generator=g).to(device, dtype)
        t = torch.tensor([999.0], device=device)

        def ours(backend="auto", fuse=True):
            with torch.device("meta"):
                model = WanModel(config, dtype=dtype)
            model = init_random_(model.to_empty(device=device), seed=0).eval().requires_grad_(False)
            if not fuse:
                return model
            plan = AttentionOptions(backend=backend, dense_first_blocks=args.dense_first_blocks
                                    if backend != "auto" else 0)
            return apply(model.fuse_projections(), RuntimeOptions.from_env(
                attention=plan, compile=CompileOptions("blocks", backend=args.backend)))

        def diffusers():
            model = ours(fuse=False)  # official names; diffusers takes over its tensors
            ref = diffusers_like(model, dtype, device)
            del model
            ref.compile_repeated_blocks(fullgraph=True, backend=args.backend)
            return ref, lambda: ref(x, t, context, return_dict=False)[0].float()

        def ours_row(backend):
            def build():
                model = ours(backend)
                return model, lambda: model(x, t, context)
            return build

        rows = [("ours blocks auto (dense)", ours_row("auto")),
                ("diffusers compile_repeated_blocks", diffusers)]
        rows += [(f"ours blocks {b}", ours_row(b)) for b in args.dit_backends.split(",") if b]
        results = []  # (label, cold s, warm, median ms, output)
        for label, build in rows:
            if not deadline.ok():
                results.append((label, None, "skipped: budget", None, None))
                continue
            print(f"{name}: {label} ...", flush=True)
            try:
                torch._dynamo.reset()
                model, fn = build()
                with torch.no_grad():
                    cold_s, _ = harness.first_call(fn, device)
                    warm = "–"
                    if not args.no_warm:
                        torch._dynamo.reset()
                        warm = f"{harness.first_call(fn, device)[0]:.1f}"
                    ms, _, out = harness.timed(fn, 1 if args.tiny else args.runs, device,
                                               warmup=0 if args.tiny else 1)
                results.append((label, cold_s, warm, ms, out.float().cpu()))
            except Exception as e:  # noqa: BLE001 - one failing row must not end the run
                note = f"error: {type(e).__name__}: {str(e).strip().splitlines()[0][:160]}"
                results.append((label, None, note, None, None))
                print("".join(traceback.format_exc().splitlines(True)[-8:]), flush=True)
            model = fn = out = None
            torch._dynamo.reset()
            harness.free(device)
        dense = results[0][4]
        base_ms = results[1][3]
        for label, cold_s, warm, ms, out in results:
            if ms is None:
                print(f"| {name} | {label} | {warm} |")
                continue
            quality = ("{:.6f} | {:.2e}".format(*harness.accuracy(out, dense))
                       if dense is not None else "– | –")
            ratio = f"{ms / base_ms:.3f}" if base_ms else "–"
            print(f"| {name} | {label} | {cold_s:.1f} | {warm} | {ms:.1f} | {ratio} | {quality} |",
                  flush=True)


if __name__ == "__main__":
    main()
