"""What fits a capped GPU: Wan 14B / A14B / 1.3B T2V end to end under a memory cap, with block swap.

Real sizes on CUDA with random weights (the DiTs' block Linears fp8 e4m3 with per-tensor scales,
as ComfyUI's ``*_fp8_scaled`` files; UMT5-XXL encoder and Wan 2.1 VAE in bf16, as in
``bench/e2e.py``). The process is capped with ``torch.cuda.set_per_process_memory_fraction``.
Models are placed by ``wan_core.residency`` (text encoder and VAE on the GPU only for their
stage, the idle A14B expert parked in pinned CPU memory); eager (compile off).

1. Wan 2.1 14B T2V, 832x480x81, 4 UniPC steps, CFG 5: text encode, sampling, decode, for each
   block-swap count: per-stage peak GiB and per-step seconds (an out-of-memory is reported as
   the row's result, with the message the user would get).
2. Wan 2.2 A14B T2V, the same (expert switch mid-run; the high-noise expert is parked).
3. Wan 2.1 1.3B T2V (bf16) within 8 GiB: the text encoder on the CPU, ``low_vram`` (the DiT
   parked while the VAE decodes, as an 8 GiB card needs: DiT and untiled decode don't fit
   together).
4. fp8 GEMMs vs bf16, per 14B forward (uncapped: the bf16 14B weights alone are 26 GiB), with
   the relative L2 error of the output; eager, or compiled per block with ``--fp8-compile
   blocks`` (Inductor then fuses the activations' quantisation into the ops before each GEMM).

    python bench/memory.py [--cap 24] [--swaps 0,10,20,30,40] [--a14b-swaps 0,20,40]
                           [--steps 4] [--frames 81] [--skip-a14b] [--skip-1.3b] [--skip-fp8]
                           [--fp8-compile off|blocks] [--only-fp8]
    python bench/memory.py --tiny      # CPU smoke run: tiny models (2 blocks: 0 / 1 / 2 swapped),
                                       # fp32, no cap
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time

import torch

# bench/ last on the path: its kernels.py must not shadow PyPI's ``kernels``, which diffusers
# (imported by dit_eager) looks for.
sys.path.append(sys.path.pop(0))
from dit_eager import CONFIGS  # noqa: E402
from e2e import PROMPT, Stages, text_encoder, vae  # noqa: E402

import harness  # bench/ is on sys.path when run as a script
from wanrt.kernels import fp8_matmul_supported  # noqa: E402
from wanrt.kernels.fp8 import E4M3  # noqa: E402
from wanrt.wan_core.block_swap import enable_block_swap  # noqa: E402
from wanrt.wan_core.compile import compile_dit  # noqa: E402
from wanrt.wan_core.dit import WanModel  # noqa: E402
from wanrt.wan_core.dit.model import Linear  # noqa: E402
from wanrt.wan_core.pipelines import encode_prompts, latent_shape  # noqa: E402
from wanrt.wan_core.residency import Residency, StageOutOfMemoryError  # noqa: E402
from wanrt.wan_core.sampling import sample  # noqa: E402
from wanrt.wan_core.text_encoder import UMT5Config  # noqa: E402
from wanrt.wan_core.tiny.text_encoder import CONFIG as TINY_UMT5  # noqa: E402
from wanrt.wan_core.tiny.vae import TINY_VAE21  # noqa: E402
from wanrt.wan_core.vae import WAN21_VAE  # noqa: E402

GIB = 2**30


@torch.no_grad()
def random_dit(config, *, fp8: bool, device, seed: int = 0) -> WanModel:
    """A WanModel on the CPU with N(0, 0.02) weights (norm scales 1 + N, modulation
    N(0, 1/dim)), each block generated on ``device`` (fast) and moved off; block Linears fp8 with
    per-tensor scales when ``fp8``; projections fused."""
    with torch.device("meta"):
        model = WanModel(config, dtype=torch.bfloat16 if device.type == "cuda" else torch.float32)
    generator = torch.Generator(device=device).manual_seed(seed)
    for part in [*model.blocks, *(m for n, m in model.named_children() if n != "blocks")]:
        if part is None or not any(True for _ in part.parameters()):
            continue
        part.to_empty(device=device)
        for name, p in part.named_parameters():
            noise = torch.randn(p.shape, generator=generator, device=device)
            scale = (config.dim ** -0.5 if "modulation" in name else 0.02)
            p.copy_(1 + 0.02 * noise if "norm" in name and p.dim() == 1 else scale * noise)
        if fp8 and part in model.blocks:
            for linear in (m for m in part.modules() if isinstance(m, Linear)):
                w = linear.weight.data.float()
                linear.weight_scale = w.abs().amax() / torch.finfo(E4M3).max
                linear.weight.data = (w / linear.weight_scale).to(E4M3)
        part.to("cpu")
        if fp8 and part in model.blocks:
            for linear in (m for m in part.modules() if isinstance(m, Linear)):
                linear.weight_scale = linear.weight_scale.cpu()
    return model.eval().fuse_projections()


def t2v(name, residency, models, shape, steps, rows, *, low_noise=None):
    """One end-to-end T2V run; appends a result row (peaks per stage, step times)."""
    te, dit, decoder = models
    stages = Stages(residency.device)
    step_ends = []

    def step_done(*_):
        stages.sync()
        step_ends.append(time.perf_counter())
    try:
        with torch.no_grad():
            with stages("text"), residency.use(te, "text_encoder", "text encode"):
                context, negative = encode_prompts(te, PROMPT)
            device = residency.compute_device("dit")
            with stages("sampling"):
                start = time.perf_counter()
                latent = sample(dit, shape, context=context.to(device),
                                negative_context=negative.to(device), seed=0, steps=steps,
                                cfg=5.0, shift=5.0 if low_noise is None else 12.0,
                                low_noise_model=low_noise, cfg_low=4.0,
                                boundary=None if low_noise is None else 0.875,
                                callback=step_done, residency=residency)
            with stages("decode"), residency.use(decoder, "vae", "VAE decode"):
                decoder.decode(latent.to(residency.compute_device("vae")))
    except StageOutOfMemoryError as e:
        rows.append((name, "OOM: " + str(e).splitlines()[0][:110], "", "", "", ""))
        return
    finally:
        for model in (dit, low_noise):
            if model is not None:
                residency.park(model)
        if residency.device.type == "cuda":
            torch.cuda.empty_cache()
    peaks = {stage: peak for stage, _, peak in stages.rows}
    steps_s = [b - a for a, b in zip([start] + step_ends, step_ends)]
    rest = statistics.median(steps_s[1:]) if len(steps_s) > 1 else float("nan")
    rows.append((name, peaks["text"], peaks["sampling"], peaks["decode"], f"{steps_s[0]:.2f}",
                 f"{rest:.2f}"))


def print_rows(title, rows):
    print(f"\n{title}\n")
    print("| run | text encode peak GiB | sampling peak GiB | decode peak GiB | step 1 s | "
          "median step 2.. s |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


@torch.no_grad()
def fp8_vs_bf16(config, device, tokens_shape, mode="off"):
    """Median seconds of one forward with bf16 weights, fp8 weights dequantised per matmul, fp8
    GEMMs with per-row weight and activation scales, and with per-tensor ones (the weights
    requantised, as ComfyUI's ``*_fp8_scaled`` files and ``fp8_e4m3fn_fast``); relative L2 of
    each output against the bf16 one. Compile
    ``mode`` as ``compile_dit``'s (each weight change recompiles the blocks, in the warm-up)."""
    dit = random_dit(config, fp8=False, device=device, seed=3)
    dit = compile_dit(dit.to(device), mode)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, config.in_dim, *tokens_shape, generator=g).to(device)
    context = torch.randn(1, 512, config.text_dim, generator=g).to(device, dit.dtype)
    t = torch.tensor([500.0], device=device)
    stages = Stages(device)

    def timed(label):
        dit(x, t, context)  # warm-up
        runs = []
        for _ in range(2):
            with stages(label):
                out = dit(x, t, context)
            runs.append(stages.rows[-1][1])
        return statistics.median(runs), out

    bf16_s, reference = timed("bf16")
    for linear in (m for m in dit.blocks.modules() if isinstance(m, Linear)):
        w = linear.weight.data.float()
        scale = w.abs().amax(dim=1) / torch.finfo(E4M3).max  # per row, as fused fp8 files
        linear.weight.data = (w / scale[:, None]).to(E4M3)
        linear.weight_scale = scale
    dequant_s, dequant = timed("fp8 dequantise")
    dit.use_fp8_matmul("row")
    row_s, row_out = timed("fp8 GEMM, row")
    for linear in (m for m in dit.blocks.modules() if isinstance(m, Linear)):  # as *_fp8_scaled
        w = linear.weight.float() * linear.weight_scale[:, None]
        linear.weight_scale = w.abs().amax() / torch.finfo(E4M3).max
        linear.weight.data = (w / linear.weight_scale).to(E4M3)
    dit.use_fp8_matmul("tensor")
    tensor_s, tensor_out = timed("fp8 GEMM, tensor")
    has = fp8_matmul_supported(device.type, device.index)
    gemm = "fp8 _scaled_mm, activations per {}" if has else "dequantise (no fp8 GEMMs here)"
    print(f"\nfp8 vs bf16, one forward, compile {mode}\n")
    print("| weights | matmul | s / forward | rel. L2 vs bf16 |")
    print("|---|---|---|---|")
    print(f"| bf16 | bf16 | {bf16_s:.3f} | – |")
    for weights, matmul, seconds, out in (
            ("row scales", "dequantise to bf16", dequant_s, dequant),
            ("row scales", gemm.format("row"), row_s, row_out),
            ("tensor scale", gemm.format("tensor"), tensor_s, tensor_out)):
        print(f"| fp8 e4m3 ({weights}) | {matmul} | {seconds:.3f} | {rel_l2(out, reference):.4f} |")


