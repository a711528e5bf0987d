"""A loopback OpenAI-compatible server for tests, benchmarks and offline demos.

It implements ``POST /v1/chat/completions`` over real HTTP on 127.0.0.1, so the real ``openai``
client (timeouts, status codes, ``Retry-After``) is exercised end to end. Behaviour comes from a
handler function ``(request_body, request_number) -> ScriptedResponse``;
:func:`valid_reply_handler` answers every request with a valid reply for a preset.

Run it standalone (e.g. for ``examples/`` or a benchmark in another process)::

    python -m clinalign.enrich.testing --preset generic --latency 0.2
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from clinalign.enrich.presets import Preset, get_preset

_LABEL_RE = re.compile(r'label(?: is)?:?\s*"([^"]+)"', re.IGNORECASE)


@dataclass
class ScriptedResponse:
    """One HTTP reply: status, JSON (dict) or raw (str) body, headers, and a delay before answering."""

    status: int = 200
    body: dict[str, Any] | str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


Handler = Callable[[dict[str, Any], int], ScriptedResponse]


def chat_completion(
    content: str | None,
    *,
    finish_reason: str = "stop",
    refusal: str | None = None,
    model: str = "loopback",
    prompt_tokens: int = 100,
    completion_tokens: int = 50,
) -> dict[str, Any]:
    """A ``chat.completion`` response body."""
    return {
        "id": f"chatcmpl-{time.monotonic_ns()}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content, "refusal": refusal},
                "finish_reason": finish_reason,
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def request_label(body: dict[str, Any]) -> str | None:
    """The label a request states (``Confirmed label: "X"`` in the user turn, or the system prompt)."""
    for message in reversed(body.get("messages", [])):
        content = message.get("content")
        texts = (
            [content] if isinstance(content, str) else [p.get("text", "") for p in content or [] if isinstance(p, dict)]
        )
        for text in texts:
            match = _LABEL_RE.search(text or "")
            if match:
                return match.group(1)
    return None


def valid_fields(preset: Preset, label: str | None) -> dict[str, Any]:
    """A reply that passes ``preset``'s validation for ``label`` (first allowed values, neutral text)."""
    phrase = "evenly distributed structures with smooth margins and uniform texture"
    data: dict[str, Any] = {}
    for spec in preset.spec.fields:
        if spec.type == "enum":
            data[spec.name] = preset.allowed_values(spec, label)[0]
        elif spec.type == "enum_list":
            data[spec.name] = preset.allowed_values(spec, label)[: max(spec.min_items, 1)]
        else:
            text = " ".join(phrase.split()[: spec.max_words])
            data[spec.name] = text if spec.type == "text" else [text] * max(spec.min_items, 1)
    preset.validate(data, label)  # the handler must never serve an invalid "valid" reply
    return data


def html_page_handler(status: int = 200) -> Handler:
    """Answer every request with an HTML page (what a web server or proxy login page returns)."""
    page = "<!DOCTYPE html><html><head><title>Welcome</title></head><body><h1>It works!</h1></body></html>"

    def handle(body: dict[str, Any], number: int) -> ScriptedResponse:
        return ScriptedResponse(status=status, body=page, headers={"Content-Type": "text/html; charset=utf-8"})

    return handle


def valid_reply_handler(preset: Preset, *, latency: float = 0.0) -> Handler:
    """Answer every request with a valid reply for the label it states, after ``latency`` seconds."""

    replies: dict[str | None, str] = {}  # per label: keep the server's CPU use (it shares the machine) small

    def handle(body: dict[str, Any], number: int) -> ScriptedResponse:
        label = request_label(body)
        if label not in replies:
            replies[label] = json.dumps(valid_fields(preset, label))
        return ScriptedResponse(
            body=chat_completion(replies[label], model=body.get("model", "loopback")), delay=latency
        )

    return handle


class _Server(ThreadingHTTPServer):
    # the default listen backlog of 5 drops SYNs when 32 clients connect at once; the kernel then
    # retries after 1 s (measured as 1.2 s outliers at concurrency 8)
    request_queue_size = 256
    daemon_threads = True


class LoopbackServer:
    """A threaded HTTP server on 127.0.0.1 implementing ``/v1/chat/completions`` with a handler.

    Use as a context manager; ``url`` is the ``base_url`` for the openai client, ``requests`` the list
    of received request bodies and ``headers`` their headers (in arrival order).
    """

    def __init__(self, handler: Handler, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.handler = handler
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self._lock = threading.Lock()
        server = self

        class _Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive: the client reuses connections as with real endpoints
            # headers and body go out in separate writes; with Nagle on, the body waits for the client's
            # delayed ACK (~40 ms per request measured on loopback)
            disable_nagle_algorithm = True

            def log_message(self, format: str, *args: Any) -> None:
                return

            def _send(self, status: int, payload: bytes, headers: dict[str, str]) -> None:
                self.send_response(status)
                headers = {"Content-Type": "application/json", **headers}  # a scripted Content-Type wins
                self.send_header("Content-Length", str(len(payload)))
                for key, value in headers.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(payload)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                if not self.path.rstrip("/").endswith("/chat/completions"):
                    self._send(404, b'{"error": {"message": "not found", "type": "not_found"}}', {})
                    return
                body = json.loads(raw or b"{}")
                with server._lock:
                    server.requests.append(body)
                    server.headers.append(dict(self.headers.items()))
                    number = len(server.requests)
                reply = server.handler(body, number)
                if reply.delay:
                    time.sleep(reply.delay)
                if isinstance(reply.body, dict):
                    payload = json.dumps(reply.body).encode()
                else:
                    payload = (reply.body or "").encode()
                # the client may have given up (timeout): then there is nobody to answer
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self._send(reply.status, payload, reply.headers)

        self._server = _Server((host, port), _Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="loopback-openai", daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/v1"

    def start(self) -> LoopbackServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> LoopbackServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> None:
    """Serve valid replies for a preset until interrupted; prints the base URL on the first line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="generic", help="preset name or YAML path")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds before each reply")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    server = LoopbackServer(valid_reply_handler(get_preset(args.preset), latency=args.latency), port=args.port)
    print(server.url, flush=True)
    try:
        server._server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server._server.server_close()


if __name__ == "__main__":
    main()
