"""The chat client: one request with retries, and one validated answer with repair turns.

Talks to any OpenAI-compatible ``/v1/chat/completions`` endpoint through the ``openai`` SDK (imported
lazily). The SDK's own retries are turned off so that retries, backoff and their accounting are ours:
exponential backoff with jitter on 429, 5xx, timeouts and connection errors, honouring ``Retry-After``.
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import io
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ValidationError

from clinalign.enrich.config import EnrichConfig
from clinalign.enrich.parsing import JSONExtractError, extract_json, looks_like_refusal
from clinalign.enrich.pricing import Usage
from clinalign.errors import ClinAlignError, ConfigError, MissingDependencyError

logger = logging.getLogger("clinalign.enrich")

# Placeholder key for endpoints that ignore authentication (vLLM, Ollama): the SDK requires a string.
_NO_KEY = "not-needed"
# Longest server-requested wait honoured (seconds), unless backoff_max is larger.
_RETRY_AFTER_CAP = 300.0
# A run stops when its first this-many request attempts all failed the same way (and none succeeded): a
# wrong URL or a server that is not an OpenAI-compatible API would otherwise fail every record, one by one.
EARLY_FAILURE_LIMIT = 8
# Failure kinds that point at the endpoint rather than at one record.
_ENDPOINT_KINDS = ("connection_error", "bad_response", "bad_request")


class EndpointError(ClinAlignError):
    """The endpoint rejects every request (bad key, unknown model, unsupported option): the run stops."""


class RequestFailed(Exception):
    """One record's request failed for good; ``reason`` is a stable code written to failures.jsonl."""

    def __init__(self, reason: str, detail: str, raw: str | None = None, usage: Usage | None = None) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.raw = raw
        self.usage = usage or Usage()


@dataclass
class Reply:
    """One chat completion, reduced to what enrichment needs."""

    text: str
    finish_reason: str | None
    refusal: str | None
    usage: Usage = field(default_factory=Usage)


@dataclass
class ValidatedAnswer:
    """A reply that passed validation: the model instance, the raw text, usage over all turns, repairs used."""

    output: BaseModel
    raw: str
    usage: Usage
    repairs: int


def resolve_api_key(config: EnrichConfig) -> str:
    """Read the API key from ``config.api_key_env``; a custom endpoint may run without one."""
    import os

    key = os.environ.get(config.api_key_env, "").strip()
    if key:
        return key
    if config.base_url is None:
        raise ConfigError(
            f"no API key: the environment variable {config.api_key_env} is not set. Export it "
            f"(export {config.api_key_env}=...), or name another variable with --api-key-env, "
            "or point --base-url at an endpoint that needs no key (vLLM, Ollama)."
        )
    return _NO_KEY


def image_data_url(path: Any, *, max_side: int, quality: int) -> str:
    """Load an image robustly, downscale its longer side to ``max_side`` and return a JPEG data URL."""
    from PIL import Image

    from clinalign.data.images import load_image

    image = load_image(path)
    if max(image.size) > max_side:
        image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _retry_after_seconds(headers: Any) -> float | None:
    """Seconds the server asks us to wait (``retry-after-ms``, ``Retry-After`` seconds or HTTP date)."""
    if headers is None:
        return None
    value = headers.get("retry-after-ms")
    if value:
        try:
            return max(0.0, float(value) / 1000.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            parsed = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        return max(0.0, parsed.timestamp() - time.time())


def _error_text(exc: Exception, limit: int = 300) -> str:
    text = str(exc)
    return text if len(text) <= limit else text[:limit] + "..."


def response_format_param(config: EnrichConfig, name: str, schema: dict[str, Any]) -> dict[str, Any] | None:
    """The ``response_format`` request field for ``config.response_format``."""
    if config.response_format == "json_schema":
        return {"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": config.strict_schema}}
    if config.response_format == "json_object":
        return {"type": "json_object"}
    return None