def rel_l2(a, b) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


def cap(gib_: float | None) -> None:
    if gib_ is not None and torch.cuda.is_available():
        total = torch.cuda.get_device_properties(0).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, gib_ * GIB / total))
        print(f"\n## capped at {gib_:g} GiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="tiny models on CPU, fp32, no cap")
    parser.add_argument("--cap", type=float, default=24.0, help="GiB for the 14B / A14B runs")
    parser.add_argument("--swaps", default="0,10,20,30,40", help="block-swap counts, 14B")
    parser.add_argument("--a14b-swaps", default="0,20,40", help="block-swap counts, A14B")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--frames", type=int, help="default 81 (--tiny: 5)")
    parser.add_argument("--skip-a14b", action="store_true")
    parser.add_argument("--skip-1.3b", dest="skip_small", action="store_true")
    parser.add_argument("--skip-fp8", action="store_true")
    parser.add_argument("--fp8-compile", choices=["off", "blocks"], default="off",
                        help="compile mode of the fp8 vs bf16 forwards")
    parser.add_argument("--only-fp8", action="store_true", help="only the fp8 vs bf16 forwards")
    args = parser.parse_args()
    print("\n".join(harness.settings(
        channels_last="the VAE's conv weights on CUDA (the DiT and UMT5 have no convolutions)",
        arguments=vars(args))), flush=True)
    swaps = [int(n) for n in args.swaps.split(",") if n]
    a14b_swaps = [int(n) for n in args.a14b_swaps.split(",") if n]
    if args.tiny:
        device, width, height, frames = torch.device("cpu"), 96, 64, args.frames or 5
        big = small = dataclasses.replace(CONFIGS["tiny"], text_dim=TINY_UMT5.dim)
        umt5_cfg, vae_cfg, dtype, caps = TINY_UMT5, TINY_VAE21, torch.float32, (None, None)
        swaps = a14b_swaps = list(range(big.num_layers + 1))
        fp8_tokens = (2, 4, 4)
        print(f"device: CPU, torch {torch.__version__}")
    else:
        if not torch.cuda.is_available():
            parser.error("needs a CUDA GPU (or --tiny)")
        device, width, height, frames = torch.device("cuda"), 832, 480, args.frames or 81
        big, small, umt5_cfg, vae_cfg = CONFIGS["14B"], CONFIGS["1.3B"], UMT5Config(), WAN21_VAE
        dtype, caps, fp8_tokens = torch.bfloat16, (args.cap, 8.0), (21, 60, 104)
        print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}, "
              f"CUDA {torch.version.cuda}")
    if args.only_fp8:
        return fp8_vs_bf16(big, device, fp8_tokens, args.fp8_compile)
    start = time.perf_counter()
    te = text_encoder(umt5_cfg, dtype, device)
    decoder = vae(vae_cfg, dtype, device)
    dit = random_dit(big, fp8=True, device=device, seed=0)
    shape = latent_shape(decoder, batch=1, frames=frames, height=height, width=width)
    print(f"{width}x{height}, {frames} frames (latent {list(shape)}), {args.steps} UniPC steps, "
          f"CFG 5 (batch-2 forward), eager; built in {time.perf_counter() - start:.0f} s")

    cap(caps[0])
    residency = Residency(device)
    residency.register(te, "text_encoder")
    residency.register(decoder, "vae")
    residency.register(dit, "dit", "14B")
    rows = []
    for n in swaps:
        enable_block_swap(dit, n, device=device)
        t2v(f"14B fp8, {n} blocks swapped", residency, (te, dit, decoder), shape, args.steps,
            rows)
    print_rows(f"Wan 2.1 14B T2V fp8_scaled, cap {caps[0]} GiB", rows)

    if not args.skip_a14b:
        low = random_dit(big, fp8=True, device=device, seed=1)
        residency.register(low, "dit", "low-noise expert")
        rows = []
        for n in a14b_swaps:
            enable_block_swap(dit, n, device=device)
            enable_block_swap(low, n, device=device)
            t2v(f"A14B fp8, {n} blocks swapped per expert", residency, (te, dit, decoder), shape,
                args.steps, rows, low_noise=low)
        print_rows(f"Wan 2.2 A14B T2V fp8_scaled, cap {caps[0]} GiB (experts take turns)", rows)
        del low
    del dit

    if not args.skip_small:
        cap(caps[1])
        residency = Residency(device, on_cpu=("text_encoder",), low_vram=True)
        small_dit = random_dit(small, fp8=False, device=device, seed=2)
        residency.register(te, "text_encoder")
        residency.register(decoder, "vae")
        residency.register(small_dit, "dit", "1.3B")
        rows = []
        t2v("1.3B bf16, text encoder on the CPU, low_vram", residency,
            (te, small_dit, decoder), shape, args.steps, rows)
        print_rows(f"Wan 2.1 1.3B T2V, cap {caps[1]} GiB", rows)
        del small_dit

    if not args.skip_fp8:
        cap(None if args.tiny else 1e9)
        fp8_vs_bf16(big, device, fp8_tokens, args.fp8_compile)
    print(f"\ntotal {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
