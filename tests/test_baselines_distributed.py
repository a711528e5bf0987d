"""2-process CPU (gloo) runs of textual inversion and Diffusion-DPO: the adapters stay identical across ranks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from distributed_helpers import launch
from test_train_support import tiny_sd_path


@pytest.mark.parametrize("method", ["ti", "dpo"])
def test_two_process_gloo_run_keeps_adapters_identical(tmp_path, method):
    from safetensors.torch import load_file

    worker = Path(__file__).with_name("test_baselines_distributed_worker.py")
    proc = launch(2, [str(worker), str(tiny_sd_path()), str(tmp_path), method])
    assert proc.returncode == 0, proc.stderr[-4000:]
    infos = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [i["world"] for i in infos] == [2, 2]
    assert all(i["steps"] == 2 and i["changed"] for i in infos)
    # metrics are averaged over processes, so both ranks report the same losses
    assert [h["loss/total"] for h in infos[0]["history"]] == [h["loss/total"] for h in infos[1]["history"]]
    a = load_file(str(tmp_path / "adapter_rank0.safetensors"))
    b = load_file(str(tmp_path / "adapter_rank1.safetensors"))
    assert a and a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    if method == "ti":
        assert sorted(a) == ["textual_inversion.<c>", "textual_inversion.<e>"]
    assert (tmp_path / "run" / "checkpoints" / "step-0000002" / "trainer_state.json").is_file()
