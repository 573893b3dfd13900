"""Tiny random UMT5 encoder in every real file layout, with a real tiny SentencePiece tokenizer.

Sizes: vocab 384 (256 SentencePiece pieces), dim 64, 4 heads of 16, FFN 96, 2 layers, 32 buckets.
Every weight lies on the fp8 e4m3 grid times a power of two, so fp16, bf16 and fp8-scaled files
hold exactly the same numbers and all layouts must load to identical encoders.

Writes ``text_encoders/umt5_xxl_fp16.safetensors`` and ``umt5_xxl_fp8_e4m3fn_scaled.safetensors``
(ComfyUI: HF names + ``spiece_model``), ``official/models_t5_umt5-xxl-enc-bf16.pth`` with its
tokenizer in ``official/google/umt5-xxl/``, and ``text_encoder/`` (transformers
``UMT5EncoderModel`` folder) + ``tokenizer/`` in each ``diffusers/<pipeline>/`` of
``DIFFUSERS_PIPELINES``.
"""

from __future__ import annotations

import io
import json
import math
import random
from pathlib import Path

import torch
from safetensors.torch import save_file

from ..prompts import NEGATIVE_PROMPT
from ..text_encoder.model import UMT5Config

CONFIG = UMT5Config(vocab_size=384, dim=64, num_heads=4, head_dim=16, ffn_dim=96, num_layers=2,
                    num_buckets=32)
SPIECE_PIECES = 256
# The diffusers pipeline folders of the tiny DiT (wan_core/tiny/dit.py); each gets its encoders.
DIFFUSERS_PIPELINES = ("Wan2.1-I2V-14B-480P-Diffusers", "Wan2.1-FLF2V-14B-720P-Diffusers")

_WORDS = (
    "a an the of in on at over under with and while through beside behind toward cat dog horse "
    "bird fish fox owl whale child woman man girl boy robot dancer runs walks jumps flies swims "
    "dances smiles turns looks waves falls glows drifts spins beach river lake ocean forest desert "
    "mountain city street market garden kitchen rooftop bridge tunnel sky cloud storm rain snow fog "
    "sunset sunrise night morning light shadow neon golden blue red green silver dark bright soft "
    "warm cold slow fast gentle wild quiet busy ancient modern camera pans zooms tracks tilts orbit "
    "close wide shot portrait aerial view cinematic realistic painting anime style detailed sharp "
    "blurry high quality video frame scene motion background foreground reflection water fire smoke "
    "dust leaves flowers trees grass stones sand lanterns train car bicycle boat umbrella hat coat"
).split()


def train_spiece() -> bytes:
    """A 256-piece unigram SentencePiece model (T5 ids: pad 0, eos 1, unk 2), deterministic."""
    import sentencepiece

    rng = random.Random(0)
    words = _WORDS + [w.capitalize() for w in _WORDS[:40]]
    lines = [" ".join(rng.choice(words) for _ in range(12)) for _ in range(400)] + [NEGATIVE_PROMPT] * 3
    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_writer=model, vocab_size=SPIECE_PIECES,
        model_type="unigram", pad_id=0, eos_id=1, unk_id=2, bos_id=-1, num_threads=1,
        character_coverage=1.0, normalization_rule_name="identity", minloglevel=2)
    return model.getvalue()


def tokenizer_files(spiece: bytes) -> dict[str, bytes]:
    """``spiece.model``, an equivalent HF ``tokenizer.json`` (Unigram + Metaspace + EOS template)
    and ``tokenizer_config.json``: the files of ``google/umt5-xxl``."""
    import sentencepiece

    sp = sentencepiece.SentencePieceProcessor(model_proto=spiece)
    specials = [{"id": i, "content": sp.id_to_piece(i), "single_word": False, "lstrip": False,
                 "rstrip": False, "normalized": False, "special": True} for i in (0, 1, 2)]
    metaspace = {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "always",
                 "split": True}
    eos = {"SpecialToken": {"id": "</s>", "type_id": 0}}
    tokenizer = {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": specials,
        "normalizer": {"type": "Replace", "pattern": {"Regex": " {2,}"}, "content": " "},
        "pre_tokenizer": metaspace, "decoder": metaspace,
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"Sequence": {"id": "A", "type_id": 0}}, eos],
            "pair": [{"Sequence": {"id": "A", "type_id": 0}}, eos,
                     {"Sequence": {"id": "B", "type_id": 0}}, eos],
            "special_tokens": {"</s>": {"id": "</s>", "ids": [1], "tokens": ["</s>"]}}},
        "model": {"type": "Unigram", "unk_id": 2, "byte_fallback": False,
                  "vocab": [[sp.id_to_piece(i), sp.get_score(i)] for i in range(sp.get_piece_size())]},
    }
    config = {"tokenizer_class": "T5Tokenizer", "eos_token": "</s>", "pad_token": "<pad>",
              "unk_token": "<unk>", "extra_ids": 0, "model_max_length": 512}
    return {"spiece.model": spiece,
            "tokenizer.json": json.dumps(tokenizer, ensure_ascii=False).encode(),
            "tokenizer_config.json": json.dumps(config, indent=1).encode()}


