"""UMT5 text encoder: parity with the official Wan T5Encoder + tokenizer and with transformers'
UMT5EncoderModel, every file layout, Wan's 512-row zero padding, truncation, bad input.

All on the tiny model (dim 64, 2 layers, a real 256-piece SentencePiece tokenizer), CPU, fp32.
Tolerance 1e-5 against the references: same fp32 weights, only summation order differs
(SDPA vs einsum attention), outputs are O(1).
"""

import ast
import re
import warnings

import pytest
import torch
from safetensors.torch import load_file, save_file

from reference import official_module
from wanrt.wan_core import CheckpointError, load_text_encoder
from wanrt.wan_core.prompts import NEGATIVE_PROMPT, NEGATIVE_PROMPT_FLF2V, NEGATIVE_PROMPT_I2V
from wanrt.wan_core.text_encoder import UMT5Config, UMT5Encoder, clean_prompt
from wanrt.wan_core.tiny import text_encoder as tiny
from wanrt.wan_core.tiny.text_encoder import DIFFUSERS_PIPELINES

TOL = 1e-5
DIFFUSERS = f"diffusers/{DIFFUSERS_PIPELINES[0]}"
PROMPTS = ["A cat runs on the  beach at sunset &amp; the camera pans", "dog",
           "  Neon   city street in rain\n at night ", NEGATIVE_PROMPT, ""]
LONG_PROMPT = " ".join(["golden fox jumps over the river"] * 120)  # > 512 tokens


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny")
    tiny.write(out, seed=0)
    return out


def official_context(tiny_dir, prompts):
    """The official Wan path: HuggingfaceTokenizer(clean='whitespace') + T5Encoder, trimmed to each
    prompt's length (T5EncoderModel.__call__), then zero-padded to 512 (WanModel.forward)."""
    t5, tokenizers = official_module("modules/t5"), official_module("modules/tokenizers")
    cfg = tiny.CONFIG
    encoder = t5.T5Encoder(vocab=cfg.vocab_size, dim=cfg.dim, dim_attn=cfg.num_heads * cfg.head_dim,
                           dim_ffn=cfg.ffn_dim, num_heads=cfg.num_heads, num_layers=cfg.num_layers,
                           num_buckets=cfg.num_buckets, shared_pos=False, dropout=0.0).eval()
    sd = torch.load(tiny_dir / "official/models_t5_umt5-xxl-enc-bf16.pth")
    encoder.load_state_dict({k: v.float() for k, v in sd.items()})
    tokenizer = tokenizers.HuggingfaceTokenizer(str(tiny_dir / "official/google/umt5-xxl"),
                                                seq_len=512, clean="whitespace")
    ids, mask = tokenizer(prompts, return_mask=True, add_special_tokens=True)
    with torch.no_grad():
        context = encoder(ids, mask)
    return torch.stack([torch.cat([u[:n], u.new_zeros(512 - n, u.shape[1])])
                        for u, n in zip(context, mask.sum(1))])


def test_matches_official_wan_t5_encoder(tiny_dir):
    te = load_text_encoder(tiny_dir / "official/models_t5_umt5-xxl-enc-bf16.pth")
    ours = te.encode(PROMPTS)
    assert ours.shape == (len(PROMPTS), 512, tiny.CONFIG.dim) and ours.dtype == torch.float32
    torch.testing.assert_close(ours, official_context(tiny_dir, PROMPTS), atol=TOL, rtol=0)


def test_matches_transformers_umt5_with_truncation(tiny_dir):
    from transformers import AutoTokenizer, UMT5EncoderModel

    prompts = [clean_prompt(p) for p in PROMPTS[:3] + [LONG_PROMPT]]  # HF does not clean
    hf_tok = AutoTokenizer.from_pretrained(tiny_dir / DIFFUSERS / "tokenizer")
    batch = hf_tok(prompts, padding="max_length", max_length=512, truncation=True,
                   return_tensors="pt")
    hf = UMT5EncoderModel.from_pretrained(tiny_dir / DIFFUSERS / "text_encoder",
                                          dtype=torch.float32).eval()
    with torch.no_grad():
        ref = hf(**batch).last_hidden_state * batch.attention_mask[..., None]
    te = load_text_encoder(tiny_dir / DIFFUSERS / "text_encoder")  # tokenizer: ../tokenizer
    with pytest.warns(UserWarning, match="prompt 3 has .* tokens; truncated to 512"):
        ours = te.encode(prompts)
    torch.testing.assert_close(ours, ref, atol=TOL, rtol=0)
    assert ours[3].abs().sum(-1).gt(0).all()  # the truncated prompt fills all 512 rows