class ChatClient:
    """Async chat completions with bounded retries; one instance per run, shared by all workers.

    Args:
        config: the run's settings (model, timeouts, retries, backoff).
        api_key: the key itself (read by the caller from the environment; never logged or stored).
        sleep: awaitable used between retries (tests pass a recorder).
        rng: jitter source.
    """

    def __init__(
        self,
        config: EnrichConfig,
        api_key: str,
        *,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        rng: random.Random | None = None,
        early_failure_limit: int = EARLY_FAILURE_LIMIT,
    ) -> None:
        try:
            import openai
        except ImportError as exc:  # pragma: no cover - openai is a core dependency
            raise MissingDependencyError("openai", "MLLM enrichment") from exc
        self._openai = openai
        self.config = config
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._client = openai.AsyncOpenAI(
            api_key=api_key,
            base_url=config.base_url,
            timeout=config.request_timeout,
            max_retries=0,  # retries are ours: counted, logged and honouring Retry-After
        )
        self.retries = 0
        self.early_failure_limit = early_failure_limit
        self._successes = 0
        self._attempt_failures: list[tuple[str, str]] = []  # (kind, detail) of failed attempts before any success
        from openai.types.chat import ChatCompletion

        self._completion_type = ChatCompletion

    async def aclose(self) -> None:
        await self._client.close()

    @property
    def endpoint(self) -> str:
        return self.config.base_url or "https://api.openai.com/v1"

    def diagnosis(self) -> str | None:
        """What is wrong with the endpoint when every attempt so far failed the same way and none succeeded."""
        if self._successes or not self._attempt_failures:
            return None
        kinds = {kind for kind, _ in self._attempt_failures}
        if len(kinds) != 1 or not kinds <= set(_ENDPOINT_KINDS):
            return None
        kind, detail = self._attempt_failures[-1]
        n = len(self._attempt_failures)
        where = f"{self.endpoint}/chat/completions"
        if kind == "connection_error":
            problem = f"could not connect to {where} ({detail})"
            check = (
                "Is the server running and reachable? Check the host and port in --base-url "
                "(an OpenAI-compatible URL usually ends in /v1, e.g. http://localhost:8000/v1)."
            )
        elif kind == "bad_response":
            problem = f"{where} answered with something that is not a chat completion ({detail})"
            check = (
                "Check that --base-url points at an OpenAI-compatible API, not a web page or proxy login, and "
                "that it ends in /v1 (e.g. http://localhost:8000/v1)."
            )
        else:
            problem = f"{where} rejected the request ({detail})"
            check = (
                f"Check that model '{self.config.model}' accepts images and the request options "
                "(--response-format, --max-tokens-param)."
            )
        return f"the first {n} request attempt(s) all failed the same way: {problem}. {check}"

    def _record_attempt_failure(self, kind: str, detail: str) -> None:
        if self._successes:
            return
        self._attempt_failures.append((kind, detail))
        if len(self._attempt_failures) >= self.early_failure_limit:
            message = self.diagnosis()
            if message is not None:
                raise EndpointError(f"stopped early: {message}")

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            # the server knows its load: wait what it asks, plus a little jitter to spread the herd;
            # capped so a misconfigured header (hours) cannot stall the run silently
            retry_after = min(retry_after, max(self.config.backoff_max, _RETRY_AFTER_CAP))
            return retry_after + self._rng.uniform(0, 0.1 * max(retry_after, 0.1))
        ceiling = min(self.config.backoff_max, self.config.backoff_base * (2**attempt))
        return self._rng.uniform(ceiling / 2, ceiling)  # "equal jitter": at least half the exponential delay

    async def complete(self, messages: list[dict[str, Any]], response_format: dict[str, Any] | None) -> Reply:
        """Send one chat completion, retrying transient errors.

        Raises :class:`RequestFailed` when this record cannot be done, :class:`EndpointError` when no record can.
        """
        openai = self._openai
        kwargs: dict[str, Any] = {
            "model": self.config.model,
            "messages": messages,
            "temperature": self.config.temperature,
            self.config.max_tokens_param: self.config.max_tokens,
        }
        if response_format is not None:
            kwargs["response_format"] = response_format
        attempt = 0
        while True:
            retry_after: float | None = None
            try:
                # The SDK's documented low-level post: typed ``create()`` walks the whole body (base64 image,
                # JSON schema) through its parameter transformer, measured at ~3 ms CPU per request, which
                # capped bench throughput at concurrency 32 on 2 cores. Errors, timeouts and parsing are the same.
                response = await self._client.post("/chat/completions", body=kwargs, cast_to=self._completion_type)
            except openai.APITimeoutError as exc:
                reason, detail = "timeout", f"no reply within {self.config.request_timeout:g} s ({_error_text(exc)})"
            except openai.APIConnectionError as exc:
                reason, detail = "connection_error", _error_text(exc)
            except (openai.AuthenticationError, openai.PermissionDeniedError) as exc:
                raise EndpointError(
                    f"the endpoint rejected the API key (HTTP {exc.status_code}). Check the key in the environment "
                    f"variable {self.config.api_key_env} (or choose another with --api-key-env) and its access to "
                    f"model '{self.config.model}'."
                ) from None
            except openai.NotFoundError as exc:
                raise EndpointError(
                    f"HTTP 404 from the endpoint: model '{self.config.model}' or the URL "
                    f"'{self.config.base_url or 'https://api.openai.com/v1'}' was not found ({_error_text(exc, 200)}). "
                    "Check --model and --base-url (it usually ends in /v1)."
                ) from None
            except openai.APIStatusError as exc:
                status = exc.status_code
                if status == 429:
                    reason = "rate_limited"
                elif status >= 500 or status in (408, 409):
                    reason = "server_error"
                else:
                    text = _error_text(exc, 400)
                    if "response_format" in text or "json_schema" in text:
                        raise EndpointError(
                            f"the endpoint does not accept response_format={self.config.response_format} "
                            f"(HTTP {status}: {text}). Rerun with --response-format json_object or "
                            "--response-format text."
                        ) from None
                    self._record_attempt_failure("bad_request", f"HTTP {status}: {_error_text(exc, 200)}")
                    raise RequestFailed("bad_request", f"HTTP {status}: {text}") from None
                detail = f"HTTP {status}: {_error_text(exc)}"
                retry_after = _retry_after_seconds(exc.response.headers)
            except (openai.APIResponseValidationError, ValueError) as exc:
                # a 200 whose body is not a chat completion (e.g. an HTML page from a proxy): often transient
                reason, detail = "bad_response", f"the endpoint's reply is not a chat completion ({_error_text(exc)})"
            else:
                if isinstance(response, self._completion_type):
                    self._successes += 1
                    return self._reply(response)
                # the SDK hands back the body as text when it is not JSON (e.g. an HTML page with status 200)
                shown = " ".join(str(response).split())[:160] or "an empty body"
                reason, detail = "bad_response", f"the endpoint's reply is not a chat completion: {shown!r}"
            if reason in _ENDPOINT_KINDS:
                self._record_attempt_failure(reason, detail)
            if attempt >= self.config.max_retries:
                raise RequestFailed(reason, f"{detail} (gave up after {attempt + 1} attempts)")
            delay = self._backoff(attempt, retry_after)
            self.retries += 1
            logger.info("retrying after %s (%s), attempt %d, waiting %.2f s", reason, detail, attempt + 2, delay)
            await self._sleep(delay)
            attempt += 1

    @staticmethod
    def _reply(response: Any) -> Reply:
        usage = Usage(requests=1)
        if getattr(response, "usage", None) is not None:
            usage.prompt_tokens = int(response.usage.prompt_tokens or 0)
            usage.completion_tokens = int(response.usage.completion_tokens or 0)
        choices = getattr(response, "choices", None) or []
        if not choices:
            return Reply(text="", finish_reason="empty", refusal=None, usage=usage)
        choice = choices[0]
        message = choice.message
        return Reply(
            text=message.content or "",
            finish_reason=choice.finish_reason,
            refusal=getattr(message, "refusal", None),
            usage=usage,
        )


