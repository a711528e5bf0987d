"""Pure pieces of the training loop: the stop-signal context and the resume config comparison."""

from __future__ import annotations

import os
import signal

import pytest

from clinalign.errors import ConfigError
from clinalign.training import StopRequest, TrainConfig, check_resume_config, config_changes


def test_stop_request_records_first_signal_and_restores_handlers(capsys):
    # a background job of a non-interactive shell inherits SIGINT ignored, and a second signal restores the
    # previous disposition: give SIGINT Python's default handler for this test, whatever launched pytest
    inherited = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
        with StopRequest() as stop:
            assert stop.installed and stop.signum is None
            os.kill(os.getpid(), signal.SIGTERM)  # would end the test process without the handler
            assert stop.signum == signal.SIGTERM
            assert "SIGTERM received: finishing the current step" in capsys.readouterr().err
            with pytest.raises(KeyboardInterrupt):  # a second signal gives up the graceful stop
                os.kill(os.getpid(), signal.SIGINT)
        assert {s: signal.getsignal(s) for s in before} == before
    finally:
        signal.signal(signal.SIGINT, inherited)


def test_second_signal_keeps_an_ignored_disposition():
    # launched with SIGINT ignored (nohup, a background job), the second SIGINT restores "ignored": no exit
    inherited = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with StopRequest() as stop:
            os.kill(os.getpid(), signal.SIGINT)
            assert stop.signum == signal.SIGINT
            os.kill(os.getpid(), signal.SIGINT)  # restored to SIG_IGN, then re-raised: ignored
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, inherited)


def test_config_changes_allow_list_and_schedule_length():
    saved = TrainConfig(max_steps=10, seed=0).to_dict()
    assert config_changes(saved, TrainConfig(max_steps=50, log_every=5, output_dir="elsewhere").to_dict()) == []
    changed = config_changes(saved, TrainConfig(max_steps=10, seed=1, learning_rate=3e-4).to_dict())
    assert [c.describe() for c in changed] == ["learning_rate: 0.0001 → 0.0003", "seed: 0 → 1"]
    # under a decaying schedule the run length sets every step's learning rate
    cosine = TrainConfig(max_steps=10, lr_scheduler="cosine").to_dict()
    longer = TrainConfig(max_steps=20, lr_scheduler="cosine").to_dict()
    assert [c.field for c in config_changes(cosine, longer)] == ["max_steps"]


def test_check_resume_config_rank_is_never_allowed():
    saved = TrainConfig(lora_rank=8).to_dict()
    assert check_resume_config(saved, TrainConfig(seed=5).to_dict(), checkpoint="ck", allow_change=True)
    with pytest.raises(ConfigError, match="seed: 0 → 5"):
        check_resume_config(saved, TrainConfig(seed=5).to_dict(), checkpoint="ck", allow_change=False)
    with pytest.raises(ConfigError, match="LoRA shape changed"):
        check_resume_config(saved, TrainConfig(lora_rank=4).to_dict(), checkpoint="ck", allow_change=True)
