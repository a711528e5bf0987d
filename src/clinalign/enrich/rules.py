"""Text rules applied to MLLM output: word limits, negations, forbidden and other-diagnosis terms.

Pure functions over strings; the preset's output model calls them from its validators, so a
violation becomes a pydantic validation error the repair turn can show the model.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable

# Negation cues: enriched prompts describe what is visible ("sharp costophrenic angles"), never what is
# absent ("no effusion"); text encoders largely ignore negation, so "no effusion" pulls towards effusion.
NEGATION_CUES: tuple[str, ...] = (
    "no",
    "not",
    "without",
    "absent",
    "absence",
    "negative for",
    "free of",
    "lack of",
    "lacks",
    "lacking",
    "none",
    "nor",
    "neither",
    "never",
    "cannot",
    "ruled out",
)
_NEGATION_RE = re.compile(
    r"\b(?:" + "|".join(re.escape(c).replace(r"\ ", r"\s+") for c in NEGATION_CUES) + r")\b|\b\w+n't\b",
    re.IGNORECASE,
)
_WORD_RE = re.compile(r"[A-Za-z0-9]+(?:['’\-][A-Za-z0-9]+)*")


def count_words(text: str) -> int:
    """Number of words (hyphenated and apostrophe words count once)."""
    return len(_WORD_RE.findall(text))


@functools.lru_cache(maxsize=4096)
def term_pattern(term: str) -> re.Pattern[str]:
    """Regex for a vocabulary term: case-insensitive, whole words, plural-tolerant; ``opacit*`` is a prefix."""
    term = term.strip()
    prefix = term.endswith("*")
    words = [re.escape(w) for w in re.split(r"[\s\-]+", term.rstrip("*")) if w]
    body = r"[\s\-]+".join(words)
    tail = r"\w*" if prefix else r"(?:s|es)?\b"
    return re.compile(r"(?<![\w])" + body + tail, re.IGNORECASE)


def find_terms(text: str, terms: Iterable[str]) -> list[str]:
    """The terms of ``terms`` that occur in ``text`` (each reported once, in the order given)."""
    return [t for t in dict.fromkeys(terms) if term_pattern(t).search(text)]


def find_negations(text: str) -> list[str]:
    """Negation cues found in ``text``, as they appear (lower-cased, de-duplicated)."""
    return list(dict.fromkeys(m.group(0).lower() for m in _NEGATION_RE.finditer(text)))