def _validation_problems(exc: ValidationError) -> str:
    lines = []
    for error in exc.errors(include_url=False):
        where = ".".join(str(p) for p in error["loc"]) or "(whole object)"
        message = error["msg"].removeprefix("Value error, ")
        lines.append(f"- {where}: {message}")
    return "\n".join(lines)


REPAIR_PROMPT = (
    "Your reply did not pass validation:\n{problems}\n"
    "Return the corrected JSON object only, with every field, following all rules and limits."
)


class InvalidReply(Exception):
    """A reply that a repair turn may fix: ``reason`` is ``invalid_json`` or ``schema_validation``."""

    def __init__(self, reason: str, problems: str) -> None:
        super().__init__(f"{reason}: {problems}")
        self.reason = reason
        self.problems = problems


def reply_from_body(body: dict[str, Any]) -> Reply:
    """A :class:`Reply` from a chat-completion response body (a batch output line's ``response.body``).

    Parsed with the SDK's own ``ChatCompletion`` model, then reduced exactly as a live response is.
    """
    from openai.types.chat import ChatCompletion

    try:
        completion = ChatCompletion.model_validate(body)
    except ValidationError as exc:
        raise ValueError(f"not a chat completion:\n{_validation_problems(exc)}") from None
    return ChatClient._reply(completion)


