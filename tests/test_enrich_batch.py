"""Batch, export and import enrichment against the loopback server's Files and Batches endpoints."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from enrich_fixtures import fast_config, make_records, read_lines, script_for

from clinalign.data.enriched import iter_enriched_rows
from clinalign.enrich import enrich, get_preset
from clinalign.enrich.batch import BatchOptions, BatchRun, enrich_batch, export_requests, import_output
from clinalign.enrich.batch_state import BatchState, custom_id_base
from clinalign.enrich.testing import BatchPlan, LoopbackServer, valid_reply_handler
from clinalign.errors import DataError

KEY = "sk-batch-secret-4242"
LABELS = ["Cardiomegaly", "Pleural Effusion", "No Finding", "Pneumonia", "Cardiomegaly", "No Finding"]
# the time each row was written differs between runs; everything else must match
_VOLATILE = ("time",)


@pytest.fixture(autouse=True)
def _api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLINALIGN_TEST_KEY", KEY)


def _fast(**kw) -> BatchOptions:
    return BatchOptions(poll_initial=0.0, poll_max=0.0, **kw)


def _rows(out: Path) -> dict[str, dict]:
    rows = {}
    for _, _, row in iter_enriched_rows(out):
        assert row["id"] not in rows, f"duplicate row {row['id']}"
        rows[row["id"]] = {k: v for k, v in row.items() if k not in _VOLATILE}
    return rows


def _statuses(out: Path) -> dict[str, str]:
    state = BatchState(out)
    try:
        return {r["id"]: r["status"] for r in state.db.execute("SELECT id, status FROM records")}
    finally:
        state.close()


def _run(records, server, out, *, options=None, run_class=BatchRun, **config):
    return enrich_batch(
        records,
        get_preset("chexpert"),
        fast_config(server.url, **config),
        out,
        options=options or _fast(),
        sleep=lambda s: None,
        run_class=run_class,
    )


def test_happy_path_equals_live_mode(tmp_path):
    records = make_records(tmp_path / "img", LABELS)
    preset = get_preset("chexpert")
    with LoopbackServer(valid_reply_handler(preset)) as server:
        result = _run(records, server, tmp_path / "batch", model="gpt-4o-mini")
        live = enrich(records, preset, fast_config(server.url, model="gpt-4o-mini"), tmp_path / "live")
        assert server.batch.uploads == 1 and server.batch.creates == 1
    assert result.succeeded == len(records) and result.failed == 0
    batch_rows, live_rows = _rows(tmp_path / "batch"), _rows(tmp_path / "live")
    assert set(batch_rows) == {r.id for r in records}
    assert batch_rows == live_rows
    # 600 prompt + 300 completion tokens at half of gpt-4o-mini's $0.15 / $0.60 per 1M
    assert result.usage.prompt_tokens == 600 and result.usage.completion_tokens == 300
    assert "$0.0001 (batch price of gpt-4o-mini" in result.cost, result.cost
    assert "$0.0003 (list price of gpt-4o-mini" in live.cost, live.cost
    assert set(_statuses(tmp_path / "batch").values()) == {"validated"}
    # the request file carries the live request body under a stable custom_id
    line = json.loads((tmp_path / "batch" / "batch" / "requests-00000.jsonl").read_text().splitlines()[0])
    assert line["custom_id"] == custom_id_base(records[0].id) + "-0"
    assert line["url"] == "/v1/chat/completions" and line["method"] == "POST"
    assert line["body"]["response_format"]["type"] == "json_schema"
    assert line["body"]["response_format"]["json_schema"]["strict"] is True


def test_expired_batch_with_partial_output_then_rerun_completes(tmp_path):
    records = make_records(tmp_path / "img", LABELS)
    preset = get_preset("chexpert")
    out = tmp_path / "out"
    # the first batch answers 2 of 6 requests, then expires; nobody waits for the follow-up batch
    plans = [BatchPlan(polls=0, expire_after=2), BatchPlan(polls=3)]
    with LoopbackServer(valid_reply_handler(preset), batch_plans=plans) as server:
        first = _run(records, server, out, options=_fast(wait=False))
        assert first.succeeded == 2
        statuses = _statuses(out)
        assert sorted(statuses.values()).count("validated") == 2
        assert sorted(statuses.values()).count("submitted") == 4  # re-sent in a second batch, not awaited
        second = _run(records, server, out)
        assert server.batch.creates == 2 and server.batch.uploads == 2
        assert len(server.requests) == len(records)  # no request answered twice
    assert second.succeeded == 4 and second.already_done == 2
    assert set(_statuses(out).values()) == {"validated"}
    assert set(_rows(out)) == {r.id for r in records}
    assert json.loads((out / "enriched" / "index.json").read_text())["rows"] == len(records)


def test_expired_requests_listed_in_the_error_file_are_resent(tmp_path):
    records = make_records(tmp_path / "img", LABELS)
    preset = get_preset("chexpert")
    plans = [BatchPlan(expire_after=3, expired_to_error_file=True)]
    with LoopbackServer(valid_reply_handler(preset), batch_plans=plans) as server:
        result = _run(records, server, tmp_path / "out")
        assert server.batch.creates == 2
    assert result.succeeded == len(records) and result.retries == 0
    assert set(_rows(tmp_path / "out")) == {r.id for r in records}


def test_error_file_and_invalid_replies_go_through_repair(tmp_path):
    records = make_records(tmp_path / "img", LABELS)
    config = fast_config("http://unused")
    # record 0: invalid JSON then valid; record 1: a negation (schema rule) then valid; record 2: refusal then
    # valid; record 3: refused every time (fails after max_repairs); record 4: in the error file once
    plan = {0: ["truncated"], 1: ["violate"], 2: ["refusal"], 3: ["refusal"] * 5}
    script = script_for(records, "chexpert", plan, config)
    failing = custom_id_base(records[4].id) + "-0"
    plans = [BatchPlan(error_ids=lambda cid: cid == failing)]
    with LoopbackServer(script, batch_plans=plans) as server:
        result = _run(records, server, tmp_path / "out")
        repair_bodies = [b for b in server.requests if len(b["messages"]) > 2]
    statuses = _statuses(tmp_path / "out")
    assert statuses.pop(records[3].id) == "failed"
    assert set(statuses.values()) == {"validated"}
    failures = read_lines(tmp_path / "out" / "failures.jsonl")
    assert [(f["id"], f["reason"]) for f in failures] == [(records[3].id, "refusal")]
    # two repair turns show the model its errors (invalid JSON, the negation rule), as live mode does
    assert len(repair_bodies) == 2
    assert all("did not pass validation" in b["messages"][-1]["content"] for b in repair_bodies)
    assert result.retries == 1  # record 4's error-file line
    rows = _rows(tmp_path / "out")
    assert rows[records[0].id]["repairs"] == 1 and rows[records[4].id]["repairs"] == 0
    assert script.calls[3] == ["refusal"] * 3  # first request + max_repairs (2) re-asks


def test_killed_between_upload_and_create_then_rerun(tmp_path):
    records = make_records(tmp_path / "img", LABELS)
    preset = get_preset("chexpert")

    class Killed(BatchRun):
        def after_upload(self, job: int) -> None:
            raise KeyboardInterrupt

    with LoopbackServer(valid_reply_handler(preset)) as server:
        with pytest.raises(KeyboardInterrupt):
            _run(records, server, tmp_path / "out", run_class=Killed)
        assert server.batch.uploads == 1 and server.batch.creates == 0
        result = _run(records, server, tmp_path / "out")
        assert server.batch.uploads == 1 and server.batch.creates == 1
        assert len(server.requests) == len(records)
    assert result.succeeded == len(records)
    assert set(_rows(tmp_path / "out")) == {r.id for r in records}


def test_upload_whose_id_was_not_saved_is_found_again(tmp_path, monkeypatch):
    records = make_records(tmp_path / "img", LABELS)
    preset = get_preset("chexpert")
    from clinalign.enrich.batch_state import BatchState as State

    original = State.update_job

    def lose_upload(self, job, **values):  # killed after the upload returned, before its id was saved
        if values.get("state") == "uploaded":
            raise KeyboardInterrupt
        original(self, job, **values)

    with LoopbackServer(valid_reply_handler(preset)) as server:
        monkeypatch.setattr(State, "update_job", lose_upload)
        with pytest.raises(KeyboardInterrupt):
            _run(records, server, tmp_path / "out")
        monkeypatch.setattr(State, "update_job", original)
        _run(records, server, tmp_path / "out")
        assert server.batch.uploads == 1 and server.batch.creates == 1


def test_rerun_after_the_batch_finished_unwatched(tmp_path):
    records = make_records(tmp_path / "img", LABELS)
    preset = get_preset("chexpert")
    with LoopbackServer(valid_reply_handler(preset), batch_plans=[BatchPlan(polls=1)]) as server:
        first = _run(records, server, tmp_path / "out", options=_fast(wait=False))
        assert first.succeeded == 0 and set(_statuses(tmp_path / "out").values()) == {"submitted"}
        server.batch.retrieve("batch_000000")  # someone else's poll: the batch ends while nobody watches
        server.batch.retrieve("batch_000000")
        assert server.batch.batches["batch_000000"]["status"] == "completed"
        second = _run(records, server, tmp_path / "out")
        third = _run(records, server, tmp_path / "out")  # after completion: nothing is sent again
        assert server.batch.uploads == 1 and server.batch.creates == 1 and len(server.requests) == len(records)
    assert second.succeeded == len(records) and third.succeeded == 0 and third.already_done == len(records)
    assert len(_rows(tmp_path / "out")) == len(records)


def test_jobs_are_split_at_the_limits(tmp_path):
    records = make_records(tmp_path / "img", LABELS * 2)
    records = [r.__class__(id=f"x{i}", image=r.image, label=r.label) for i, r in enumerate(records)]
    preset = get_preset("chexpert")
    with LoopbackServer(valid_reply_handler(preset)) as server:
        result = _run(records, server, tmp_path / "out", options=_fast(max_requests=5))
        assert server.batch.creates == 3  # 12 requests, 5 per batch
    assert result.succeeded == 12
    files = sorted((tmp_path / "out" / "batch").glob("requests-*.jsonl"))
    assert [len(f.read_text().splitlines()) for f in files] == [5, 5, 2]
    one_line = len(files[0].read_text().splitlines()[0].encode())
    with LoopbackServer(valid_reply_handler(preset)) as server:
        _run(records, server, tmp_path / "bytes", options=_fast(max_bytes=int(one_line * 4.5)))
        assert server.batch.creates == 3  # at most 4 requests fit in one file
    index = json.loads((tmp_path / "bytes" / "enriched" / "index.json").read_text())
    assert [p["rows"] for p in index["parts"]] == [4, 4, 4] and index["rows"] == 12
    assert len(_rows(tmp_path / "bytes")) == 12


def test_export_import_roundtrip_equals_live(tmp_path):
    records = make_records(tmp_path / "img", LABELS)
    preset = get_preset("chexpert")
    config = fast_config("http://unused")
    files, counts = export_requests(records, preset, config, tmp_path / "exp")
    assert counts == {"submitted": len(records)} and len(files) == 1
    # a stand-in engine: answer each request line with the loopback fake model, as vLLM run_batch would
    handler = valid_reply_handler(preset)
    output = tmp_path / "engine_output.jsonl"
    lines = []
    for n, text in enumerate(reversed(files[0].read_text().splitlines())):  # any order
        request = json.loads(text)
        body = handler(request["body"], n).body
        lines.append(
            json.dumps(
                {
                    "id": f"x{n}",
                    "custom_id": request["custom_id"],
                    "response": {"status_code": 200, "body": body},
                    "error": None,
                }
            )
        )
    output.write_text("\n".join(lines) + "\n")
    result, counts = import_output([output], preset, config, tmp_path / "exp")
    assert counts == {"validated": len(records)} and result.succeeded == len(records)
    again, _ = import_output([output], preset, config, tmp_path / "exp")  # importing twice changes nothing
    assert again.succeeded == 0
    with LoopbackServer(handler) as server:
        enrich(records, preset, fast_config(server.url), tmp_path / "live")
    assert _rows(tmp_path / "exp") == _rows(tmp_path / "live")


def test_import_of_malformed_output_names_file_and_line(tmp_path):
    records = make_records(tmp_path / "img", LABELS[:2])
    preset = get_preset("chexpert")
    config = fast_config("http://unused")
    export_requests(records, preset, config, tmp_path / "exp")
    bad = tmp_path / "bad.jsonl"
    good = {"custom_id": custom_id_base(records[0].id) + "-0", "response": {"status_code": 200, "body": {}}}
    bad.write_text(json.dumps(good) + "\n{not json\n")
    with pytest.raises(DataError, match=r"bad\.jsonl, line 2: not valid JSON"):
        import_output([bad], preset, config, tmp_path / "exp")
    bad.write_text(json.dumps({"custom_id": "rec-0000-0", "response": None}) + "\n")
    with pytest.raises(DataError, match=r"line 1: custom_id 'rec-0000-0' is not a request"):
        import_output([bad], preset, config, tmp_path / "exp")
    assert set(_statuses(tmp_path / "exp").values()) == {"submitted"}  # nothing half-imported
    assert not list((tmp_path / "exp" / "enriched").glob("part-*.jsonl"))


def test_api_key_is_never_written(tmp_path):
    records = make_records(tmp_path / "img", LABELS)
    preset = get_preset("chexpert")
    plans = [BatchPlan(expire_after=2)]
    with LoopbackServer(valid_reply_handler(preset), batch_plans=plans) as server:
        _run(records, server, tmp_path / "out")
    written = [p for p in (tmp_path / "out").rglob("*") if p.is_file()]
    assert any(p.suffix == ".sqlite" for p in written) and len(written) >= 8
    for path in written:
        assert KEY.encode() not in path.read_bytes(), path


def test_request_lines_carry_exactly_the_live_request_body(tmp_path):
    from clinalign.enrich.client import image_data_url
    from clinalign.enrich.runner import build_request

    records = make_records(tmp_path / "img", LABELS)
    preset = get_preset("chexpert")
    config = fast_config("http://unused")
    files, _ = export_requests(records, preset, config, tmp_path / "exp")
    lines = [json.loads(x) for x in files[0].read_text().splitlines()]
    assert [x["custom_id"] for x in lines] == [custom_id_base(r.id) + "-0" for r in records]
    for line, record in zip(lines, records, strict=True):
        url = image_data_url(record.image, max_side=config.max_image_side, quality=config.jpeg_quality)
        assert line["body"] == build_request(preset, record, config, url)


def test_repair_live_sends_follow_ups_as_live_requests(tmp_path):
    records = make_records(tmp_path / "img", LABELS)
    config = fast_config("http://unused")
    script = script_for(records, "chexpert", {0: ["violate"], 2: ["truncated", "truncated"]}, config)
    with LoopbackServer(script) as server:
        result = _run(records, server, tmp_path / "out", options=_fast(repair="live"))
        assert server.batch.creates == 1  # no follow-up batch
        live_bodies = server.requests[len(records) :]
    assert len(live_bodies) == 3  # record 0: one repair turn; record 2: two
    assert all("did not pass validation" in b["messages"][-1]["content"] for b in live_bodies)
    assert result.succeeded == len(records)
    rows = _rows(tmp_path / "out")
    assert rows[records[0].id]["repairs"] == 1 and rows[records[2].id]["repairs"] == 2
    assert rows[records[2].id]["usage"]["requests"] == 3


def test_live_and_batch_modes_do_not_mix_in_one_folder(tmp_path):
    from clinalign.errors import ConfigError

    records = make_records(tmp_path / "img", LABELS[:2])
    preset = get_preset("chexpert")
    with LoopbackServer(valid_reply_handler(preset)) as server:
        export_requests(records, preset, fast_config(server.url), tmp_path / "exp")
        with pytest.raises(ConfigError, match="holds a batch/export enrichment"):
            enrich(records, preset, fast_config(server.url), tmp_path / "exp")
        enrich(records, preset, fast_config(server.url), tmp_path / "live")
        with pytest.raises(ConfigError, match="holds a live enrichment"):
            _run(records, server, tmp_path / "live")


def test_rerun_with_other_records_is_refused(tmp_path):
    from clinalign.errors import ConfigError

    records = make_records(tmp_path / "img", LABELS)
    preset = get_preset("chexpert")
    config = fast_config("http://unused")
    export_requests(records, preset, config, tmp_path / "exp")
    with pytest.raises(ConfigError, match="differ from those"):
        export_requests(records[:-1], preset, config, tmp_path / "exp")
    files, counts = export_requests(records, preset, config, tmp_path / "exp")  # the same: nothing new to write
    assert files == [] and counts == {"submitted": len(records)}
    with pytest.raises(DataError, match="duplicate record id"):
        export_requests(records + records[:1], preset, config, tmp_path / "dup")
