"""UMT5-XXL encode of one 512-token prompt: WanRT vs transformers ``UMT5EncoderModel``.

Real size (5.7 B params), random bf16 weights shared by both models (built on the meta device,
materialised on the GPU once), CUDA. ``--tiny`` runs the tiny test config on CPU in fp32.

    python bench/text_encoder.py [--tiny] [--iters 20]

Prints a markdown table: median ms per ``encode`` (tokenizer stubbed with 511 random ids + EOS),
activation peak, and the max |difference| of the outputs.
"""

from __future__ import annotations

import argparse

import torch
import harness  # bench/ is on sys.path when run as a script

from wanrt.wan_core.layers import implementation_report
from wanrt.wan_core.text_encoder import TextEncoder, UMT5Config, UMT5Encoder
from wanrt.wan_core.text_encoder.loader import _hf_to_official
from wanrt.wan_core.tiny.text_encoder import CONFIG as TINY, hf_config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="tiny config on CPU, fp32")
    parser.add_argument("--iters", type=int, default=20)
    args = parser.parse_args()
    print("\n".join(harness.settings(
        channels_last="not used (no convolutions)",
        arguments=vars(args))), flush=True)
    cfg = TINY if args.tiny else UMT5Config()
    device = torch.device("cpu" if args.tiny else "cuda")
    dtype = torch.float32 if args.tiny else torch.bfloat16

    from transformers import UMT5Config as HFConfig, UMT5EncoderModel

    torch.manual_seed(0)
    with torch.device(device):
        hf = UMT5EncoderModel._from_config(HFConfig(**hf_config(cfg)), dtype=dtype).eval()
    with torch.device("meta"):
        model = UMT5Encoder(cfg)
    weights = {_hf_to_official(k): v for k, v in hf.state_dict().items()
               if k != "encoder.embed_tokens.weight"}
    model.load_state_dict(weights, assign=True)  # shares hf's tensors: no second copy
    model.eval().requires_grad_(False)

    ids = torch.randint(3, min(cfg.vocab_size, 256000), (511,)).tolist() + [1]
    te = TextEncoder(model, tokenizer=lambda prompts, max_length: [ids] * len(prompts))
    tokens = torch.tensor([ids], device=device)
    mask = torch.ones_like(tokens)

    with torch.no_grad():
        ours_ms, ours_peak, ours = harness.timed(lambda: te.encode(["x"]), args.iters, device, warmup=3)
        hf_ms, hf_peak, ref = harness.timed(lambda: hf(input_ids=tokens, attention_mask=mask).last_hidden_state,
                                    args.iters, device, warmup=3)
    diff = (ours[0].float() - ref[0].float()).abs().max().item()
    scale = ref.float().abs().max().item()

    name = torch.cuda.get_device_name() if device.type == "cuda" else "CPU"
    print(f"UMT5 encoder {cfg.dim}x{cfg.num_layers} ({sum(p.numel() for p in model.parameters()) / 1e9:.2f} B params), "
          f"{dtype}, 512 tokens, batch 1, {name}, median of {args.iters}; layers: {implementation_report(model)}\n")
    print("| implementation | ms / encode | activation peak GiB | max abs diff vs transformers (max abs out) |")
    print("|---|---|---|---|")
    print(f"| WanRT `TextEncoder.encode` | {ours_ms:.1f} | {ours_peak} | {diff:.3g} ({scale:.3g}) |")
    print(f"| transformers `UMT5EncoderModel` | {hf_ms:.1f} | {hf_peak} | – |")
    print(f"\nspeed-up: {hf_ms / ours_ms:.2f}x")


if __name__ == "__main__":
    main()
