"""One eager DiT forward: ours beside diffusers' ``WanTransformer3DModel`` in the same process.

Real sizes on CUDA: Wan 2.1 1.3B and 14B with random bf16 weights (built on the meta device,
materialised on the GPU), 832x480x81 frames = latent [1, 16, 21, 60, 104] (L = 32,760 tokens),
context [1, 512, 4096], t = 999. diffusers gets the same weights (renamed) and keeps its
``_keep_in_fp32_modules`` in fp32 as ``from_pretrained`` would. Median of ``--runs`` timed
forwards after two warm-up calls; peak memory is the allocator peak during a forward.

    python bench/dit_eager.py            # CUDA, 1.3B and 14B
    python bench/dit_eager.py --tiny     # CPU smoke run at tiny size
"""

from __future__ import annotations

import argparse

import torch

import harness  # bench/ is on sys.path when run as a script

from wanrt.wan_core.dit import DiTConfig, WanModel, init_random_
from wanrt.wan_core.dit.formats import official_to_diffusers

CONFIGS = {
    "1.3B": DiTConfig(dim=1536, ffn_dim=8960, num_heads=12, num_layers=30, in_dim=16, out_dim=16),
    "14B": DiTConfig(dim=5120, ffn_dim=13824, num_heads=40, num_layers=40, in_dim=16, out_dim=16),
    "tiny": DiTConfig(dim=256, ffn_dim=512, num_heads=2, num_layers=2, in_dim=16, out_dim=16),
}
LATENT = {"real": (21, 60, 104), "tiny": (3, 8, 12)}


def ours(config: DiTConfig, dtype, device) -> WanModel:
    with torch.device("meta"):
        model = WanModel(config, dtype=dtype)
    return init_random_(model.to_empty(device=device), seed=0).eval().requires_grad_(False)


def diffusers_like(model: WanModel, dtype, device):
    """diffusers' model holding our weight tensors (shared, not copied: a 14B pair fits one
    80 GB GPU), fp32 copies where ``from_pretrained`` keeps fp32 (``_keep_in_fp32_modules``).
    Built on the meta device; only its RoPE tables (buffers computed in ``__init__``) are made
    on ``device``. (diffusers is imported here: e2e.py and step_cache.py reuse this module
    without it.)"""
    from diffusers import WanTransformer3DModel

    c = model.config
    with torch.device("meta"):
        ref = WanTransformer3DModel(num_attention_heads=c.num_heads, attention_head_dim=c.head_dim,
                                    in_channels=c.in_dim, out_channels=c.out_dim,
                                    text_dim=c.text_dim, ffn_dim=c.ffn_dim, num_layers=c.num_layers)
    keep = WanTransformer3DModel._keep_in_fp32_modules
    state = {official_to_diffusers(k): v for k, v in model.state_dict().items()}
    ref.load_state_dict({k: v.float() if any(part in keep for part in k.split(".")) else v.to(dtype)
                         for k, v in state.items()}, assign=True)
    with torch.device(device):
        ref.rope = type(ref.rope)(c.head_dim, ref.config.patch_size, ref.config.rope_max_seq_len)
    return ref.eval()


@torch.inference_mode()
def bench(name: str, latent, runs: int, dtype, device) -> list[str]:
    config = CONFIGS[name]
    g = torch.Generator(device="cpu").manual_seed(0)
    x = torch.randn(1, config.in_dim, *latent, generator=g).to(device, dtype)
    context = torch.randn(1, 512, config.text_dim, generator=g).to(device, dtype)
    t = torch.tensor([999.0], device=device)
    tokens = latent[0] * (latent[1] // 2) * (latent[2] // 2)

    model = ours(config, dtype, device)
    ours_ms, ours_peak, ours_out = harness.timed(lambda: model(x, t, context), runs, device)
    ref = diffusers_like(model, dtype, device)
    del model  # one model resident while timing
    if device.type == "cuda":
        torch.cuda.empty_cache()
    ref_ms, ref_peak, ref_out = harness.timed(
        lambda: ref(x, t, context, return_dict=False)[0], runs, device)
    diff = ((ours_out.float() - ref_out.float()).norm() / ref_out.float().norm()).item()
    del ref
    if device.type == "cuda":
        torch.cuda.empty_cache()
    rows = []
    for impl, ms, peak in (("diffusers eager", ref_ms, ref_peak),
                           ("ours eager", ours_ms, ours_peak)):
        rows.append(f"| {name} | {tokens} | {impl} | {ms:.1f} | {peak} | {ms / ref_ms:.3f} | "
                    f"{diff:.1e} |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="tiny model on CPU (smoke run)")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--models", default="1.3B,14B", help="comma-separated: 1.3B, 14B")
    args = parser.parse_args()
    print("\n".join(harness.settings(
        channels_last="not used (the DiT has no convolutions on its hot path)",
        arguments=vars(args))), flush=True)
    if args.tiny:
        device, dtype, names, latent = torch.device("cpu"), torch.float32, ["tiny"], LATENT["tiny"]
    else:
        if not torch.cuda.is_available():
            parser.error("needs a CUDA GPU (or --tiny)")
        device, dtype, latent = torch.device("cuda"), torch.bfloat16, LATENT["real"]
        names = args.models.split(",")
        print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}")
    print(f"latent [1, 16, {', '.join(map(str, latent))}], context [1, 512, 4096], {dtype}, "
          f"median of {args.runs} runs after 2 warm-up calls\n")
    print("| model | tokens | implementation | median ms | peak GiB | vs diffusers "
          "| rel. L2 ours vs diffusers |")
    print("|---|---|---|---|---|---|---|")
    for name in names:
        for row in bench(name, latent, args.runs, dtype, device):
            print(row, flush=True)


if __name__ == "__main__":
    main()
