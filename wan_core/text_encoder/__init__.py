"""UMT5-XXL text encoder: ``load_text_encoder(path).encode(prompts) -> [B, 512, 4096]``."""

from .loader import load_text_encoder
from .model import TextEncoder, UMT5Config, UMT5Encoder
from .tokenizer import UMT5Tokenizer, clean_prompt

__all__ = ["load_text_encoder", "TextEncoder", "UMT5Config", "UMT5Encoder", "UMT5Tokenizer",
           "clean_prompt"]