def test_every_layout_loads_the_same_encoder(tiny_dir, tmp_path):
    """The tiny weights are exact in fp16, bf16 and fp8 x scale, so all layouts must agree bit for
    bit: official .pth, ComfyUI fp16 / fp8-scaled (embedded tokenizer), an all-in-one prefixed
    ComfyUI file, Kijai's official-name safetensors, the diffusers folder."""
    comfy = tiny_dir / "text_encoders/umt5_xxl_fp16.safetensors"
    fp8 = load_file(tiny_dir / "text_encoders/umt5_xxl_fp8_e4m3fn_scaled.safetensors")
    assert fp8["encoder.block.0.layer.0.SelfAttention.q.weight"].dtype == torch.float8_e4m3fn
    assert "scaled_fp8" in fp8 and any(fp8[k].item() != 1 for k in fp8 if k.endswith("scale_weight"))
    prefixed = tmp_path / "all_in_one.safetensors"
    save_file({f"text_encoders.umt5xxl.transformer.{k}": v for k, v in load_file(comfy).items()},
              prefixed)
    kijai = tmp_path / "umt5-xxl-enc-bf16.safetensors"
    save_file(torch.load(tiny_dir / "official/models_t5_umt5-xxl-enc-bf16.pth"), kijai)
    tokenizer = tiny_dir / "official/google/umt5-xxl/spiece.model"

    reference = load_text_encoder(tiny_dir / "official/models_t5_umt5-xxl-enc-bf16.pth").encode(PROMPTS)
    for path, kwargs in [(comfy, {}), (tiny_dir / "text_encoders/umt5_xxl_fp8_e4m3fn_scaled.safetensors", {}),
                         (prefixed, {}), (kijai, {"tokenizer": tokenizer}),
                         (tiny_dir / DIFFUSERS / "text_encoder", {})]:
        assert torch.equal(load_text_encoder(path, **kwargs).encode(PROMPTS), reference), path


def test_padding_rows_are_zero_and_batching_does_not_change_a_prompt(tiny_dir):
    te = load_text_encoder(tiny_dir / "text_encoders/umt5_xxl_fp16.safetensors")
    lengths = [len(ids) for ids in te.tokenizer(PROMPTS, max_length=512)]
    assert lengths[-1] == 1 and all(n > 1 for n in lengths[:-1])  # "" is just EOS
    out = te.encode(PROMPTS)
    for row, n in zip(out, lengths):
        assert row[:n].abs().sum(-1).gt(0).all() and row[n:].eq(0).all()
    torch.testing.assert_close(te.encode([PROMPTS[1]])[0], out[1], atol=TOL, rtol=0)


def test_cleaning_matches_official():
    tokenizers = official_module("modules/tokenizers")
    for text in PROMPTS + ["caf\u00c3\u00a9 &amp;lt;b&amp;gt;", "tab\there\u3000wide", "\n"]:
        assert clean_prompt(text) == tokenizers.whitespace_clean(tokenizers.basic_clean(text))


def test_embedded_spiece_and_tokenizer_json_give_the_same_ids(tiny_dir):
    from wanrt.wan_core.text_encoder.tokenizer import UMT5Tokenizer

    spiece = UMT5Tokenizer.from_sentencepiece(tiny.train_spiece(), "tiny")
    json_tok = UMT5Tokenizer.from_tokenizer_json(tiny_dir / DIFFUSERS / "tokenizer/tokenizer.json")
    prompts = PROMPTS + [LONG_PROMPT]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert spiece(prompts, max_length=512) == json_tok(prompts, max_length=512)


def test_missing_tokenizer_says_where_it_looked(tiny_dir, tmp_path):
    bare = tmp_path / "umt5-xxl-enc-bf16.safetensors"
    save_file(torch.load(tiny_dir / "official/models_t5_umt5-xxl-enc-bf16.pth"), bare)
    with pytest.raises(CheckpointError, match=r"no tokenizer found.*spiece_model.*google/umt5-xxl"):
        load_text_encoder(bare)
    with pytest.raises(CheckpointError, match="tokenizer="):
        load_text_encoder(bare, tokenizer=tmp_path / "nowhere")


def test_bad_arguments_and_files(tiny_dir):
    path = tiny_dir / "text_encoders/umt5_xxl_fp16.safetensors"
    with pytest.raises(ValueError, match="float16"):
        load_text_encoder(path, dtype=torch.float16)
    te = load_text_encoder(path)
    for bad in ([], "a cat", ["a cat", None], None):
        with pytest.raises(ValueError, match="non-empty list of strings"):
            te.encode(bad)
    not_t5 = tiny_dir / "official/google/umt5-xxl/spiece.model"
    with pytest.raises(CheckpointError):
        load_text_encoder(not_t5)


def test_full_size_config_matches_umt5_xxl_parameter_count():
    with torch.device("meta"):
        model = UMT5Encoder(UMT5Config())
    assert sum(p.numel() for p in model.parameters()) == 5_680_910_336  # official umt5_xxl encoder


def test_negative_prompts_are_wans():
    source = (official_module("modules/t5").__file__.rsplit("modules", 1)[0]
              + "configs/shared_config.py")
    tree = ast.parse(open(source, encoding="utf-8").read())
    official = next(node.value.value for node in ast.walk(tree) if isinstance(node, ast.Assign)
                    and ast.unparse(node.targets[0]) == "wan_shared_cfg.sample_neg_prompt")
    assert NEGATIVE_PROMPT == official
    assert NEGATIVE_PROMPT_I2V == "镜头晃动，" + official
    assert NEGATIVE_PROMPT_FLF2V == "镜头切换，" + official
    assert re.search("[a-zA-Z]", official)  # sanity: the string was really found ("JPEG")
