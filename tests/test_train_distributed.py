"""A 2-process CPU (gloo) run launched with torchrun (accelerate picks the process group up from the
environment): it finishes, every rank checkpoints, and the LoRA weights stay identical across ranks.

(`accelerate launch --cpu` runs multi-CPU jobs through mpirun only, which is not installed here.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch
from test_train_support import tiny_sd_path


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _torchrun(tmp_path: Path, *extra: str) -> subprocess.CompletedProcess:
    worker = Path(__file__).with_name("test_train_distributed_worker.py")
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "ACCELERATE_USE_CPU": "true",
        "PYTHONPATH": os.pathsep.join(p for p in sys.path if p),
    }
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(_free_port())]
    cmd += [str(worker), str(tiny_sd_path()), str(tmp_path), *extra]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)


def test_two_process_gloo_run_keeps_lora_identical(tmp_path):
    from safetensors.torch import load_file

    proc = _torchrun(tmp_path)
    assert proc.returncode == 0, proc.stderr[-4000:]
    infos = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [i["world"] for i in infos] == [2, 2]
    assert all(i["steps"] == 2 and i["changed"] for i in infos)
    # metrics are averaged over processes, so both ranks report the same numbers
    assert infos[0]["history"][0]["loss/total"] == infos[1]["history"][0]["loss/total"]
    a = load_file(str(tmp_path / "lora_rank0.safetensors"))
    b = load_file(str(tmp_path / "lora_rank1.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert (tmp_path / "run" / "checkpoints" / "step-0000002" / "trainer_state.json").is_file()
    assert (tmp_path / "run" / "lora" / "pytorch_lora_weights.safetensors").is_file()


def test_a_signal_on_one_rank_stops_every_rank_after_the_same_step(tmp_path):
    proc = _torchrun(tmp_path, "signal-rank1")
    assert proc.returncode == 0, proc.stderr[-4000:]
    infos = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [i["stopped"] for i in infos] == [2, 2]
    assert [i["exit_code"] for i in infos] == [143, 143]
    checkpoints = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert checkpoints == ["step-0000002"]
