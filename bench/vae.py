"""Wan 2.1 VAE: WanRT vs diffusers ``AutoencoderKLWan`` (same random bf16 weights, one process).

Real size (dim 96, z 16): decode of 21 latent frames → 81 frames at 832×480, untiled and tiled
(WanRT default tiles; diffusers ``enable_tiling()`` defaults, 256 px tiles, stride 192), and
encode of the 81-frame video. ``--tiny`` runs the tiny test config on CPU in fp32.

    python bench/vae.py [--tiny] [--iters 5]

Prints a markdown table: median ms, peak GiB allocated above the weights and input, and the max
|difference| against diffusers untiled (and, for tiled rows, against the same side untiled).
"""

from __future__ import annotations

import argparse

import torch
import harness  # bench/ is on sys.path when run as a script

from wanrt.wan_core.tiny.vae import TINY_VAE21, diffusers_config
from wanrt.wan_core.vae import WAN21_VAE, WanVAE
from wanrt.wan_core.vae.loader import diffusers_name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="tiny config on CPU, fp32")
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--diffusers-cudnn-benchmark", action="store_true",
                        help="also let diffusers use cudnn.benchmark (off by default, as users get it; "
                             "WanRT turns it on inside its own calls)")
    parser.add_argument("--no-cudnn-benchmark", action="store_true",
                        help="WanRT without cudnn.benchmark (if its conv workspaces inflate the peak)")
    args = parser.parse_args()
    print("\n".join(harness.settings(
        channels_last="WanRT's VAE conv weights on CUDA; diffusers' VAE as it loads",
        arguments=vars(args))), flush=True)
    config = TINY_VAE21 if args.tiny else WAN21_VAE
    device = torch.device("cpu" if args.tiny else "cuda")
    dtype = torch.float32 if args.tiny else torch.bfloat16
    frames, height, width = (5, 32, 48) if args.tiny else (81, 480, 832)
    tiles = dict(tile_size=24, tile_overlap=8) if args.tiny else {}

    from diffusers import AutoencoderKLWan

    torch.manual_seed(0)
    cfg = {k: v for k, v in diffusers_config(config).items() if not k.startswith("_")}
    with torch.device(device):
        ref = AutoencoderKLWan(**cfg).to(dtype).eval().requires_grad_(False)
    with torch.device("meta"):
        ours = WanVAE(config)
    official = {diffusers_name(k): k for k in ours.state_dict()}
    ours.load_state_dict({official[k]: v for k, v in ref.state_dict().items()}, assign=True)
    ours.eval().requires_grad_(False)
    ours.cudnn_benchmark = not args.no_cudnn_benchmark
    if device.type == "cuda":
        ours.use_channels_last()
        torch.backends.cudnn.benchmark = args.diffusers_cudnn_benchmark

    s, t_lat = config.spatial_compression, (frames - 1) // 4 + 1
    latents = torch.randn(1, config.z_dim, t_lat, height // s, width // s, device=device)
    mean = torch.tensor(cfg["latents_mean"], device=device).view(1, -1, 1, 1, 1)
    std = torch.tensor(cfg["latents_std"], device=device).view(1, -1, 1, 1, 1)
    raw = (latents * std + mean).to(dtype)  # what diffusers' decode takes (un-normalised)
    video = torch.rand(1, 3, frames, height, width, device=device, dtype=dtype) * 2 - 1

    def diffusers_decode(tiled: bool):
        ref.enable_tiling() if tiled else ref.disable_tiling()
        return ref.decode(raw).sample

    def diffusers_encode(tiled: bool):
        ref.enable_tiling() if tiled else ref.disable_tiling()
        return ref.encode(video).latent_dist.mode()

    rows = []
    with torch.no_grad():
        ref_ms, ref_peak, ref_out = harness.timed(lambda: diffusers_decode(False), args.iters, device)
        ref_ms_t, ref_peak_t, ref_out_t = harness.timed(lambda: diffusers_decode(True), args.iters, device)
        ms, peak, out = harness.timed(lambda: ours.decode(latents), args.iters, device)
        ms_t, peak_t, out_t = harness.timed(lambda: ours.decode(latents, tiled=True, **tiles), args.iters, device)

        def diff(a, b):
            return f"{(a.float() - b.float()).abs().max().item():.3g}"

        rows += [
            ("decode", "WanRT", ms, peak, f"{ref_ms / ms:.2f}x", diff(out, ref_out)),
            ("decode", "diffusers", ref_ms, ref_peak, "1.00x", "–"),
            ("decode tiled", "WanRT", ms_t, peak_t, f"{ref_ms / ms_t:.2f}x",
             f"{diff(out_t, ref_out)} ({diff(out_t, out)} vs untiled)"),
            ("decode tiled", "diffusers", ref_ms_t, ref_peak_t, f"{ref_ms / ref_ms_t:.2f}x",
             f"{diff(ref_out_t, ref_out)} vs untiled"),
        ]
        del out, out_t, ref_out, ref_out_t
        ref_ms, ref_peak, ref_mu = harness.timed(lambda: diffusers_encode(False), args.iters, device)
        ms, peak, mu = harness.timed(lambda: ours.encode(video), args.iters, device)
        ms_t, peak_t, mu_t = harness.timed(lambda: ours.encode(video, tiled=True, **tiles), args.iters, device)
        ref_latents = (ref_mu.float() - mean) / std
        rows += [
            ("encode", "WanRT", ms, peak, f"{ref_ms / ms:.2f}x", diff(mu, ref_latents)),
            ("encode", "diffusers", ref_ms, ref_peak, "1.00x", "–"),
            ("encode tiled", "WanRT", ms_t, peak_t, f"{ref_ms / ms_t:.2f}x",
             f"{diff(mu_t, ref_latents)} ({diff(mu_t, mu)} vs untiled)"),
        ]

    name = torch.cuda.get_device_name() if device.type == "cuda" else "CPU"
    print(f"Wan 2.1 VAE (dim {config.dim}), {dtype}, {frames} frames {width}x{height} "
          f"({t_lat} latent frames), batch 1, {name}, median of {args.iters}; random weights; "
          f"cudnn.benchmark: diffusers {torch.backends.cudnn.benchmark}, WanRT {ours.cudnn_benchmark}\n")
    print("| op | implementation | ms | peak GiB | speed-up vs diffusers untiled | max abs diff vs diffusers untiled |")
    print("|---|---|---|---|---|---|")
    for op, impl, ms, peak, speedup, d in rows:
        print(f"| {op} | {impl} | {ms:.1f} | {peak} | {speedup} | {d} |")


if __name__ == "__main__":
    main()
