"""Deterministic seed derivation."""

from __future__ import annotations


def mix_seeds(*values: int) -> int:
    """A deterministic 63-bit seed from integers (splitmix-style), so nearby inputs give unrelated seeds."""
    x = 0x9E3779B97F4A7C15
    for v in values:
        x = (x ^ (int(v) & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        x ^= x >> 31
    return x & 0x7FFFFFFFFFFFFFFF
