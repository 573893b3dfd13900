"""The UMT5 tokenizer: Wan's prompt cleaning, then SentencePiece (or an HF ``tokenizer.json``).

Sources, in the order the loader tries them: the ``tokenizer=`` argument (a ``*.model``
SentencePiece file, a ``tokenizer.json``, or a folder holding one), the ``spiece_model`` tensor
embedded in ComfyUI files, then ``tokenizer.json`` / ``spiece.model`` beside the checkpoint, in
``google/umt5-xxl/`` beside it (official Wan folders) or in a sibling ``tokenizer/`` folder
(diffusers). ``tokenizer.json`` is used only when the ``tokenizers`` library is installed; it is
preferred in a folder because it is what the official Wan code tokenizes with.
"""

from __future__ import annotations

import html
import re
import warnings
from pathlib import Path

from ..checkpoint import CheckpointError
from ..optional_deps import require

EOS_ID = 1  # "</s>" in every T5 vocabulary
PAD_ID = 0


def clean_prompt(text: str) -> str:
    """Wan's ``clean='whitespace'``: fix mojibake, unescape HTML twice, collapse whitespace."""
    text = html.unescape(html.unescape(require("ftfy", "Wan's prompt cleaning").fix_text(text))).strip()
    return re.sub(r"\s+", " ", text).strip()


class UMT5Tokenizer:
    """``tokenizer(prompts, max_length)`` -> one id list per prompt, cleaned, ending in EOS."""

    def __init__(self, encode, source: str):
        self._encode = encode  # str -> list[int], without EOS
        self.source = source

    @classmethod
    def from_sentencepiece(cls, model: bytes | Path, source: str) -> "UMT5Tokenizer":
        import sentencepiece

        try:
            sp = (sentencepiece.SentencePieceProcessor(model_proto=model) if isinstance(model, bytes)
                  else sentencepiece.SentencePieceProcessor(model_file=str(model)))
        except (RuntimeError, OSError) as e:
            raise CheckpointError(f"{source}: not a valid SentencePiece model: {e}") from e
        _check_eos(sp.id_to_piece(EOS_ID) if sp.get_piece_size() > EOS_ID else None, source)
        return cls(sp.encode, source)

    @classmethod
    def from_tokenizer_json(cls, path: Path) -> "UMT5Tokenizer":
        from tokenizers import Tokenizer

        try:
            tok = Tokenizer.from_file(str(path))
        except Exception as e:  # the Rust side raises plain Exceptions
            raise CheckpointError(f"{path}: not a valid tokenizer.json: {e}") from e
        _check_eos(tok.id_to_token(EOS_ID), str(path))
        return cls(lambda text: tok.encode(text, add_special_tokens=False).ids, str(path))

    def __call__(self, prompts: list[str], max_length: int) -> list[list[int]]:
        ids = []
        for i, prompt in enumerate(prompts):
            tokens = self._encode(clean_prompt(prompt))
            if len(tokens) >= max_length:
                warnings.warn(f"prompt {i} has {len(tokens) + 1} tokens; truncated to {max_length}: "
                              f"{prompt[:60]!r}...", stacklevel=3)
                tokens = tokens[:max_length - 1]
            ids.append(tokens + [EOS_ID])
        return ids


def _check_eos(piece: str | None, source: str) -> None:
    if piece != "</s>":
        raise CheckpointError(f"{source}: not a T5 tokenizer: id {EOS_ID} is {piece!r}, "
                              f"expected '</s>'")


def _has_tokenizers() -> bool:
    try:
        import tokenizers  # noqa: F401
    except ImportError:
        return False
    return True


def _from_file(path: Path) -> UMT5Tokenizer:
    if path.suffix == ".json":
        if not _has_tokenizers():
            raise CheckpointError(f"{path}: reading tokenizer.json needs the 'tokenizers' package "
                                  f"(pip install tokenizers), or pass the spiece.model instead")
        return UMT5Tokenizer.from_tokenizer_json(path)
    return UMT5Tokenizer.from_sentencepiece(path, str(path))


def _in_folder(folder: Path) -> Path | None:
    names = ("tokenizer.json", "spiece.model") if _has_tokenizers() else ("spiece.model",)
    return next((folder / n for n in names if (folder / n).is_file()), None)


def find_tokenizer(checkpoint: Path, given=None, embedded: bytes | None = None) -> UMT5Tokenizer:
    """The tokenizer for ``checkpoint`` (see the module docstring for the search order)."""
    if given is not None:
        given = Path(given)
        if given.is_file():
            return _from_file(given)
        found = _in_folder(given) if given.is_dir() else None
        if found is None:
            raise CheckpointError(f"tokenizer={str(given)!r}: no such file, or a folder without "
                                  f"tokenizer.json / spiece.model")
        return _from_file(found)
    if embedded is not None:
        return UMT5Tokenizer.from_sentencepiece(embedded, f"{checkpoint} (embedded spiece_model)")
    home = checkpoint if checkpoint.is_dir() else checkpoint.parent
    folders = [home, home / "google" / "umt5-xxl", home.parent / "tokenizer"]
    for folder in folders:
        found = _in_folder(folder)
        if found is not None:
            return _from_file(found)
    raise CheckpointError(
        f"{checkpoint}: no tokenizer found. The file has no embedded 'spiece_model' tensor and "
        f"there is no spiece.model or tokenizer.json in {', '.join(str(f) for f in folders)}. "
        f"Pass tokenizer=<path to spiece.model, tokenizer.json or their folder>.")
