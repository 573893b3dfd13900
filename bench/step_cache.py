"""Step caching, measured: DiT forwards saved, what they cost in fidelity, and the first step.

Wan 2.1 T2V 1.3B with random bf16 weights on CUDA (UMT5-XXL and the Wan 2.1 VAE too, as in
bench/e2e.py), 832x480, 81 frames, 50 UniPC steps, CFG 5 as one batch-2 forward, compile blocks.

1. First step, cold vs warm: two fresh processes build the DiT, compile it into one new
   ``persistent_compile_cache`` folder and time their first forward (batch 2, full size); the
   second process finds the first one's kernels on disk.
2. End to end: text encode once; sampling without a cache, then with each policy at its
   published default (``make_policy`` defaults: TeaCache 0.08, MagCache E0.12 K4 R0.2, EasyCache
   0.05, first-block 0.05); VAE decode once (it does not depend on the policy). Per run: sampling
   seconds, forwards run / skipped, speed-up, the final latent's relative L2 and PSNR against the
   uncached latent (PSNR over the uncached latent's value range), and the end-to-end total
   (encode + sampling + decode).
3. ``--sweep``: each policy also at half and twice its threshold (fidelity and forwards only).

The thresholds were tuned by their authors on the real weights; on random weights the fidelity
numbers only show that the mechanism works (TeaCache and first-block decisions follow the
weights; MagCache's follow its published table and so skip as many steps as on real weights).

    python bench/step_cache.py                         # H100: about 5-6 minutes
    python bench/step_cache.py --steps 20 --frames 41  # about 2 minutes
    python bench/step_cache.py --policies magcache,teacache --no-first-step
    python bench/step_cache.py --tiny                  # CPU smoke run (a test runs it)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import subprocess
import sys
import tempfile
import time

import torch
from dit_eager import CONFIGS, ours
from e2e import PROMPT, text_encoder, vae

import harness  # bench/ is on sys.path when run as a script
from wanrt.wan_core.compile import compile_dit, compile_summary, persistent_compile_cache
from wanrt.wan_core.pipelines import encode_prompts, latent_shape
from wanrt.wan_core.sampling import sample
from wanrt.wan_core.step_cache import POLICIES, StepCache, make_policy
from wanrt.wan_core.tiny.text_encoder import CONFIG as TINY_UMT5
from wanrt.wan_core.tiny.vae import TINY_VAE21
from wanrt.wan_core.text_encoder import UMT5Config
from wanrt.wan_core.vae import WAN21_VAE


def fidelity(latent: torch.Tensor, reference: torch.Tensor) -> tuple[float, float]:
    """(relative L2, PSNR in dB over the reference's value range) of ``latent``."""
    diff = (latent.double() - reference.double())
    rel = (diff.norm() / reference.double().norm()).item()
    rmse = diff.pow(2).mean().sqrt().item()
    span = (reference.max() - reference.min()).item()
    return rel, (math.inf if rmse == 0 else 20 * math.log10(span / rmse))


def first_step_child(args) -> None:
    """In a fresh process: build the DiT, compile it into ``args.cache_dir``, time one forward."""
    persistent_compile_cache(args.cache_dir)
    device, dtype = torch.device("cuda"), torch.bfloat16
    dit = compile_dit(ours(CONFIGS["1.3B"], dtype, device).fuse_projections(), args.compile)
    frames = (args.frames - 1) // 4 + 1
    x = torch.randn(2, 16, frames, args.height // 8, args.width // 8, device=device)
    context = torch.randn(2, 512, 4096, device=device, dtype=dtype)
    t = torch.full((2,), 999.0, device=device)
    with torch.no_grad():
        torch.cuda.synchronize()
        start = time.perf_counter()
        dit(x, t, context)
        torch.cuda.synchronize()
        first = time.perf_counter() - start
        start = time.perf_counter()
        dit(x, t, context)
        torch.cuda.synchronize()
    print(json.dumps({"first": first, "second": time.perf_counter() - start}))


def first_step(args, cache_dir: str) -> list[dict]:
    """Cold then warm: two child processes sharing the fresh ``cache_dir``."""
    cmd = [sys.executable, os.path.abspath(__file__), "--first-step-child", "--cache-dir",
           cache_dir, "--frames", str(args.frames), "--width", str(args.width), "--height",
           str(args.height), "--compile", args.compile]
    env = {k: v for k, v in os.environ.items() if k != "TORCHINDUCTOR_CACHE_DIR"}
    runs = []
    for label in ("cold", "warm"):
        start = time.perf_counter()
        out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
        runs.append({"run": label, "process": time.perf_counter() - start,
                     **json.loads(out.strip().splitlines()[-1])})
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="tiny models on CPU, fp32, compile off")
    parser.add_argument("--steps", type=int, help="default 50 (--tiny: 12)")
    parser.add_argument("--frames", type=int, default=81)
    parser.add_argument("--width", type=int, default=832)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--compile", choices=["off", "layers", "blocks"], default="blocks")
    parser.add_argument("--policies", default=",".join(POLICIES),
                        help=f"comma-separated, from {', '.join(POLICIES)}")
    parser.add_argument("--sweep", action="store_true",
                        help="also each policy at 0.5x and 2x its threshold")
    parser.add_argument("--first-step", action=argparse.BooleanOptionalAction, default=None,
                        help="measure the cold and warm first step (default: on, off with --tiny)")
    parser.add_argument("--cache-dir", help="compile cache folder (default: a fresh temp one)")
    parser.add_argument("--first-step-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    print("\n".join(harness.settings(
        channels_last="the VAE's conv weights on CUDA (the DiT and UMT5 have no convolutions)",
        arguments=vars(args))), flush=True)
    if args.first_step_child:
        return first_step_child(args)
    policies = [p for p in args.policies.split(",") if p]
    if unknown := set(policies) - set(POLICIES):
        parser.error(f"unknown policies {sorted(unknown)}; choose from {', '.join(POLICIES)}")

    if args.tiny:
        device, dtype, mode = torch.device("cpu"), torch.float32, "off"
        dit_cfg = dataclasses.replace(CONFIGS["tiny"], text_dim=TINY_UMT5.dim)
        umt5_cfg, vae_cfg, steps = TINY_UMT5, TINY_VAE21, args.steps or 12
        width, height, frames = 96, 64, 5
        print(f"device: CPU, torch {torch.__version__}")
    else:
        if not torch.cuda.is_available():
            parser.error("needs a CUDA GPU (or --tiny)")
        device, dtype, mode = torch.device("cuda"), torch.bfloat16, args.compile
        dit_cfg, umt5_cfg, vae_cfg = CONFIGS["1.3B"], UMT5Config(), WAN21_VAE
        steps, width, height, frames = args.steps or 50, args.width, args.height, args.frames
        print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}, "
              f"CUDA {torch.version.cuda}")
    print(compile_summary(mode))

    cache_dir = args.cache_dir or tempfile.mkdtemp(prefix="wanrt-inductor-")
    if args.first_step is None:
        args.first_step = not args.tiny
    if args.first_step:
        if args.tiny:
            parser.error("--first-step needs CUDA")
        print(f"\nfirst step (batch-2 forward, {width}x{height}x{frames}), fresh processes, "
              f"compile cache {cache_dir}:")
        print("| process | first forward s | second forward s | process wall s |")
        print("|---|---|---|---|")
        for r in first_step(args, cache_dir):
            print(f"| {r['run']} | {r['first']:.2f} | {r['second']:.3f} | {r['process']:.1f} |")
    persistent_compile_cache(cache_dir)

    start = time.perf_counter()
    dit = compile_dit(ours(dit_cfg, dtype, device).fuse_projections(), mode)
    encoder = text_encoder(umt5_cfg, dtype, device)
    decoder = vae(vae_cfg, dtype, device)
    shape = latent_shape(decoder, batch=1, frames=frames, height=height, width=width)
    build = time.perf_counter() - start
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    print(f"\n{width}x{height}, {frames} frames (latent {list(shape)}), {steps} UniPC steps, "
          f"CFG 5 batch-2, {dtype}; models built in {build:.1f} s")

    def timed(fn):
        sync()
        begin = time.perf_counter()
        out = fn()
        sync()
        return out, time.perf_counter() - begin

    with torch.no_grad():
        (context, negative), encode_s = timed(lambda: encode_prompts(encoder, PROMPT,
                                                                     task="t2v-1.3B"))
        del encoder
        if device.type == "cuda":
            torch.cuda.empty_cache()

        step_ends = []

        def run(cache):
            step_ends.clear()
            return timed(lambda: sample(
                dit, shape, context=context, negative_context=negative, seed=0, steps=steps,
                cfg=5.0, shift=5.0, step_cache=cache,
                callback=lambda *_: (sync(), step_ends.append(time.perf_counter()))))

        sample_start = time.perf_counter()
        run(None)  # compiles: the timed runs below are all warm
        first_s = step_ends[0] - sample_start
        reference, base_s = run(None)
        _, decode_s = timed(lambda: decoder.decode(reference, tiled=False))

        rows = [("no cache", None, 2 * steps, 0, base_s)]
        settings = [(name, None) for name in policies]
        if args.sweep:
            for name in policies:
                default = make_policy(name, constants="t2v-1.3B").threshold
                settings += [(name, default * f) for f in (0.5, 2.0)]
        for name, threshold in settings:  # the 1.3B constants, also for the tiny stand-in
            policy = make_policy(name, threshold=threshold, constants="t2v-1.3B")
            cache = StepCache(policy)
            latent, seconds = run(cache)
            counts = cache.counts["model"]
            rows.append((policy.describe(), fidelity(latent, reference), counts["run"],
                         counts["skipped"], seconds))

    print(f"\ntext encode {encode_s:.2f} s, VAE decode {decode_s:.2f} s, first sampling step of "
          f"the uncached run {first_s:.2f} s (compile cache warm from the processes above"
          f"{'' if args.first_step else ': not measured'})\n")
    print("| run | forwards run | skipped | sampling s | speed-up | latent rel L2 | PSNR dB "
          "| end to end s |")
    print("|---|---|---|---|---|---|---|---|")
    for label, quality, ran, skipped, seconds in rows:
        rel, psnr = quality or (0.0, math.inf)
        print(f"| {label} | {ran} | {skipped} | {seconds:.2f} | {base_s / seconds:.2f}x | "
              f"{rel:.4f} | {psnr:.1f} | {encode_s + seconds + decode_s:.2f} |")


if __name__ == "__main__":
    main()