def _on_fp8_grid(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Round ``t`` to fp8-e4m3 values times a power-of-two scale; returns (fp8 values, scale)."""
    scale = torch.tensor(2.0 ** math.ceil(math.log2(t.abs().max().item() / 448)))
    return (t / scale).to(torch.float8_e4m3fn), scale


def official_state_dict(seed: int, cfg: UMT5Config = CONFIG) -> dict[str, torch.Tensor]:
    """Random fp32 weights with official names, exactly representable in fp16 / bf16 / fp8."""
    g = torch.Generator().manual_seed(seed)

    def rand(*shape, std=1.0, mean=0.0):
        q, scale = _on_fp8_grid(mean + std * torch.randn(*shape, generator=g))
        return q.float() * scale

    inner = cfg.num_heads * cfg.head_dim
    sd = {"token_embedding.weight": rand(cfg.vocab_size, cfg.dim)}
    for i in range(cfg.num_layers):
        p = f"blocks.{i}."
        sd |= {p + "norm1.weight": rand(cfg.dim, std=0.1, mean=1.0),
               p + "attn.q.weight": rand(inner, cfg.dim, std=(cfg.dim * cfg.head_dim) ** -0.5),
               p + "attn.k.weight": rand(inner, cfg.dim, std=cfg.dim ** -0.5),
               p + "attn.v.weight": rand(inner, cfg.dim, std=cfg.dim ** -0.5),
               p + "attn.o.weight": rand(cfg.dim, inner, std=inner ** -0.5),
               p + "pos_embedding.embedding.weight": rand(cfg.num_buckets, cfg.num_heads, std=0.5),
               p + "norm2.weight": rand(cfg.dim, std=0.1, mean=1.0),
               p + "ffn.gate.0.weight": rand(cfg.ffn_dim, cfg.dim, std=cfg.dim ** -0.5),
               p + "ffn.fc1.weight": rand(cfg.ffn_dim, cfg.dim, std=cfg.dim ** -0.5),
               p + "ffn.fc2.weight": rand(cfg.dim, cfg.ffn_dim, std=cfg.ffn_dim ** -0.5)}
    sd["norm.weight"] = rand(cfg.dim, std=0.1, mean=1.0)
    return sd


_OFFICIAL_TO_HF = {"norm1": "layer.0.layer_norm", "attn.q": "layer.0.SelfAttention.q",
                   "attn.k": "layer.0.SelfAttention.k", "attn.v": "layer.0.SelfAttention.v",
                   "attn.o": "layer.0.SelfAttention.o",
                   "pos_embedding.embedding": "layer.0.SelfAttention.relative_attention_bias",
                   "norm2": "layer.1.layer_norm", "ffn.gate.0": "layer.1.DenseReluDense.wi_0",
                   "ffn.fc1": "layer.1.DenseReluDense.wi_1", "ffn.fc2": "layer.1.DenseReluDense.wo"}


def hf_name(key: str) -> str:
    """Official ``T5Encoder`` name -> transformers ``UMT5EncoderModel`` name (§5.4)."""
    if key == "token_embedding.weight":
        return "shared.weight"
    if key == "norm.weight":
        return "encoder.final_layer_norm.weight"
    _, i, rest = key.split(".", 2)
    module, param = rest.rsplit(".", 1)
    return f"encoder.block.{i}.{_OFFICIAL_TO_HF[module]}.{param}"


def hf_config(cfg: UMT5Config = CONFIG) -> dict:
    return {"architectures": ["UMT5EncoderModel"], "model_type": "umt5",
            "vocab_size": cfg.vocab_size, "d_model": cfg.dim, "d_kv": cfg.head_dim,
            "d_ff": cfg.ffn_dim, "num_layers": cfg.num_layers, "num_heads": cfg.num_heads,
            "relative_attention_num_buckets": cfg.num_buckets,
            "relative_attention_max_distance": cfg.max_distance,
            "feed_forward_proj": "gated-gelu", "layer_norm_epsilon": cfg.eps,
            "dropout_rate": 0.0, "pad_token_id": 0, "eos_token_id": 1,
            "decoder_start_token_id": 0, "tie_word_embeddings": False, "torch_dtype": "bfloat16"}


def _write_folder(folder: Path, files: dict[str, bytes]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return [folder / name for name in files]


def write(outdir: Path, seed: int) -> list[Path]:
    outdir = Path(outdir)
    sd = official_state_dict(seed)
    spiece = train_spiece()
    hf = {hf_name(k): v for k, v in sd.items()}
    comfy_extra = {"spiece_model": torch.frombuffer(bytearray(spiece), dtype=torch.uint8)}
    linear = (".q.weight", ".k.weight", ".v.weight", ".o.weight", ".wi_0.weight", ".wi_1.weight",
              ".wo.weight")
    fp8 = {"scaled_fp8": torch.empty(0, dtype=torch.float8_e4m3fn)}
    for k, v in hf.items():
        if k.endswith(linear):
            fp8[k], fp8[k[: -len("weight")] + "scale_weight"] = _on_fp8_grid(v)
        else:
            fp8[k] = v.half()

    te = outdir / "text_encoders"
    te.mkdir(parents=True, exist_ok=True)
    written = [te / "umt5_xxl_fp16.safetensors", te / "umt5_xxl_fp8_e4m3fn_scaled.safetensors"]
    save_file({k: v.half() for k, v in hf.items()} | comfy_extra, written[0])
    save_file(fp8 | comfy_extra, written[1])

    official = outdir / "official"
    official.mkdir(parents=True, exist_ok=True)
    written.append(official / "models_t5_umt5-xxl-enc-bf16.pth")
    torch.save({k: v.bfloat16() for k, v in sd.items()}, written[-1])
    tokenizer = tokenizer_files(spiece)
    written += _write_folder(official / "google" / "umt5-xxl", tokenizer)

    for pipeline in DIFFUSERS_PIPELINES:
        diffusers = outdir / "diffusers" / pipeline
        written += _write_folder(diffusers / "text_encoder",
                                 {"config.json": json.dumps(hf_config(), indent=1).encode()})
        written.append(diffusers / "text_encoder" / "model.safetensors")
        save_file({k: v.bfloat16() for k, v in hf.items()}, written[-1], metadata={"format": "pt"})
        written += _write_folder(diffusers / "tokenizer", tokenizer)
    return written
