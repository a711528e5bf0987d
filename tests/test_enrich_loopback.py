"""End-to-end enrichment against a real loopback HTTP server driven by the real openai client."""

from __future__ import annotations

import asyncio
import json
import logging
import time

import pytest
from enrich_fixtures import fast_config, make_records, read_lines, script_for

from clinalign.enrich import EndpointError, aenrich, enrich, get_preset
from clinalign.enrich.testing import LoopbackServer, ScriptedResponse, chat_completion
from clinalign.errors import ConfigError

SECRET = "sk-test-DO-NOT-LEAK-0123456789abcdef"
LABELS = ["Cardiomegaly", "Pleural Effusion", "Pneumonia", "No Finding"]


@pytest.fixture(autouse=True)
def _api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLINALIGN_TEST_KEY", SECRET)


def _run(records, config, out, **kw):
    return asyncio.run(aenrich(records, get_preset("chexpert"), config, out, **kw))


def _assert_complete(records, out):
    """Every record is in exactly one of the two files, with no duplicates."""
    done = [r["id"] for r in read_lines(out / "enriched.jsonl")]
    failed = [r["id"] for r in read_lines(out / "failures.jsonl")]
    assert len(done) == len(set(done)), "duplicate enriched records"
    assert len(failed) == len(set(failed)), "duplicate failure records"
    assert not set(done) & set(failed)
    assert set(done) | set(failed) == {r.id for r in records}
    return set(done), {r["id"]: r for r in read_lines(out / "failures.jsonl")}


def test_all_scenarios_end_in_enriched_or_failures(tmp_path):
    records = make_records(tmp_path / "img", [LABELS[i % 4] for i in range(14)])
    plan = {
        0: ["ok"],
        1: ["fenced"],
        2: ["prose"],
        3: ["violate", "ok"],  # schema violation repaired on the retry
        4: ["enum", "ok"],
        5: ["429", "ok"],
        6: ["500", "500", "ok"],
        7: ["slow", "ok"],  # past the timeout, then fine
        8: ["truncated", "truncated", "truncated"],  # never valid JSON -> invalid_json after repairs
        9: ["length"],  # finish_reason=length -> truncated, not retried
        10: ["refusal"],
        11: ["text_refusal"],
        12: ["filter"],
        13: ["violate", "violate", "violate"],  # repairs exhausted
    }
    with LoopbackServer(lambda b, n: script(b, n)) as server:
        config = fast_config(server.url, request_timeout=0.5, concurrency=6)
        script = script_for(records, "chexpert", plan, config)
        script.slow_seconds = 1.5
        result = _run(records, config, tmp_path / "out")
        done, failures = _assert_complete(records, tmp_path / "out")
    assert done == {f"r{i:03d}" for i in range(8)}
    reasons = {rid: row["reason"] for rid, row in failures.items()}
    assert reasons == {
        "r008": "invalid_json",
        "r009": "truncated",
        "r010": "refusal",
        "r011": "refusal",
        "r012": "content_filter",
        "r013": "schema_validation",
    }
    # refusals, truncation and filtering are not retried; repairs are shown to the model
    assert script.calls[9] == ["length"] and script.calls[10] == ["refusal"] and script.calls[12] == ["filter"]
    assert script.calls[13] == ["violate"] * 3
    assert "negation 'no'" in failures["r013"]["detail"]
    assert failures["r013"]["raw"] and "no effusion" in failures["r013"]["raw"]
    assert result.succeeded == 8 and result.failed == 6 and result.repairs == 2
    assert result.retries >= 4  # 429, two 500s, one timeout
    # error replies (429, two 500s) and the timed-out request carry no usage
    assert result.usage.requests == sum(len(v) for v in script.calls.values()) - 4
    rows = {r["id"]: r for r in read_lines(tmp_path / "out" / "enriched.jsonl")}
    row = rows["r003"]
    assert row["repairs"] == 1 and row["usage"]["requests"] == 2
    assert row["preset"] == "chexpert" and row["prompt_hash"] == get_preset("chexpert").prompt_hash
    assert row["t_ep"] == row["prompt"] and row["t_ep"].startswith(row["fields"]["view"])
    assert row["t_c"] and row["t_c"].startswith(row["label"])
    # the repair turn carried the validation errors back to the model
    table = result.summary_table()
    assert "Failures by reason" in table and "schema_validation: 1" in table


