"""The enrichment run's settings: a flat pydantic config, saved beside the outputs (without runtime secrets)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from clinalign import __version__

# Runtime-only fields: they say where and how to connect, not what was produced; never saved.
RUNTIME_FIELDS = frozenset({"base_url", "api_key_env", "progress"})


class EnrichConfig(BaseModel):
    """Settings of one enrichment run, ordered by phase: endpoint, request, reliability, budgets, output."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    # --- endpoint
    model: str = Field(description="Model name as the endpoint knows it (e.g. gpt-4o-mini, a vLLM/Ollama model).")
    base_url: str | None = Field(
        default=None,
        description="OpenAI-compatible endpoint, e.g. http://localhost:8000/v1 (vLLM) or http://localhost:11434/v1 "
        "(Ollama); None uses the OpenAI API. Runtime only: not saved.",
    )
    api_key_env: str = Field(
        default="OPENAI_API_KEY", description="Name of the environment variable holding the API key (never saved)."
    )
    # --- request
    response_format: Literal["json_schema", "json_object", "text"] = Field(
        default="json_schema",
        description="json_schema: constrained decoding to the preset schema (OpenAI, vLLM, recent Ollama); "
        "json_object: any JSON object; text: no constraint, JSON parsed from the reply (code fences tolerated).",
    )
    strict_schema: bool = Field(default=True, description="Send json_schema with strict=true.")
    temperature: float = Field(default=0.2, ge=0.0, le=2.0, description="Sampling temperature.")
    max_tokens: int = Field(default=800, ge=16, description="Completion token limit per request.")
    max_tokens_param: Literal["max_tokens", "max_completion_tokens"] = Field(
        default="max_tokens",
        description="Request parameter carrying max_tokens (newer OpenAI reasoning models need max_completion_tokens).",
    )
    max_image_side: int = Field(
        default=768, ge=64, description="Images are downscaled so the longer side is at most this."
    )
    jpeg_quality: int = Field(default=90, ge=30, le=100, description="JPEG quality of the image sent.")
    # --- reliability
    concurrency: int = Field(default=8, ge=1, le=1024, description="Requests in flight at once.")
    request_timeout: float = Field(default=60.0, gt=0, description="Seconds before one request is abandoned.")
    max_retries: int = Field(
        default=5, ge=0, description="Retries per request on 429, 5xx, timeouts and connection errors."
    )
    backoff_base: float = Field(default=1.0, ge=0, description="First backoff delay in seconds (doubles per retry).")
    backoff_max: float = Field(default=60.0, ge=0, description="Cap of one backoff delay in seconds.")
    max_repairs: int = Field(
        default=2, ge=0, description="Repair turns after an invalid reply (each shows the model its validation errors)."
    )
    retry_failures: bool = Field(default=True, description="On a rerun, retry records listed in failures.jsonl.")
    limit: int | None = Field(default=None, ge=1, description="Enrich at most this many records (in input order).")
    # --- budgets
    prompt_max_tokens: int | None = Field(
        default=None, ge=8, description="Token budget of t_ep; None uses the preset's (CLIP: 77)."
    )
    checklist_max_tokens: int | None = Field(
        default=None, ge=8, description="Token budget of t_c; None uses the preset's (critic text encoder)."
    )
    tokenizer: str | None = Field(
        default=None, description="Tokenizer (hub id or folder) to count t_ep tokens exactly; None uses an estimate."
    )
    critic_tokenizers: list[str] = Field(
        default_factory=list,
        description="Tokenizers (hub ids or folders) of the critics and evaluators that will read t_ep and t_c; "
        "each one's own limit (model_max_length, 64 for SigLIP/MedSigLIP) applies, and t_ep/t_c fit the smallest.",
    )
    critic_max_tokens: int | None = Field(
        default=None,
        ge=8,
        description="Limit of critics/evaluators whose tokenizer is not given (counted with the t_ep tokenizer as "
        "an estimate); applies to t_ep and t_c. None: no such limit.",
    )
    price_input_per_mtok: float | None = Field(
        default=None, ge=0, description="USD per 1M prompt tokens for the cost estimate; None looks the model up."
    )
    price_output_per_mtok: float | None = Field(
        default=None, ge=0, description="USD per 1M completion tokens for the cost estimate; None looks the model up."
    )
    # --- output
    progress: bool = Field(default=True, description="Show a progress bar (runtime only).")

    @model_validator(mode="after")
    def _check(self) -> EnrichConfig:
        if self.backoff_max < self.backoff_base:
            raise ValueError(
                f"backoff_max ({self.backoff_max}) is below backoff_base ({self.backoff_base}); raise backoff_max."
            )
        if (self.price_input_per_mtok is None) != (self.price_output_per_mtok is None):
            raise ValueError("give both price_input_per_mtok and price_output_per_mtok, or neither.")
        return self

    def to_saved_dict(self) -> dict[str, Any]:
        """The config as saved beside the outputs: runtime fields dropped, stamped with class and version."""
        data = self.model_dump(mode="json", exclude=set(RUNTIME_FIELDS))
        data["_class_name"] = type(self).__name__
        data["_clinalign_version"] = __version__
        return data
