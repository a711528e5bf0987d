"""A loopback OpenAI-compatible server for tests, benchmarks and offline demos.

It implements ``POST /v1/chat/completions`` over real HTTP on 127.0.0.1, so the real ``openai``
client (timeouts, status codes, ``Retry-After``) is exercised end to end, and the Files and Batch APIs
(``/v1/files``: upload, list, retrieve, content; ``/v1/batches``: create, list, retrieve, cancel) whose
requests are answered by the same handler. :class:`BatchPlan` scripts a batch's fate (polls before it ends,
expiry with partial output, requests sent to the error file). Behaviour comes from a
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


@dataclass
class BatchPlan:
    """How the loopback server runs one batch (plans are used in creation order; then the default plan).

    Attributes:
        polls: status checks answered ``in_progress`` before the batch ends.
        expire_after: answer only the first N requests, then end ``expired`` (the rest get no reply).
        expired_to_error_file: list the unanswered requests of an expired batch in the error file with code
            ``batch_expired`` (as the OpenAI API does) instead of leaving them out.
        error_ids: custom_ids (or a predicate on them) whose requests go to the error file.
    """

    polls: int = 1
    expire_after: int | None = None
    expired_to_error_file: bool = False
    error_ids: Callable[[str], bool] | None = None


class _BatchBackend:
    """In-memory Files and Batches; a batch runs its requests through the chat handler when it ends."""

    def __init__(self, server: LoopbackServer) -> None:
        self.server = server
        self.files: dict[str, dict[str, Any]] = {}
        self.contents: dict[str, bytes] = {}
        self.batches: dict[str, dict[str, Any]] = {}
        self.polls: dict[str, int] = {}
        self.plans: dict[str, BatchPlan] = {}
        self.uploads = 0
        self.creates = 0

    def add_file(self, name: str, content: bytes, purpose: str) -> dict[str, Any]:
        file_id = f"file-{len(self.files):06d}"
        self.files[file_id] = {
            "id": file_id,
            "object": "file",
            "bytes": len(content),
            "created_at": int(time.time()),
            "filename": name,
            "purpose": purpose,
            "status": "processed",
        }
        self.contents[file_id] = content
        return self.files[file_id]

    def upload(self, content_type: str, raw: bytes) -> tuple[int, dict[str, Any]]:
        from email.parser import BytesParser
        from email.policy import HTTP

        message = BytesParser(policy=HTTP).parsebytes(b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + raw)
        fields: dict[str, tuple[str | None, bytes]] = {}
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            fields[str(name)] = (part.get_filename(), part.get_payload(decode=True) or b"")
        if "file" not in fields:
            return 400, {"error": {"message": "no file field", "type": "invalid_request_error"}}
        filename, content = fields["file"]
        purpose = fields.get("purpose", (None, b"batch"))[1].decode()
        self.uploads += 1
        return 200, self.add_file(filename or "upload.jsonl", content, purpose)

    def create(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if body.get("input_file_id") not in self.files:
            return 404, {"error": {"message": "input file not found", "type": "invalid_request_error"}}
        batch_id = f"batch_{len(self.batches):06d}"
        self.creates += 1
        plans = self.server.batch_plans
        self.plans[batch_id] = plans.pop(0) if plans else BatchPlan()
        lines = self.contents[body["input_file_id"]].decode().splitlines()
        self.batches[batch_id] = {
            "id": batch_id,
            "object": "batch",
            "endpoint": body.get("endpoint", "/v1/chat/completions"),
            "input_file_id": body["input_file_id"],
            "completion_window": body.get("completion_window", "24h"),
            "status": "validating",
            "created_at": int(time.time()),
            "metadata": body.get("metadata"),
            "output_file_id": None,
            "error_file_id": None,
            "request_counts": {"total": len([x for x in lines if x.strip()]), "completed": 0, "failed": 0},
        }
        self.polls[batch_id] = 0
        return 200, self.batches[batch_id]

    def retrieve(self, batch_id: str) -> tuple[int, dict[str, Any]]:
        batch = self.batches.get(batch_id)
        if batch is None:
            return 404, {"error": {"message": "batch not found", "type": "invalid_request_error"}}
        if batch["status"] in ("validating", "in_progress"):
            self.polls[batch_id] += 1
            if self.polls[batch_id] > self.plans[batch_id].polls:
                self._run(batch)
            else:
                batch["status"] = "in_progress"
        return 200, batch

    def cancel(self, batch_id: str) -> tuple[int, dict[str, Any]]:
        batch = self.batches.get(batch_id)
        if batch is None:
            return 404, {"error": {"message": "batch not found", "type": "invalid_request_error"}}
        if batch["status"] in ("validating", "in_progress"):
            batch["status"] = "cancelled"
        return 200, batch

    def _run(self, batch: dict[str, Any]) -> None:
        plan = self.plans[batch["id"]]
        outputs: list[str] = []
        errors: list[str] = []
        lines = [x for x in self.contents[batch["input_file_id"]].decode().splitlines() if x.strip()]
        for index, text in enumerate(lines):
            request = json.loads(text)
            cid = request["custom_id"]
            line_id = f"batch_req_{batch['id']}_{index}"
            if plan.expire_after is not None and index >= plan.expire_after:
                if plan.expired_to_error_file:
                    error = {"code": "batch_expired", "message": "This request could not be executed in time."}
                    errors.append(json.dumps({"id": line_id, "custom_id": cid, "response": None, "error": error}))
                continue
            if plan.error_ids is not None and plan.error_ids(cid):
                error = {"code": "server_error", "message": "scripted batch error"}
                errors.append(json.dumps({"id": line_id, "custom_id": cid, "response": None, "error": error}))
                continue
            body = request["body"]
            with self.server._lock:
                self.server.requests.append(body)
                number = len(self.server.requests)
            reply = self.server.handler(body, number)
            payload = reply.body if isinstance(reply.body, dict) else {"text": reply.body}
            response = {"status_code": reply.status, "request_id": f"req_{index}", "body": payload}
            target = outputs if reply.status == 200 else errors
            target.append(json.dumps({"id": line_id, "custom_id": cid, "response": response, "error": None}))
        batch["request_counts"] = {
            "total": len(lines),
            "completed": len(outputs),
            "failed": len(errors),
        }
        if outputs:
            batch["output_file_id"] = self.add_file(f"{batch['id']}_output.jsonl", _lines(outputs), "batch_output")[
                "id"
            ]
        if errors:
            batch["error_file_id"] = self.add_file(f"{batch['id']}_error.jsonl", _lines(errors), "batch_output")["id"]
        batch["status"] = "expired" if plan.expire_after is not None and plan.expire_after < len(lines) else "completed"

    def get(self, path: str, query: dict[str, list[str]]) -> tuple[int, dict[str, Any] | bytes]:
        parts = [p for p in path.split("/") if p][1:]  # drop "v1"
        if parts == ["files"]:
            purpose = query.get("purpose", [None])[0]
            data = [f for f in self.files.values() if purpose is None or f["purpose"] == purpose]
            return 200, {"object": "list", "data": data, "has_more": False}
        if len(parts) == 2 and parts[0] == "files" and parts[1] in self.files:
            return 200, self.files[parts[1]]
        if len(parts) == 3 and parts[0] == "files" and parts[2] == "content" and parts[1] in self.contents:
            return 200, self.contents[parts[1]]
        if parts == ["batches"]:
            data = sorted(self.batches.values(), key=lambda b: b["id"], reverse=True)
            return 200, {"object": "list", "data": data, "has_more": False}
        if len(parts) == 2 and parts[0] == "batches":
            return self.retrieve(parts[1])
        return 404, {"error": {"message": f"not found: {path}", "type": "not_found"}}


def _lines(rows: list[str]) -> bytes:
    return ("\n".join(rows) + "\n").encode()


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

    def __init__(
        self,
        handler: Handler,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        batch_plans: list[BatchPlan] | None = None,
    ) -> None:
        self.handler = handler
        self.batch_plans = list(batch_plans or [])
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self._lock = threading.Lock()
        self.batch_lock = threading.Lock()  # Files/Batches state (a batch takes _lock when it runs)
        self.batch = _BatchBackend(self)
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

            def _send_json(self, status: int, payload: dict[str, Any] | bytes) -> None:
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                kind = "application/octet-stream" if isinstance(payload, bytes) else "application/json"
                self._send(status, data, {"Content-Type": kind})

            def do_GET(self) -> None:
                from urllib.parse import parse_qs, urlsplit

                url = urlsplit(self.path)
                with server.batch_lock:
                    status, payload = server.batch.get(url.path, parse_qs(url.query))
                self._send_json(status, payload)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                path = self.path.split("?")[0].rstrip("/")
                if path.endswith("/v1/files"):
                    with server.batch_lock:
                        status, payload = server.batch.upload(self.headers.get("Content-Type", ""), raw)
                    self._send_json(status, payload)
                    return
                if path.endswith("/v1/batches"):
                    with server.batch_lock:
                        status, payload = server.batch.create(json.loads(raw or b"{}"))
                    self._send_json(status, payload)
                    return
                if path.endswith("/cancel") and "/v1/batches/" in path:
                    with server.batch_lock:
                        status, payload = server.batch.cancel(path.split("/")[-2])
                    self._send_json(status, payload)
                    return
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