def test_repair_turn_shows_validation_errors(tmp_path):
    records = make_records(tmp_path / "img", ["No Finding"])
    seen: list[dict] = []

    def handler(body, number):
        seen.append(body)
        good = {
            "view": "posteroanterior",
            "key_findings": ["clear lung fields"],
            "location": ["both lungs"],
            "devices": [],
            "description": "Clear lungs with sharp costophrenic angles.",
        }
        if number == 1:  # a "No Finding" reply that mentions opacity and effusion
            good["description"] = "Small right basal opacity, possible effusion."
        return ScriptedResponse(body=chat_completion(json.dumps(good)))

    with LoopbackServer(handler) as server:
        result = _run(records, fast_config(server.url), tmp_path / "out")
    assert result.succeeded == 1
    repair = seen[1]["messages"][-1]["content"]
    assert "opacit*" in repair and "effusion" in repair and "No Finding" in repair
    assert seen[1]["messages"][-2]["role"] == "assistant"


def test_request_shape_json_schema_and_image(tmp_path):
    records = make_records(tmp_path / "img", ["No Finding"], size=1500)
    with LoopbackServer(lambda b, n: script(b, n)) as server:
        config = fast_config(server.url, max_image_side=256)
        script = script_for(records, "chexpert", {}, config)
        _run(records, config, tmp_path / "out")
        body = server.requests[0]
        auth = server.headers[0].get("Authorization") or server.headers[0].get("authorization")
    assert auth == f"Bearer {SECRET}"
    assert body["model"] == "loopback-model"
    fmt = body["response_format"]
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["strict"] is True
    enum = fmt["json_schema"]["schema"]["properties"]["key_findings"]["items"]["enum"]
    assert "clear lung fields" in enum and "patchy airspace opacity" not in enum  # narrowed for No Finding
    url = body["messages"][1]["content"][1]["image_url"]["url"]
    assert url.startswith("data:image/jpeg;base64,")
    import base64
    import io

    from PIL import Image

    image = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
    assert max(image.size) == 256
    assert 'label is "No Finding"' in body["messages"][0]["content"]


def test_text_mode_sends_no_response_format(tmp_path):
    records = make_records(tmp_path / "img", ["Pneumonia"])
    with LoopbackServer(lambda b, n: script(b, n)) as server:
        config = fast_config(server.url, response_format="text")
        script = script_for(records, "chexpert", {0: ["fenced"]}, config)
        result = _run(records, config, tmp_path / "out")
        assert "response_format" not in server.requests[0]
    assert result.succeeded == 1


def test_retry_after_is_honoured(tmp_path):
    records = make_records(tmp_path / "img", ["Pneumonia"])
    delays: list[float] = []

    async def sleep(seconds: float) -> None:
        delays.append(seconds)
        await asyncio.sleep(seconds)

    with LoopbackServer(lambda b, n: script(b, n)) as server:
        config = fast_config(server.url)
        script = script_for(records, "chexpert", {0: ["429", "ok"]}, config, retry_after="1")
        start = time.perf_counter()
        result = _run(records, config, tmp_path / "out", sleep=sleep)
        elapsed = time.perf_counter() - start
    assert result.succeeded == 1 and result.retries == 1
    assert 1.0 <= delays[0] <= 1.11  # Retry-After plus at most 10 % jitter, not the 0.01 s backoff
    assert elapsed >= 1.0


def test_backoff_is_exponential_with_jitter_and_gives_up(tmp_path):
    records = make_records(tmp_path / "img", ["Pneumonia"])
    delays: list[float] = []

    async def sleep(seconds: float) -> None:
        delays.append(seconds)

    with LoopbackServer(lambda b, n: script(b, n)) as server:
        config = fast_config(server.url, max_retries=4, backoff_base=0.1, backoff_max=10.0)
        script = script_for(records, "chexpert", {0: ["500"] * 10}, config)
        result = _run(records, config, tmp_path / "out", sleep=sleep)
    assert len(delays) == 4
    for attempt, delay in enumerate(delays):
        ceiling = 0.1 * 2**attempt
        assert ceiling / 2 <= delay <= ceiling
    failure = read_lines(tmp_path / "out" / "failures.jsonl")[0]
    assert failure["reason"] == "server_error" and "gave up after 5 attempts" in failure["detail"]
    assert result.failed == 1


