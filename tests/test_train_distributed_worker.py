"""Worker script for test_train_distributed.py (launched with `accelerate launch`; no tests here)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    import torch
    from safetensors.torch import save_file
    from test_train_support import BrightnessReward, toy_rows

    from clinalign.diffusion.lora import lora_state_dict
    from clinalign.training import DraftKTrainer, TrainConfig

    model_dir, out_dir = sys.argv[1], Path(sys.argv[2])
    mode = sys.argv[3] if len(sys.argv) > 3 else "plain"
    config = TrainConfig(
        model=model_dir, resolution=16, num_inference_steps=2, k=1, repeats=1, guidance_scale=2.0, batch_size=1,
        max_steps=2 if mode == "plain" else 4, learning_rate=1e-2, output_dir=str(out_dir / "run"),
        log_with="none", checkpoint_every=1 if mode == "plain" else 0, progress_bar=False, lambda_diff=0.2,
    )  # fmt: skip
    if mode == "signal-rank1":
        # only rank 1 receives SIGTERM, during its step 2; every rank must stop after that same step
        import os
        import signal

        from clinalign.training import TrainingInterrupted

        class SignalOnRank1(BrightnessReward):
            calls = 0

            def __call__(self, images, batch):
                self.calls += 1
                if self.calls == 2 and os.environ.get("RANK") == "1":
                    os.kill(os.getpid(), signal.SIGTERM)
                return super().__call__(images, batch)

        trainer = DraftKTrainer(rewards=[SignalOnRank1()], config=config, train_data=toy_rows(4))
        rank = trainer.accelerator.process_index
        try:
            trainer.train()
            info = {"rank": rank, "stopped": None}
        except TrainingInterrupted as stopped:
            info = {"rank": rank, "stopped": stopped.step, "exit_code": stopped.exit_code}
        (out_dir / f"rank{rank}.json").write_text(json.dumps(info))
        sys.exit(0)
    trainer = DraftKTrainer(rewards=[BrightnessReward()], config=config, train_data=toy_rows(4))
    initial = {k: v.clone() for k, v in lora_state_dict(trainer.model.unet).items()}
    result = trainer.train()
    rank = trainer.accelerator.process_index
    final = lora_state_dict(trainer.model.unet)
    save_file(final, str(out_dir / f"lora_rank{rank}.safetensors"))
    changed = any(not torch.equal(initial[k], final[k]) for k in final)
    info = {"rank": rank, "world": trainer.accelerator.num_processes, "steps": result.global_step, "changed": changed}
    info["history"] = result.history
    (out_dir / f"rank{rank}.json").write_text(json.dumps(info))
