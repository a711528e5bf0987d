"""Helpers for the enrichment tests: tiny images, records, a scripted loopback endpoint."""

from __future__ import annotations

import json
import threading
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from clinalign.data import Record
from clinalign.enrich import EnrichConfig, get_preset
from clinalign.enrich.testing import ScriptedResponse, chat_completion, request_label, valid_fields


def make_records(folder: Path, labels: list[str], *, size: int = 32) -> list[Record]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    records = []
    for i, label in enumerate(labels):
        path = folder / f"img{i:03d}.png"
        Image.fromarray(rng.integers(0, 255, (size, size), dtype=np.uint8)).save(path)
        records.append(Record(id=f"r{i:03d}", image=path, label=label, patient_id=f"p{i // 2}"))
    return records


def fast_config(url: str, **overrides: Any) -> EnrichConfig:
    values: dict[str, Any] = {
        "model": "loopback-model",
        "base_url": url,
        "api_key_env": "CLINALIGN_TEST_KEY",
        "concurrency": 4,
        "request_timeout": 5.0,
        "max_retries": 3,
        "backoff_base": 0.01,
        "backoff_max": 0.05,
        "max_repairs": 2,
        "progress": False,
    }
    values.update(overrides)
    return EnrichConfig(**values)


class Script:
    """A handler that replies per image according to a plan keyed by the image's position in a list.

    ``plan[key]`` is a list of actions consumed one per request for that key; the key is the first 64
    characters of the image data URL after the header (unique per test image). Actions: "ok", "fenced",
    "prose", "violate", "enum", "truncated", "length", "refusal", "text_refusal", "filter", "429", "500",
    "slow", "empty". When a key's plan is exhausted the reply is "ok".
    """

    def __init__(self, preset_name: str, plan: dict[int, list[str]] | None = None, *, retry_after: str = "0") -> None:
        self.preset = get_preset(preset_name)
        self.plan = {k: list(v) for k, v in (plan or {}).items()}
        self.retry_after = retry_after
        self.images: dict[str, int] = {}
        self.calls: dict[int, list[str]] = defaultdict(list)
        self.lock = threading.Lock()
        self.slow_seconds = 2.0

    def register_images(self, urls: list[str]) -> None:
        for index, url in enumerate(urls):
            self.images[url] = index

    @staticmethod
    def image_url(body: dict[str, Any]) -> str | None:
        for message in body.get("messages", []):
            content = message.get("content")
            if isinstance(content, list):
                for part in content:
                    if part.get("type") == "image_url":
                        return part["image_url"]["url"]
        return None

    def __call__(self, body: dict[str, Any], number: int) -> ScriptedResponse:
        url = self.image_url(body)
        index = self.images.get(url, -1) if url else -1
        with self.lock:
            actions = self.plan.get(index, [])
            action = actions.pop(0) if actions else "ok"
            self.calls[index].append(action)
        label = request_label(body)
        good = valid_fields(self.preset, label)
        text = json.dumps(good)
        if action == "ok":
            return ScriptedResponse(body=chat_completion(text))
        if action == "fenced":
            return ScriptedResponse(body=chat_completion(f"Here is the JSON:\n```json\n{text}\n```\nDone."))
        if action == "prose":
            return ScriptedResponse(body=chat_completion(f"Sure. {text} Hope this helps."))
        if action == "violate":  # a negation: must be repaired
            bad = dict(good, description="no effusion and no pneumothorax")
            return ScriptedResponse(body=chat_completion(json.dumps(bad)))
        if action == "enum":
            field = next(f.name for f in self.preset.spec.fields if f.type == "enum")
            return ScriptedResponse(body=chat_completion(json.dumps(dict(good, **{field: "not-a-value"}))))
        if action == "truncated":  # cut-off JSON without finish_reason=length (some servers)
            return ScriptedResponse(body=chat_completion(text[: len(text) // 2]))
        if action == "length":
            return ScriptedResponse(body=chat_completion(text[: len(text) // 2], finish_reason="length"))
        if action == "refusal":
            return ScriptedResponse(body=chat_completion(None, refusal="I can't help with medical images."))
        if action == "text_refusal":
            return ScriptedResponse(body=chat_completion("I'm sorry, but I can't describe this image."))
        if action == "filter":
            return ScriptedResponse(body=chat_completion("", finish_reason="content_filter"))
        if action == "429":
            error = {"error": {"message": "rate limited", "type": "rate_limit", "code": "rate_limit"}}
            return ScriptedResponse(status=429, body=error, headers={"Retry-After": self.retry_after})
        if action == "500":
            return ScriptedResponse(status=500, body={"error": {"message": "boom", "type": "server_error"}})
        if action == "slow":
            return ScriptedResponse(body=chat_completion(text), delay=self.slow_seconds)
        raise AssertionError(f"unknown action {action}")


def script_for(records: list[Record], preset_name: str, plan: dict[int, list[str]], config: EnrichConfig, **kw: Any):
    """A :class:`Script` that recognises ``records`` by the exact data URL the client will send."""
    from clinalign.enrich.client import image_data_url

    script = Script(preset_name, plan, **kw)
    script.register_images(
        [image_data_url(r.image, max_side=config.max_image_side, quality=config.jpeg_quality) for r in records]
    )
    return script


def read_lines(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


Handler = Callable[[dict[str, Any], int], ScriptedResponse]