def test_rerun_skips_done_and_retries_failures(tmp_path):
    records = make_records(tmp_path / "img", [LABELS[i % 4] for i in range(6)])
    out = tmp_path / "out"
    with LoopbackServer(lambda b, n: script(b, n)) as server:
        config = fast_config(server.url)
        script = script_for(records, "chexpert", {1: ["refusal"], 4: ["500"] * 4}, config)  # 4 = 1 + max_retries
        first = _run(records, config, out)
        assert first.succeeded == 4 and first.failed == 2
        calls_before = len(server.requests)
        second = _run(records, config, out)
        assert len(server.requests) - calls_before == 2  # only the two failures were sent again
    assert second.already_done == 4 and second.succeeded == 2 and second.failed == 0
    done, failures = _assert_complete(records, out)
    assert len(done) == 6 and failures == {}  # failures.jsonl compacted once the records succeeded
    assert sum(row["done"] for row in second.per_label.values()) == 6


def test_no_retry_failures_option(tmp_path):
    records = make_records(tmp_path / "img", ["Pneumonia", "Pneumonia"])
    out = tmp_path / "out"
    with LoopbackServer(lambda b, n: script(b, n)) as server:
        config = fast_config(server.url)
        script = script_for(records, "chexpert", {0: ["refusal"]}, config)
        _run(records, config, out)
        n = len(server.requests)
        again = _run(records, fast_config(server.url, retry_failures=False), out)
        assert len(server.requests) == n
    assert again.succeeded == 0 and again.per_label["Pneumonia"] == {"done": 1, "failed": 1, "total": 2}


def test_crash_then_rerun_completes_the_rest(tmp_path):
    """Cancel mid-run (what Ctrl-C does to asyncio.run) and leave a torn last line (a crash mid-write)."""
    records = make_records(tmp_path / "img", [LABELS[i % 4] for i in range(12)])
    out = tmp_path / "out"
    with LoopbackServer(lambda b, n: script(b, n)) as server:
        config = fast_config(server.url, concurrency=2)
        script = script_for(records, "chexpert", {i: ["slow"] for i in range(4, 12)}, config)
        script.slow_seconds = 0.3

        async def interrupted() -> None:
            task = asyncio.create_task(aenrich(records, get_preset("chexpert"), config, out))
            while len(read_lines(out / "enriched.jsonl")) < 4:
                await asyncio.sleep(0.02)
            await asyncio.sleep(0.1)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

        asyncio.run(interrupted())
        partial = read_lines(out / "enriched.jsonl")
        assert 4 <= len(partial) < 12
        with open(out / "enriched.jsonl", "a") as handle:
            handle.write('{"id": "r011", "fields": {"vi')  # torn write
        result = _run(records, fast_config(server.url, concurrency=4), out)
    done, failures = _assert_complete(records, out)
    assert len(done) == 12 and not failures
    assert result.already_done == len(partial) and result.succeeded == 12 - len(partial)


def test_api_key_never_written_or_logged(tmp_path, caplog, capsys):
    records = make_records(tmp_path / "img", ["Pneumonia", "Cardiomegaly", "No Finding"])

    def handler(body, number):
        if number == 1:  # an endpoint that echoes the key in its error message
            return ScriptedResponse(status=400, body={"error": {"message": f"bad request for key {SECRET}"}})
        if number == 2:
            return ScriptedResponse(body=chat_completion(f"not json, key was {SECRET}"))
        return ScriptedResponse(body=chat_completion(f"still not json {SECRET}"))

    caplog.set_level(logging.DEBUG)
    with LoopbackServer(handler) as server:
        config = fast_config(server.url, concurrency=1, max_repairs=1, progress=True)
        result = enrich(records, get_preset("chexpert"), config, tmp_path / "out")
    assert result.failed == 3
    written = "".join(p.read_text() for p in (tmp_path / "out").iterdir())
    captured = capsys.readouterr()
    everything = written + caplog.text + captured.out + captured.err + result.summary_table()
    assert SECRET not in everything
    assert "***" in written  # the echoed key was redacted, not dropped silently
    saved = json.loads((tmp_path / "out" / "enrich_config.json").read_text())
    assert "base_url" not in saved and "api_key_env" not in saved and saved["model"] == "loopback-model"


