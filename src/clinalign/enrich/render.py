"""Token budgets: counting tokens and fitting text into the text encoder's window."""

from __future__ import annotations

import functools
import gzip
import html
import importlib.util
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from clinalign.errors import MissingDependencyError, ModelLoadError

TokenCounter = Callable[[str], int]

_PIECE_RE = re.compile(r"[A-Za-z]+|\d|[^\sA-Za-z\d]")


def approx_token_count(text: str) -> int:
    """A conservative estimate of CLIP/SigLIP BPE tokens, start/end tokens included.

    Short words count 1, longer ones 1 + ceil((len - 6) / 4) ("cardiomegaly" -> 3), each digit and
    punctuation mark 1. On clinical prose this over-counts the real CLIP tokenizer slightly, so text
    trimmed to the budget with it fits; pass a real tokenizer (``token_counter_from_tokenizer``) for
    exact counts. :func:`clip_token_count` (the default) is exact for Stable Diffusion's CLIP encoders.
    """
    count = 2
    for piece in _PIECE_RE.findall(text):
        count += 1 if len(piece) <= 6 or not piece.isalpha() else 1 + math.ceil((len(piece) - 6) / 4)
    return count


# CLIP's pre-tokenizer with the stdlib `re`: letters ([^\W\d_]), single digits, runs of other symbols.
_CLIP_PAT = re.compile(r"'s|'t|'re|'ve|'m|'ll|'d|[^\W\d_]+|\d|[^\s\w]+|_+", re.IGNORECASE)


def _clip_vocab_path() -> Path | None:
    """CLIP's BPE merges file as shipped inside open_clip (found without importing open_clip, which is slow)."""
    spec = importlib.util.find_spec("open_clip")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / "bpe_simple_vocab_16e6.txt.gz"
        if path.is_file():
            return path
    return None


@functools.lru_cache(maxsize=1)
def _clip_bpe() -> tuple[dict[tuple[str, str], int], dict[int, str]] | None:
    path = _clip_vocab_path()
    if path is None:
        return None
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        merges = handle.read().split("\n")[1 : 49152 - 256 - 2 + 1]
    ranks = {tuple(m.split()): i for i, m in enumerate(merges)}
    # CLIP's reversible byte -> printable unicode map
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), 256))
    codes, extra = list(printable), 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            codes.append(256 + extra)
            extra += 1
    return ranks, {b: chr(c) for b, c in zip(printable, codes, strict=True)}  # type: ignore[return-value]


@functools.lru_cache(maxsize=65536)
def _bpe_len(token: str) -> int:
    ranks = _clip_bpe()[0]  # type: ignore[index]
    word = [*token[:-1], token[-1] + "</w>"]
    while len(word) > 1:
        pairs = {(word[i], word[i + 1]) for i in range(len(word) - 1)}
        best = min(pairs, key=lambda pair: ranks.get(pair, float("inf")))
        if best not in ranks:
            break
        merged, i = [], 0
        while i < len(word):
            if i < len(word) - 1 and (word[i], word[i + 1]) == best:
                merged.append(word[i] + word[i + 1])
                i += 2
            else:
                merged.append(word[i])
                i += 1
        word = merged
    return len(word)


def clip_token_count(text: str) -> int:
    """Tokens of ``text`` under CLIP's BPE (Stable Diffusion's text encoders), start/end tokens included.

    Uses the BPE merges file shipped with open_clip; without it, falls back to :func:`approx_token_count`.
    """
    bpe = _clip_bpe()
    if bpe is None:
        return approx_token_count(text)
    byte_map = bpe[1]
    text = re.sub(r"\s+", " ", html.unescape(html.unescape(text))).strip().lower()
    count = 2
    for token in _CLIP_PAT.findall(text):
        count += _bpe_len("".join(byte_map[b] for b in token.encode("utf-8")))
    return count


def default_token_counter() -> TokenCounter:
    """CLIP BPE counting when its merges file is available (open_clip installed), else the estimate."""
    return clip_token_count if _clip_vocab_path() is not None else approx_token_count


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


@dataclass(frozen=True)
class TokenLimit:
    """One reader of a text: its name (e.g. ``generator`` or ``critic google/medsiglip-448``), counter and limit."""

    name: str
    counter: TokenCounter
    max_tokens: int

    def describe(self) -> str:
        return f"{self.name} ({self.max_tokens} tokens)"


class TokenBudget:
    """Every tokenizer that will read a text (t_ep: the generator's and each critic's; t_c: each critic's).

    A text fits the budget when it fits every limit. :meth:`count` turns that into one number, so the
    single-counter fitting code (``Preset.render``, ``Preset.fit_checklist``) fits all limits at once:
    ``count(text) = max_i(count_i(text) - limit_i) + min_i(limit_i)``, which is ``<= max_tokens`` exactly
    when every ``count_i(text) <= limit_i``.
    """

    def __init__(self, limits: Sequence[TokenLimit]) -> None:
        if not limits:
            raise ValueError("a TokenBudget needs at least one TokenLimit")
        self.limits = list(limits)

    @property
    def max_tokens(self) -> int:
        return min(limit.max_tokens for limit in self.limits)

    def count(self, text: str) -> int:
        return max(limit.counter(text) - limit.max_tokens for limit in self.limits) + self.max_tokens

    def fits(self, text: str) -> bool:
        return all(limit.counter(text) <= limit.max_tokens for limit in self.limits)

    def binding(self, text: str) -> TokenLimit | None:
        """The limit ``text`` overshoots most (None when it fits all)."""
        over = [(limit.counter(text) - limit.max_tokens, i) for i, limit in enumerate(self.limits)]
        worst, index = max(over)
        return self.limits[index] if worst > 0 else None

    def describe(self) -> str:
        return ", ".join(limit.describe() for limit in self.limits)


def token_limit_from_tokenizer(name_or_path: str, *, role: str = "critic", max_tokens: int | None = None) -> TokenLimit:
    """A :class:`TokenLimit` from a Hugging Face tokenizer; the limit is its ``model_max_length`` unless given."""
    try:
        from transformers import AutoTokenizer
    except ImportError as exc:  # pragma: no cover - transformers is a core dependency
        raise MissingDependencyError("transformers", "counting tokens with a real tokenizer") from exc
    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path)
    except Exception as exc:
        raise ModelLoadError(
            f"cannot load the tokenizer of {name_or_path!r} ({exc}). Pass a local model/tokenizer folder or a "
            "hub id that is in the local cache."
        ) from exc
    limit = max_tokens if max_tokens is not None else int(tokenizer.model_max_length)
    if limit <= 0 or limit > 100_000:
        raise ModelLoadError(
            f"the tokenizer of {name_or_path!r} does not state its text length (model_max_length="
            f"{tokenizer.model_max_length}); pass the limit explicitly."
        )

    def count(text: str) -> int:
        # verbose=False: over-long texts are expected here (that is what is being measured)
        return len(tokenizer(text, truncation=False, verbose=False)["input_ids"])

    return TokenLimit(name=f"{role} {name_or_path}", counter=count, max_tokens=limit)
