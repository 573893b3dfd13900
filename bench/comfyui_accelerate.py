"""ComfyUI's own Wan 2.1 14B T2V, sampled by ComfyUI, with and without WanRT Accelerate.

Real size on CUDA: ComfyUI's ``WanModel`` (the vendored ComfyUI 0.33.0, unpacked to a temporary
folder) with random bf16 weights, 832x480x81 (32,760 tokens), euler, ModelSamplingSD3 shift 8,
CFG 5 with 512-token text (cond + uncond: two forwards per step, one batch where ComfyUI's
memory estimate allows), the same weights, noise and GPU for both, in one process. For each
model: the cold call (a 1-step sampling: first use, WanRT's compile included) and the warm time
per step (median interval between ComfyUI's step callbacks over ``--steps`` steps, so steps 2..N),
then the ratio WanRT / ComfyUI and the rel. L2 between the two final latents of the warm runs.

    python bench/comfyui_accelerate.py [--steps 3] [--compile blocks] [--attention auto]
    python bench/comfyui_accelerate.py --tiny    # CPU smoke run: tiny model, fp32, compile off

ComfyUI's imports need (beyond torch): einops safetensors transformers tokenizers sentencepiece
torchsde scipy psutil pyyaml av pillow tqdm comfy-kitchen comfy-aimdo; torchvision / torchaudio
are served by the test shims (``tests/comfyui_shims``), ComfyUI's Wan path never calls them.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
SNAPSHOT_NAME = "vendor/ComfyUI-0.33.0-783545f6.tar.xz"
# where the snapshot is looked for: $WANRT_SHARED_DIR, shared/ in the checkout, ../shared
SHARED_DIRS = [Path(p) for p in (os.environ.get("WANRT_SHARED_DIR"),) if p] + [
    ROOT / "shared", ROOT.parent / "shared"]

WAN_14B = dict(dim=5120, ffn_dim=13824, num_heads=40, num_layers=40)
TINY = dict(dim=256, ffn_dim=512, num_heads=2, num_layers=2)
REAL_SIZE, TINY_SIZE = (832, 480, 81), (64, 48, 9)  # width, height, frames


def enter_comfyui(comfyui: Path | None, tmp: Path, cpu: bool) -> None:
    """Make ComfyUI importable (with the test shims): the folder ``comfyui``, else the vendored
    snapshot unpacked into ``tmp``."""
    if comfyui is None:
        snapshot = next((d / SNAPSHOT_NAME for d in SHARED_DIRS if (d / SNAPSHOT_NAME).is_file()),
                        None)
        if snapshot is None:
            sys.exit(f"the vendored ComfyUI snapshot {SNAPSHOT_NAME} is in none of "
                     f"{[str(d) for d in SHARED_DIRS]}; set WANRT_SHARED_DIR or pass --comfyui")
        with tarfile.open(snapshot) as archive:
            archive.extractall(tmp, filter="data")
        comfyui = tmp / "ComfyUI"
    sys.path.insert(0, str(ROOT / "tests" / "comfyui_shims"))
    import torch_media_shim
    torch_media_shim.install()
    sys.path.insert(0, str(comfyui))
    from comfy.cli_args import args
    args.cpu = cpu


@torch.no_grad()
def comfy_wan_model(config: dict, dtype: torch.dtype, device: torch.device):
    """ComfyUI's MODEL (a plain ModelPatcher) for a Wan 2.1 T2V DiT with random weights: linear
    weights N(0, 1/fan_in), norms 1, biases 0, modulation tables N(0, 1/dim)."""
    import comfy.ldm.wan.model
    import comfy.ops
    import comfy.sd

    with torch.device("meta"):
        shapes = comfy.ldm.wan.model.WanModel(**config, operations=comfy.ops.disable_weight_init)
    gen = torch.Generator(device).manual_seed(0)
    sd = {}
    for name, p in shapes.state_dict().items():
        if name.endswith("modulation"):
            t = torch.randn(p.shape, generator=gen, device=device) * config["dim"] ** -0.5
        elif name.endswith("bias"):
            t = torch.zeros(p.shape, device=device)
        elif p.dim() == 1:
            t = torch.ones(p.shape, device=device)
        else:
            t = torch.randn(p.shape, generator=gen, device=device) * p[0].numel() ** -0.5
        sd[name] = t.to(dtype)
    model = comfy.sd.load_diffusion_model_state_dict(sd, model_options={"dtype": dtype},
                                                     disable_dynamic=True)
    del sd  # ComfyUI copied the weights to its offload device; it loads them when sampling
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return model


def timed_sample(model, steps: int, latent, noise, positive, negative):
    """``(seconds per step, wall seconds, final latent)`` of one ComfyUI sampling run."""
    import comfy.model_management
    import comfy.sample

    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    marks = []

    def step_done(*_):
        sync()
        marks.append(time.perf_counter())

    start = time.perf_counter()
    out = comfy.sample.sample(model, noise, steps, 5.0, "euler", "simple", positive, negative,
                              latent, callback=step_done, disable_pbar=True, seed=0)
    wall = time.perf_counter() - start
    steps_s = [b - a for a, b in zip(marks, marks[1:])] or [wall]
    comfy.model_management.soft_empty_cache()
    return statistics.median(steps_s), wall, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tiny", action="store_true", help="CPU smoke run (tiny model, fp32)")
    parser.add_argument("--steps", type=int, default=3,
                        help="warm steps per model (the time per step is the median between "
                             "step callbacks, so the first step is not counted)")
    parser.add_argument("--compile", choices=("off", "blocks", "full"), default=None,
                        help="WanRT Accelerate's compile (default: blocks; off with --tiny)")
    parser.add_argument("--attention", default="auto",
                        choices=("auto", "sdpa", "cudnn", "flash", "efficient"))
    parser.add_argument("--comfyui", type=Path, default=None,
                        help="an unpacked ComfyUI folder (default: unpack the vendored snapshot)")
    opts = parser.parse_args()
    compile_mode = opts.compile or ("off" if opts.tiny else "blocks")
    if not opts.tiny and not torch.cuda.is_available():
        sys.exit("a real-size run needs a CUDA GPU; use --tiny on CPU")

    with tempfile.TemporaryDirectory(prefix="comfyui-") as tmp:
        enter_comfyui(opts.comfyui, Path(tmp), cpu=opts.tiny)
        try:
            import comfy.model_management
            import comfy.sample
            from comfy_extras.nodes_model_advanced import ModelSamplingSD3
        except ModuleNotFoundError as e:
            sys.exit(f"ComfyUI needs the package {e.name!r} here: pip install it (the module "
                     f"docstring lists all of ComfyUI's imports on this path)")

        from wanrt import kernels
        from wanrt.nodes.accelerate import WanRTAccelerate

        device = torch.device("cpu" if opts.tiny else "cuda")
        dtype = torch.float32 if opts.tiny else torch.bfloat16
        config = TINY if opts.tiny else WAN_14B
        width, height, frames = TINY_SIZE if opts.tiny else REAL_SIZE
        t0 = time.perf_counter()
        base = comfy_wan_model(config, dtype, device)
        (comfy_model,) = ModelSamplingSD3().patch(base, 8.0)
        (wanrt_model,) = WanRTAccelerate().accelerate(base, compile_mode, opts.attention)
        (wanrt_model,) = ModelSamplingSD3().patch(wanrt_model, 8.0)
        comfy.model_management.load_models_gpu([comfy_model])
        print(f"ComfyUI WanModel {config}, {dtype}, built and loaded in "
              f"{time.perf_counter() - t0:.1f} s", flush=True)

        gen = torch.Generator().manual_seed(0)
        latent = torch.zeros(1, 16, (frames - 1) // 4 + 1, height // 8, width // 8)
        noise = comfy.sample.prepare_noise(latent, 0)
        text = 16 if opts.tiny else 512  # ComfyUI pads the UMT5 prompt to 512 tokens
        positive = [[torch.randn(1, text, 4096, generator=gen), {}]]
        negative = [[torch.randn(1, text, 4096, generator=gen), {}]]
        tokens = latent.shape[2] * latent.shape[3] * latent.shape[4] // 4
        results = {}
        for name, model in (("comfyui", comfy_model), ("wanrt", wanrt_model)):
            _, cold, _ = timed_sample(model, 1, latent, noise, positive, negative)
            step, _, out = timed_sample(model, opts.steps, latent, noise, positive, negative)
            results[name] = {"cold_first_call_s": round(cold, 2),
                             "ms_per_step": round(step * 1e3, 1)}
            results[name]["out"] = out.float()
            print(f"{name:8s} cold first call (1 step) {cold:8.2f} s   warm {step * 1e3:10.1f} "
                  f"ms/step", flush=True)
        a, b = results["wanrt"].pop("out"), results["comfyui"].pop("out")
        summary = {
            "size": f"{width}x{height}x{frames} ({tokens} tokens)", "dtype": str(dtype),
            "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
            "compile": compile_mode, "attention": opts.attention,
            "wanrt_kernels": kernels.default_impl(), **results,
            "ratio_wanrt_over_comfyui": round(results["wanrt"]["ms_per_step"]
                                              / results["comfyui"]["ms_per_step"], 3),
            "rel_l2_final_latent": float((a - b).norm() / b.norm()),
        }
        print(json.dumps(summary))


if __name__ == "__main__":
    main()