def test_bad_key_stops_the_run_with_a_clear_error(tmp_path):
    records = make_records(tmp_path / "img", ["Pneumonia"] * 3)

    def handler(body, number):
        return ScriptedResponse(status=401, body={"error": {"message": "invalid api key", "type": "auth"}})

    with LoopbackServer(handler) as server, pytest.raises(EndpointError, match="CLINALIGN_TEST_KEY"):
        _run(records, fast_config(server.url), tmp_path / "out")
    assert read_lines(tmp_path / "out" / "enriched.jsonl") == []


def test_unsupported_response_format_is_reported(tmp_path):
    records = make_records(tmp_path / "img", ["Pneumonia"])

    def handler(body, number):
        return ScriptedResponse(status=400, body={"error": {"message": "response_format json_schema not supported"}})

    with LoopbackServer(handler) as server, pytest.raises(EndpointError, match="--response-format"):
        _run(records, fast_config(server.url), tmp_path / "out")


def test_unreadable_images_are_collected_not_fatal(tmp_path):
    records = make_records(tmp_path / "img", ["Pneumonia", "Pneumonia"])
    records[1].image.write_bytes(b"this is not a png")
    with LoopbackServer(lambda b, n: script(b, n)) as server:
        config = fast_config(server.url)
        script = script_for(records[:1], "chexpert", {}, config)
        result = _run(records, config, tmp_path / "out")
    assert result.succeeded == 1 and result.unreadable_images == [str(records[1].image)]
    assert read_lines(tmp_path / "out" / "failures.jsonl")[0]["reason"] == "image_unreadable"
    assert str(records[1].image) in result.summary_table()


def test_missing_key_for_openai_is_a_config_error(tmp_path, monkeypatch):
    monkeypatch.delenv("CLINALIGN_TEST_KEY")
    records = make_records(tmp_path / "img", ["Pneumonia"])
    config = fast_config("http://127.0.0.1:9/v1").model_copy(update={"base_url": None})
    with pytest.raises(ConfigError, match="CLINALIGN_TEST_KEY"):
        _run(records, config, tmp_path / "out")


def test_labels_outside_the_preset_are_rejected_before_sending(tmp_path):
    records = make_records(tmp_path / "img", ["Edema"])
    with pytest.raises(ConfigError, match="Edema"):
        _run(records, fast_config("http://127.0.0.1:9/v1"), tmp_path / "out")


def test_other_preset_in_out_dir_is_refused(tmp_path):
    records = make_records(tmp_path / "img", ["Pneumonia"])
    out = tmp_path / "out"
    out.mkdir()
    (out / "enriched.jsonl").write_text(json.dumps({"id": "x", "preset": "origa"}) + "\n")
    with pytest.raises(ConfigError, match="origa"):
        _run(records, fast_config("http://127.0.0.1:9/v1"), out)


def test_retry_after_header_forms():
    import email.utils

    from clinalign.enrich.client import _retry_after_seconds

    assert _retry_after_seconds({"retry-after-ms": "250"}) == 0.25
    assert _retry_after_seconds({"retry-after": "3"}) == 3.0
    date = email.utils.formatdate(time.time() + 20, usegmt=True)
    assert 15 <= _retry_after_seconds({"retry-after": date}) <= 21
    assert _retry_after_seconds({"retry-after": "soon"}) is None
    assert _retry_after_seconds({}) is None


def test_limit_enriches_the_first_records_only(tmp_path):
    records = make_records(tmp_path / "img", ["Pneumonia"] * 5)
    with LoopbackServer(lambda b, n: script(b, n)) as server:
        config = fast_config(server.url, limit=2)
        script = script_for(records, "chexpert", {}, config)
        result = _run(records, config, tmp_path / "out")
    assert result.total == 2
    assert sorted(r["id"] for r in read_lines(tmp_path / "out" / "enriched.jsonl")) == ["r000", "r001"]


def test_non_json_200_is_retried_then_reported(tmp_path):
    records = make_records(tmp_path / "img", ["Pneumonia", "Pneumonia"])
    with LoopbackServer(lambda b, n: script(b, n)) as server:
        config = fast_config(server.url)

        def script(body, number):
            if number <= 2:  # a proxy's HTML error page with status 200, twice
                return ScriptedResponse(body="<html>bad gateway</html>")
            return inner(body, number)

        inner = script_for(records, "chexpert", {}, config)
        result = _run(records, config, tmp_path / "out")
    assert result.succeeded == 2 and result.retries == 2