def judge_reply(reply: Reply, validate: Callable[[dict[str, Any]], BaseModel], *, max_tokens: int) -> BaseModel:
    """Validate one reply: the single check live and batch enrichment share.

    Returns the validated model instance. Raises :class:`RequestFailed` for replies no repair turn can fix
    (``refusal``, ``truncated``, ``content_filter``, ``empty_reply``) and :class:`InvalidReply` for replies
    a repair turn may fix (``invalid_json``, ``schema_validation``; ``problems`` is what the turn shows).
    """
    usage = reply.usage
    if reply.refusal:
        raise RequestFailed("refusal", f"the model refused: {reply.refusal[:300]}", reply.refusal, usage)
    if reply.finish_reason == "length":
        raise RequestFailed(
            "truncated", f"the reply hit the token limit ({max_tokens}); raise --max-tokens", reply.text, usage
        )
    if reply.finish_reason == "content_filter":
        raise RequestFailed("content_filter", "the endpoint's content filter stopped the reply", reply.text, usage)
    if reply.finish_reason == "empty":
        raise RequestFailed("empty_reply", "the endpoint returned no choices", reply.text, usage)
    try:
        data = extract_json(reply.text)
        return validate(data)
    except JSONExtractError as exc:
        if looks_like_refusal(reply.text):
            raise RequestFailed("refusal", f"the model refused: {reply.text[:300]}", reply.text, usage) from None
        raise InvalidReply("invalid_json", f"- {exc}") from None
    except ValidationError as exc:
        raise InvalidReply("schema_validation", _validation_problems(exc)) from None


def repair_messages(reply_text: str, problems: str) -> list[dict[str, Any]]:
    """The two turns a repair adds: the model's invalid reply and the request to fix the listed problems."""
    return [
        {"role": "assistant", "content": reply_text},
        {"role": "user", "content": REPAIR_PROMPT.format(problems=problems)},
    ]


async def ask_validated(
    client: ChatClient,
    messages: list[dict[str, Any]],
    *,
    validate: Callable[[dict[str, Any]], BaseModel],
    response_format: dict[str, Any] | None,
    max_repairs: int,
) -> ValidatedAnswer:
    """Ask until a reply validates, with up to ``max_repairs`` repair turns that show the errors.

    A refusal, a truncated reply and a filtered reply end the attempt at once with their own reason
    (``refusal``, ``truncated``, ``content_filter``); they are not retried. Replies that are not JSON
    (``invalid_json``) or break the schema (``schema_validation``) get repair turns, then fail.
    Each reply is checked by :func:`judge_reply`, the check batch enrichment uses too.
    """
    messages = list(messages)
    usage = Usage()
    repairs = 0
    while True:
        try:
            reply = await client.complete(messages, response_format)
        except RequestFailed as exc:
            exc.usage.add(usage)
            raise
        usage.add(reply.usage)
        reply.usage = usage
        try:
            output = judge_reply(reply, validate, max_tokens=client.config.max_tokens)
            return ValidatedAnswer(output=output, raw=reply.text, usage=usage, repairs=repairs)
        except InvalidReply as exc:
            reason, problems = exc.reason, exc.problems
        if repairs >= max_repairs:
            detail = f"still invalid after {repairs} repair turn(s):\n{problems}"
            raise RequestFailed(reason, detail, reply.text, usage)
        repairs += 1
        logger.info("repair turn %d after %s:\n%s", repairs, reason, problems)
        messages += repair_messages(reply.text, problems)
