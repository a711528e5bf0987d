"""The token budgets of one enrichment run: who reads t_ep and t_c, and fitting texts to all of them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from clinalign.enrich.config import EnrichConfig
from clinalign.enrich.presets import Preset
from clinalign.enrich.render import TokenBudget, TokenCounter, TokenLimit, token_limit_from_tokenizer


def text_budgets(
    preset: Preset, config: EnrichConfig, generator_counter: TokenCounter
) -> tuple[TokenBudget, TokenBudget]:
    """The budgets of ``t_ep`` and ``t_c``.

    ``t_ep`` is read by the generator's text encoder (``config.prompt_max_tokens`` or the preset's, 77
    for CLIP) and by every critic/evaluator (VDC); ``t_c`` only by the critics/evaluators (CCS). Each
    critic in ``config.critic_tokenizers`` counts with its own tokenizer against its own limit;
    ``config.critic_max_tokens`` adds a limit counted with the generator's tokenizer (an estimate for
    critics whose tokenizer is not at hand). Without any critic setting, ``t_c`` keeps the preset's
    checklist limit (``config.checklist_max_tokens`` overrides it), counted like ``t_ep``.
    """
    critics = [token_limit_from_tokenizer(name, role="critic") for name in config.critic_tokenizers]
    if config.critic_max_tokens is not None:
        critics.append(TokenLimit("critics (estimate)", generator_counter, config.critic_max_tokens))
    generator = TokenLimit("generator", generator_counter, config.prompt_max_tokens or preset.spec.render.max_tokens)
    checklist = [
        TokenLimit(
            "checklist limit", generator_counter, config.checklist_max_tokens or preset.spec.checklist_max_tokens
        )
    ]
    if critics and config.checklist_max_tokens is None:
        checklist = []
    return TokenBudget([generator, *critics]), TokenBudget([*checklist, *critics])


def fit_prompt(
    preset: Preset, fields: Mapping[str, Any], label: str, budget: TokenBudget
) -> tuple[str, TokenLimit | None]:
    """``t_ep`` rendered within every limit of ``budget``, and the limit that forced a trim (None: untrimmed)."""
    full = preset.render(fields, label, token_counter=lambda _: 0, max_tokens=budget.max_tokens)
    text = preset.render(fields, label, token_counter=budget.count, max_tokens=budget.max_tokens)
    return text, (budget.binding(full) if text != full else None)
