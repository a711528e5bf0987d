"""Launch a CLI command (or a worker script) as a 2-process CPU (gloo) job with torchrun.

(`accelerate launch --cpu` runs multi-CPU jobs through mpirun only, which is not installed here; torchrun
sets the same environment accelerate's ``PartialState`` reads.)"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch(nproc: int, target: list[str], *, timeout: int = 600) -> subprocess.CompletedProcess[str]:
    """``torchrun --nproc_per_node nproc TARGET...`` on the CPU.

    ``target`` is ``["-m", "clinalign", ...]`` or a script and its arguments."""
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "ACCELERATE_USE_CPU": "true",
        "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), *(p for p in sys.path if p)]),
    }
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc)]
    cmd += ["--master_port", str(free_port()), *target]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
