"""End-to-end Wan generation, timed stage by stage.

Real sizes on CUDA with random weights: UMT5-XXL encoder (5.7 B params, the tiny SentencePiece
tokenizer stands in for the real one) and the Wan 2.1 VAE, all built on the GPU, with

- ``--model t2v-1.3B`` (default): DiT 1.3B bf16, 832x480, 81 frames, 50 UniPC steps, CFG 5
  (cond + uncond as one batch-2 forward);
- ``--model a14b-4step``: Wan 2.2 A14B T2V as the 4-step distill-LoRA workflows run it: both 14B
  experts with fp8 e4m3 block weights (per-tensor scales, kept fp8 as fp8_scaled files load),
  a lightx2v-sized rank-64 LoRA merged into each, CFG 1, 4 Euler steps split at the 0.875
  boundary, shift 5, 832x480, 81 frames,

then VAE decode and an mp4 written to a temporary folder. The whole generation runs ``--repeat``
times in one process: the first is cold (text encode, the first sampling step's torch.compile and
the first decode include their warm-up), the later ones warm. Peak GiB is the allocator peak
during a stage, weights of every resident model included. ``--fp8-matmul off,tensor``
(a14b-4step) times the generations once per setting in the same process: the fp8 block weights
dequantised per matmul (``off``, as ComfyUI's ``fp8_e4m3fn``) or run as fp8 GEMMs with the
activations quantised per ``tensor`` / ``row`` (as ``fp8_e4m3fn_fast``); a change recompiles.

    python bench/e2e.py [--compile off|blocks] [--steps 50] [--frames 81] [--tiled-decode]
    python bench/e2e.py --model a14b-4step --repeat 2 [--fp8-matmul off,tensor] [--attention sage8]
    python bench/e2e.py --tiny [--model a14b-4step]    # CPU smoke run: tiny models, fp32
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile
import time
from contextlib import contextmanager

import torch
from dit_eager import CONFIGS, ours
from lora import lightx2v_like, to_fp8
from safetensors.torch import save_file

import harness  # bench/ is on sys.path when run as a script
from wanrt.wan_core.compile import MODES, compile_dit, compile_summary
from wanrt.wan_core.lora import apply_lora, load_lora
from wanrt.wan_core.pipelines import encode_prompts, latent_shape, task_name
from wanrt.wan_core.sampling import sample
from wanrt.wan_core.text_encoder import TextEncoder, UMT5Config, UMT5Encoder, UMT5Tokenizer
from wanrt.wan_core.tiny.text_encoder import CONFIG as TINY_UMT5, train_spiece
from wanrt.wan_core.tiny.vae import TINY_VAE21, random_state_dict
from wanrt.wan_core.vae import WAN21_VAE, WanVAE
from wanrt.wan_core.video_io import save_video

PROMPT = "A red fox trots through fresh snow in a quiet birch forest at sunrise, cinematic."


@torch.no_grad()
def text_encoder(cfg: UMT5Config, dtype, device) -> TextEncoder:
    """UMT5 with N(0, 0.02) weights and unit norm scales, materialised straight on ``device``."""
    with torch.device("meta"):
        model = UMT5Encoder(cfg).to(dtype)
    model.to_empty(device=device).eval().requires_grad_(False)
    generator = torch.Generator(device=device).manual_seed(0)
    for name, p in model.named_parameters():
        p.fill_(1) if "norm" in name else p.normal_(0, 0.02, generator=generator)
    tokenizer = UMT5Tokenizer.from_sentencepiece(train_spiece(), "tiny SentencePiece model")
    return TextEncoder(model, tokenizer)


def vae(config, dtype, device) -> WanVAE:
    with torch.device("meta"):
        model = WanVAE(config)
    model.load_state_dict(random_state_dict(config, seed=0), assign=True)
    model = model.to(device, dtype).eval().requires_grad_(False)
    return model.laid_out_for(device)


class Stages:
    """Wall time (synchronised) and allocator peak of each ``with stages(name):`` block."""

    def __init__(self, device: torch.device):
        self.cuda, self.rows = device.type == "cuda", []

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    @contextmanager
    def __call__(self, name: str):
        self.sync()
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        yield
        self.sync()
        peak = f"{torch.cuda.max_memory_allocated() / 2**30:.2f}" if self.cuda else "–"
        self.rows.append((name, time.perf_counter() - start, peak))


# --model: (DiT size, sampling settings). A14B: both experts are 14B-shaped (dim 5120, 40 layers).
SETTINGS = {
    "t2v-1.3B": dict(size="1.3B", steps=50, cfg=5.0, shift=5.0, sampler="unipc", experts=1),
    "a14b-4step": dict(size="14B", steps=4, cfg=1.0, shift=5.0, sampler="euler", experts=2,
                       boundary=0.875),
}
LORA_RANK = 64


def distilled_expert(config, dtype, device, lora) -> torch.nn.Module:
    """An A14B expert as the 4-step workflows load it: fp8 block weights, the LoRA merged."""
    dit = ours(config, dtype, device)
    to_fp8(dit)
    return apply_lora(dit, lora, 1.0, mode="merge")  # a new model; the LoRA-free one is freed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="tiny models on CPU, fp32, compile off")
    parser.add_argument("--model", choices=SETTINGS, default="t2v-1.3B")
    parser.add_argument("--compile", choices=MODES, default="blocks")
    parser.add_argument("--steps", type=int, help="default: the model's (--tiny: 3)")
    parser.add_argument("--frames", type=int, help="default 81 (--tiny: 5)")
    parser.add_argument("--repeat", type=int, default=1, help="generations in one process (cold, then warm)")
    parser.add_argument("--tiled-decode", action="store_true")
    parser.add_argument("--attention", default="auto",
                        help="the DiT's self-attention backend (wan_core.attention.BACKENDS), "
                             "e.g. sage8 (8-bit; cross-attention stays dense)")
    parser.add_argument("--fp8-matmul", default="off",
                        help="a14b-4step: comma-separated settings of the fp8 blocks' matmul, each "
                             "timed: off (dequantise), tensor, row (fp8 GEMMs)")
    args = parser.parse_args()
    print("\n".join(harness.settings(
        channels_last="the VAE's conv weights on CUDA (the DiT and UMT5 have no convolutions)",
        arguments=vars(args))), flush=True)
    run = SETTINGS[args.model]
    fp8_matmuls = args.fp8_matmul.split(",")
    if not set(fp8_matmuls) <= {"off", "tensor", "row"}:
        parser.error(f"--fp8-matmul takes off, tensor, row; got {args.fp8_matmul!r}")
    if run["experts"] == 1 and fp8_matmuls != ["off"]:
        parser.error("--fp8-matmul needs fp8 weights: --model a14b-4step")
    if args.tiny:
        device, dtype, width, height, mode = torch.device("cpu"), torch.float32, 96, 64, "off"
        dit_cfg = dataclasses.replace(CONFIGS["tiny"], text_dim=TINY_UMT5.dim)
        umt5_cfg, vae_cfg, steps, frames = TINY_UMT5, TINY_VAE21, args.steps or 3, args.frames or 5
        print(f"device: CPU, torch {torch.__version__}")
    else:
        if not torch.cuda.is_available():
            parser.error("needs a CUDA GPU (or --tiny)")
        device, dtype, width, height, mode = torch.device("cuda"), torch.bfloat16, 832, 480, args.compile
        dit_cfg, umt5_cfg, vae_cfg = CONFIGS[run["size"]], UMT5Config(), WAN21_VAE
        steps, frames = args.steps or run["steps"], args.frames or 81
        print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}, "
              f"CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}")
    print(compile_summary(mode))

    stages = Stages(device)
    with stages("build DiT"):
        if run["experts"] == 1:
            experts = [ours(dit_cfg, dtype, device)]
        else:
            with tempfile.TemporaryDirectory() as tmp:
                save_file(lightx2v_like(dit_cfg, LORA_RANK), f"{tmp}/lora.safetensors")
                lora = load_lora(f"{tmp}/lora.safetensors")
            experts = [distilled_expert(dit_cfg, dtype, device, lora) for _ in range(2)]
        for dit in experts:
            dit.set_attention_backend(args.attention)
        experts = [compile_dit(dit.fuse_projections(), mode) for dit in experts]
    with stages("build UMT5 encoder"):
        encoder = text_encoder(umt5_cfg, dtype, device)
    with stages("build VAE"):
        decoder = vae(vae_cfg, dtype, device)
    shape = latent_shape(decoder, batch=1, frames=frames, height=height, width=width)
    print(f"{args.model}: {width}x{height}, {frames} frames (latent {list(shape)}), {steps} "
          f"{run['sampler']} steps, CFG {run['cfg']:g}, {dtype}"
          f"{', fp8 blocks + merged rank-64 LoRA, 2 experts' if run['experts'] == 2 else ''}, "
          f"attention {args.attention}, VAE decode {'tiled' if args.tiled_decode else 'untiled'}\n")
    builds = list(stages.rows)
    for setting, fp8_matmul in enumerate(fp8_matmuls):
        for dit in experts:
            dit.use_fp8_matmul(None if fp8_matmul == "off" else fp8_matmul)
        if run["experts"] == 2:
            print("## fp8 blocks: " + ("dequantised per matmul\n" if fp8_matmul == "off" else
                                       f"fp8 GEMMs, activations quantised per {fp8_matmul}\n"))
        for attempt in range(args.repeat):
            stages.rows = []
            total, steps_s = generate(experts, encoder, decoder, shape, steps, run, stages, args)
            label = ("warm" if attempt else "cold (first in this process)" if setting == 0 else
                     "first with this setting (blocks recompile)")
            print(f"### generation {attempt + 1}: {label}\n")
            print("| stage | seconds | peak GiB |")
            print("|---|---|---|")
            for name, seconds, peak in (builds if attempt == 0 else []) + stages.rows:
                print(f"| {name} | {seconds:.2f} | {peak} |")
            print(f"| sampling: first step{'' if attempt else ' (incl. compile)'} | "
                  f"{steps_s[0]:.2f} | |")
            if len(steps_s) > 1:
                print(f"| sampling: median of steps 2..{steps} | "
                      f"{statistics.median(steps_s[1:]):.3f} | |")
            print(f"| **total: text encode to mp4** | **{total:.2f}** | |\n")
        builds = []


def generate(experts, encoder, decoder, shape, steps, run, stages, args):
    """One prompt to an mp4; returns (seconds from text encode to the written file, step times)."""
    step_ends = []

    def step_done(step, total, x0):
        stages.sync()
        step_ends.append(time.perf_counter())

    start = time.perf_counter()
    with torch.no_grad():
        with stages("text encode (prompt + negative)"):
            context, negative = encode_prompts(encoder, PROMPT, task=task_name(*experts[:1]))
        with stages("sampling"):
            sample_start = time.perf_counter()
            two = len(experts) == 2
            latent = sample(experts[0], shape, context=context, negative_context=negative, seed=0,
                            steps=steps, cfg=run["cfg"], shift=run["shift"], sampler=run["sampler"],
                            low_noise_model=experts[1] if two else None,
                            boundary=run.get("boundary") if two else None,
                            cfg_low=run["cfg"] if two else None, callback=step_done)
        with stages("VAE decode"):
            video = ((decoder.decode(latent, tiled=args.tiled_decode) + 1) / 2).clamp(0, 1)
    with stages("write mp4"), tempfile.TemporaryDirectory() as out:
        save_video(video[0].permute(1, 2, 3, 0), out, "e2e")
    total = time.perf_counter() - start
    steps_s = [b - a for a, b in zip([sample_start] + step_ends, step_ends)]
    return total, steps_s


if __name__ == "__main__":
    main()
