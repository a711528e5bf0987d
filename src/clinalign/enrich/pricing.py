"""Token usage and a rough cost estimate."""

from __future__ import annotations

from dataclasses import dataclass

# USD per 1M (prompt, completion) tokens, OpenAI list prices as published in 2025; matched by longest
# model-name prefix. Prices change: pass explicit prices (--price-input/--price-output) for real budgets.
KNOWN_PRICES: dict[str, tuple[float, float]] = {
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4o": (2.50, 10.00),
    "gpt-4.1-nano": (0.10, 0.40),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1": (2.00, 8.00),
}
# The Batch API's price as a fraction of the live price (OpenAI: 50% for every model listed above).
BATCH_DISCOUNT = 0.5


@dataclass
class Usage:
    """Token counts summed over requests (repair turns included)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    requests: int = 0

    def add(self, other: Usage) -> None:
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.requests += other.requests

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def to_dict(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "requests": self.requests,
        }


def lookup_price(model: str) -> tuple[float, float] | None:
    name = model.lower().split("/")[-1]
    matches = [prefix for prefix in KNOWN_PRICES if name.startswith(prefix)]
    return KNOWN_PRICES[max(matches, key=len)] if matches else None


def cost_line(
    usage: Usage,
    model: str,
    price_in: float | None = None,
    price_out: float | None = None,
    *,
    batch: bool = False,
) -> str:
    """One line: token totals and the estimated cost (or how to get one).

    With ``batch`` the Batch API price applies: ``BATCH_DISCOUNT`` times the list price, or the given prices
    as they are (pass the batch prices themselves with --price-input/--price-output).
    """
    tokens = (
        f"{usage.requests:,} requests, {usage.prompt_tokens:,} prompt + {usage.completion_tokens:,} completion tokens"
    )
    if price_in is not None and price_out is not None:
        prices, source = (price_in, price_out), "given prices"
    else:
        found = lookup_price(model)
        if found is None:
            return (
                f"Usage: {tokens}; estimated cost: unknown for model '{model}' "
                "(pass --price-input and --price-output in USD per 1M tokens; local endpoints cost nothing)."
            )
        prices, source = found, f"list price of {model}"
        if batch:
            prices = (found[0] * BATCH_DISCOUNT, found[1] * BATCH_DISCOUNT)
            source = f"batch price of {model}: {BATCH_DISCOUNT:.0%} of the list price"
    cost = usage.prompt_tokens / 1e6 * prices[0] + usage.completion_tokens / 1e6 * prices[1]
    return (
        f"Usage: {tokens}; estimated cost: ${cost:.4f} "
        f"({source}: ${prices[0]:g} / ${prices[1]:g} per 1M prompt / completion tokens)."
    )
