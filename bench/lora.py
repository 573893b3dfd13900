"""LoRA cost: applying a lightx2v-sized LoRA (rank 64 on every block Linear, with .diff_b / .diff
norm deltas) to a real-size Wan 14B DiT, merge vs runtime, and one eager forward of the base, the
runtime and the merged model.

Random bf16 weights, projections fused (as the loader node does), 832x480x81 frames = latent
[1, 16, 21, 60, 104] (L = 32,760 tokens), context [1, 512, 4096]. ``--fp8`` keeps the block
Linears in fp8 (per-tensor scale) as ``load_dit(keep_fp8=True)`` does. Median of ``--runs`` timed
forwards after two warm-ups; apply times are one call each (after one warm-up call).

    python bench/lora.py                 # CUDA, 14B bf16
    python bench/lora.py --fp8           # CUDA, 14B with fp8 block weights
    python bench/lora.py --tiny          # CPU smoke run at tiny size
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import save_file
import harness

from wanrt.wan_core.dit import DiTConfig, WanModel, init_random_
from wanrt.wan_core.lora import apply_lora, load_lora
from wanrt.wan_core.lora.keys import official_parameters

CONFIGS = {
    "14B": DiTConfig(dim=5120, ffn_dim=13824, num_heads=40, num_layers=40, in_dim=16, out_dim=16),
    "tiny": DiTConfig(dim=256, ffn_dim=512, num_heads=2, num_layers=2, in_dim=16, out_dim=16),
}
LATENT = {"14B": (21, 60, 104), "tiny": (3, 8, 12)}


def lightx2v_like(config: DiTConfig, rank: int) -> dict[str, torch.Tensor]:
    """Random rank-``rank`` pairs (+ alpha) on every block Linear, .diff_b on their biases."""
    out = {}
    g = torch.Generator().manual_seed(0)
    for name, shape in official_parameters(config).items():
        module, _, attr = name.rpartition(".")
        if not name.startswith("blocks."):
            continue
        if attr == "weight" and len(shape) == 2:
            stem = f"diffusion_model.{module}"
            out[f"{stem}.lora_down.weight"] = torch.randn(rank, shape[1], generator=g) * 0.01
            out[f"{stem}.lora_up.weight"] = torch.randn(shape[0], rank, generator=g) * 0.01
            out[f"{stem}.alpha"] = torch.tensor(float(rank))
        elif attr == "bias":
            out[f"diffusion_model.{module}.diff_b"] = torch.randn(shape, generator=g) * 1e-3
    return {k: v.to(torch.bfloat16) for k, v in out.items()}


@torch.no_grad()  # else each weight_scale holds an autograd graph with an fp32 copy of its weight
def to_fp8(model: WanModel) -> None:
    """Block Linear weights to fp8 e4m3 with a per-tensor scale (kept fp8, as keep_fp8=True)."""
    for name, module in model.named_modules():
        if name.startswith("blocks.") and isinstance(module, torch.nn.Linear):
            w = module.weight.float()
            scale = w.abs().max() / 448
            module.weight = torch.nn.Parameter((w / scale).to(torch.float8_e4m3fn),
                                               requires_grad=False)
            module.weight_scale = scale


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--fp8", action="store_true")
    parser.add_argument("--rank", type=int, default=64)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    print("\n".join(harness.settings(
        channels_last="not used (the DiT has no convolutions on its hot path)",
        arguments=vars(args))), flush=True)
    size = "tiny" if args.tiny else "14B"
    device = torch.device("cpu" if args.tiny else "cuda")
    dtype = torch.float32 if args.tiny else torch.bfloat16
    config = CONFIGS[size]

    with torch.device("meta"):
        model = WanModel(config, dtype=dtype)
    base = init_random_(model.to_empty(device=device), seed=0).eval().requires_grad_(False)
    if args.fp8:
        to_fp8(base)
    base.fuse_projections()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "lora.safetensors"
        save_file(lightx2v_like(config, args.rank), str(path))
        lora = load_lora(path)
    print(f"Wan {size}{' fp8' if args.fp8 else ''} on {device}, LoRA rank {args.rank}: "
          f"{sum(t.numel() for t in lora.tensors.values()) / 1e6:.0f} M LoRA values")

    f, h, w = LATENT[size]
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 16, f, h, w, generator=g).to(device)
    context = torch.randn(1, 512, 4096 if size == "14B" else config.text_dim, generator=g)
    context = context.to(device, dtype)
    t = torch.tensor([999.0], device=device)

    def apply(mode):
        sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
        apply_lora(base, lora, 1.0, mode=mode)  # warm-up
        sync()
        start = time.perf_counter()
        patched = apply_lora(base, lora, 1.0, mode=mode)
        sync()
        return patched, time.perf_counter() - start

    with torch.inference_mode():
        ms, peak, _ = harness.timed(lambda: base(x, t, context), args.runs, device)
        print(f"base     forward {ms:8.1f} ms  peak {peak} GiB")
        runtime, seconds = apply("runtime")
        ms_rt, peak, _ = harness.timed(lambda: runtime(x, t, context), args.runs, device)
        print(f"runtime  apply {seconds:6.2f} s  forward {ms_rt:8.1f} ms ({ms_rt / ms:.3f}x)  "
              f"peak {peak} GiB")
        del runtime
        merged, seconds = apply("merge")
        del base
        ms_m, peak, _ = harness.timed(lambda: merged(x, t, context), args.runs, device)
        print(f"merge    apply {seconds:6.2f} s  forward {ms_m:8.1f} ms ({ms_m / ms:.3f}x)  "
              f"peak {peak} GiB")


if __name__ == "__main__":
    main()
