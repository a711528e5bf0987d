"""Token budgets: counting tokens and fitting text into the text encoder's window."""

from __future__ import annotations

import math
import re
from collections.abc import Callable

from clinalign.errors import MissingDependencyError, ModelLoadError

TokenCounter = Callable[[str], int]

_PIECE_RE = re.compile(r"[A-Za-z]+|\d|[^\sA-Za-z\d]")


def approx_token_count(text: str) -> int:
    """A conservative estimate of CLIP/SigLIP BPE tokens, start/end tokens included.

    Short words count 1, longer ones 1 + ceil((len - 6) / 4) ("cardiomegaly" -> 3), each digit and
    punctuation mark 1. On clinical prose this over-counts the real CLIP tokenizer slightly, so text
    trimmed to the budget with it fits; pass a real tokenizer (``token_counter_from_tokenizer``) for
    exact counts.
    """
    count = 2
    for piece in _PIECE_RE.findall(text):
        count += 1 if len(piece) <= 6 or not piece.isalpha() else 1 + math.ceil((len(piece) - 6) / 4)
    return count


def token_counter_from_tokenizer(name_or_path: str) -> TokenCounter:
    """A counter backed by a Hugging Face tokenizer (hub id or local folder), special tokens included."""
    try:
        from transformers import AutoTokenizer
    except ImportError as exc:  # pragma: no cover - transformers is a core dependency
        raise MissingDependencyError("transformers", "counting tokens with a real tokenizer") from exc
    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path)
    except Exception as exc:
        raise ModelLoadError(
            f"cannot load tokenizer {name_or_path!r} ({exc}). Pass a local tokenizer folder or a hub id, "
            "or leave --tokenizer out to use the built-in estimate."
        ) from exc

    def count(text: str) -> int:
        return len(tokenizer(text, truncation=False)["input_ids"])

    return count


def truncate_words(text: str, max_tokens: int, counter: TokenCounter) -> str:
    """The longest word prefix of ``text`` within ``max_tokens`` (trailing punctuation trimmed)."""
    if counter(text) <= max_tokens:
        return text
    words = text.split()
    lo, hi = 0, len(words)
    while lo < hi:  # binary search for the longest fitting prefix
        mid = (lo + hi + 1) // 2
        if counter(" ".join(words[:mid])) <= max_tokens:
            lo = mid
        else:
            hi = mid - 1
    return " ".join(words[:lo]).rstrip(",;:-")
