"""Several GPUs: the time of one guided sampling step (cond + uncond DiT forwards, CFG combined)
on 1 GPU and in each ``--parallel`` mode, and the speed-up, under torchrun.

Real-size DiT with random bf16 weights (the same on every rank), compiled per block, Wan's
default CFG, 14B at 1280x720x81 and 1.3B at 832x480x81 (75,600 and 32,760 tokens). The 1-GPU
row runs on every rank at once, each GPU alone (no collectives), so it is measured on the same
GPUs in the same run. Each mode then builds its groups, loads the model into them and times
``--runs`` steps after a warm-up (compile) step; cold first steps are printed too.

    torchrun --nproc-per-node 8 bench/parallel.py --models 14B --modes cfg+ulysses,cfg+ring
    torchrun --nproc-per-node 2 bench/parallel.py --modes cfg,ulysses,ring
    torchrun --nproc-per-node 2 bench/parallel.py --tiny          # CPU gloo smoke run (a test)
"""

from __future__ import annotations

import argparse
import os
import sys

import torch
import torch.distributed as dist
from dit_eager import CONFIGS, ours
import harness

from wanrt.wan_core import parallel
from wanrt.wan_core.compile import compile_dit

SIZES = {"14B": (1280, 720, 81), "1.3B": (832, 480, 81), "tiny": (48, 32, 9)}
CFG = 5.0


def step_fn(model, device, dtype, size, split: bool = True):
    """One guided step at ``size`` (width, height, frames): ``v_u + g (v_c - v_u)``; the two
    passes over the cfg group where ``split``."""
    width, height, frames = size
    generator = torch.Generator("cpu").manual_seed(0)
    x = torch.randn(1, 16, (frames - 1) // 4 + 1, height // 8, width // 8, generator=generator)
    context, negative = torch.randn(2, 1, 512, 4096, generator=generator).to(device, dtype)
    if model.config.text_dim != 4096:  # tiny
        context, negative = context[..., :model.config.text_dim], negative[..., :model.config.text_dim]
    x, t = x.to(device), torch.full((1,), 900.0, device=device)

    def step():
        passes = [lambda: model(x, t, context), lambda: model(x, t, negative)]
        v_c, v_u = parallel.guidance_passes(passes) if split else [p() for p in passes]
        return v_u + CFG * (v_c - v_u)
    return step


def measured(step, runs: int, device) -> tuple[float, float]:
    """(first call s, median ms of ``runs`` more) of ``step``, every rank starting each together."""
    def together():
        if dist.is_initialized():
            dist.barrier()
        with torch.no_grad():
            return step()
    first, _ = harness.first_call(together, device)
    ms, _, _ = harness.timed(together, runs, device, warmup=0)
    return first, ms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="14B,1.3B")
    parser.add_argument("--modes", default=None, help="default: every mode this many GPUs run")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--compile", default="blocks", choices=("off", "blocks"))
    parser.add_argument("--tiny", action="store_true", help="tiny model on CPU, fp32, compile off")
    args = parser.parse_args()
    if int(os.environ.get("RANK", 0)) == 0:
        print("\n".join(harness.settings(
            channels_last="not used (the DiT has no convolutions on its hot path)",
            arguments=vars(args))), flush=True)
    world = int(os.environ.get("WORLD_SIZE", 1))
    if args.tiny:
        args.models, args.compile = "tiny", "off"
    modes = (args.modes.split(",") if args.modes else
             [m for m in parallel.MODES if _fits(m, world)])
    rows = []
    for name in args.models.split(","):
        config = CONFIGS[name]
        mesh = parallel.init(modes[0])  # joins the process group; the device of this rank
        device = mesh.device
        dtype = torch.float32 if args.tiny else torch.bfloat16
        model = compile_dit(ours(config, dtype, device).fuse_projections(), args.compile)
        first, single = measured(step_fn(model, device, dtype, SIZES[name], split=False), args.runs,
                              device)
        rows.append((name, "1 GPU", first, single, 1.0))
        for mode in modes:
            mesh = parallel.init(mode)
            try:
                mesh.layout.check_heads(config.num_heads)
            except parallel.ParallelConfigError as e:
                rows.append((name, mode, None, None, str(e).split(";")[0]))
                continue
            del model
            torch._dynamo.reset()
            model = compile_dit(ours(config, dtype, device).fuse_projections(), args.compile)
            model.set_sequence_parallel(mesh.sequence_parallel)
            first, ms = measured(step_fn(model, device, dtype, SIZES[name]), args.runs, device)
            rows.append((name, mode, first, ms, single / ms))
        del model
    if parallel.is_writer():
        print(f"torch {torch.__version__}; {world} processes; "
              f"{torch.cuda.get_device_name() if device.type == 'cuda' else 'CPU'}; "
              f"compile {args.compile}; CFG {CFG} (cond + uncond per step)")
        print("| model | mode | first step s | step ms | speed-up vs 1 GPU |\n|---|---|---|---|---|")
        for name, mode, first, ms, speedup in rows:
            if ms is None:
                print(f"| {name} | {mode} | – | – | cannot run: {speedup} |")
            else:
                print(f"| {name} | {mode} | {first:.1f} | {ms:.1f} | {speedup:.2f}× |")
    parallel.shutdown()


def _fits(mode: str, world: int) -> bool:
    try:
        parallel.Layout.parse(mode, world)
        return True
    except parallel.ParallelConfigError:
        return False


if __name__ == "__main__":
    sys.exit(main())
