"""Worker for test_generate_distributed.py: `clinalign generate` whose rank 1 is SIGKILLed after its first image."""

from __future__ import annotations

import os
import signal
import sys

if __name__ == "__main__":
    import clinalign.utils.io as io_utils
    from clinalign.cli import main

    original = io_utils.append_jsonl
    written = {"n": 0}

    def append_then_die(path, record):  # rank 1 dies right after listing its first image
        original(path, record)
        written["n"] += 1
        if os.environ.get("RANK") == "1" and "parts" in str(path) and written["n"] >= 1:
            os.kill(os.getpid(), signal.SIGKILL)

    io_utils.append_jsonl = append_then_die
    main(sys.argv[1:])
