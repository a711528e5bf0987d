"""Worker script for test_baselines_distributed.py (launched with torchrun; no tests here).

Trains TI or DPO for two steps on two processes and writes this rank's adapter tensors and history."""

from __future__ import annotations

import json
import sys
from pathlib import Path

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    from safetensors.torch import save_file
    from test_train_support import toy_rows

    from clinalign import DiffusionDPOTrainer, DPOConfig, TextualInversionTrainer, TIConfig

    model_dir, out_dir, method = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
    common = dict(
        model=model_dir, resolution=16, num_inference_steps=2, guidance_scale=2.0, batch_size=1, max_steps=2,
        output_dir=str(out_dir / "run"), log_with="none", checkpoint_every=2, progress_bar=False,
    )  # fmt: skip
    rows = toy_rows(4, seed=5)
    if method == "ti":
        config = TIConfig(
            **common, placeholder_tokens={"cardiomegaly": "<c>", "effusion": "<e>"}, initializer_token="a",
            learning_rate=5e-2,
        )  # fmt: skip
        trainer = TextualInversionTrainer(config=config, train_data=rows)
    else:
        pairs = [
            {"id": f"p{i}", "prompt": rows[2 * i]["prompt"], "chosen": rows[2 * i]["image"],
             "rejected": rows[2 * i + 1]["image"]}
            for i in range(2)
        ]  # fmt: skip
        trainer = DiffusionDPOTrainer(config=DPOConfig(**common, lora_rank=4, learning_rate=1e-2), train_data=pairs)
    initial = {k: v.clone() for k, v in trainer.model.adapter_state_dict().items()}
    result = trainer.train()
    rank = trainer.accelerator.process_index
    final = trainer.model.adapter_state_dict()
    save_file(final, str(out_dir / f"adapter_rank{rank}.safetensors"))
    info = {
        "rank": rank,
        "world": trainer.accelerator.num_processes,
        "steps": result.global_step,
        "changed": any(not (initial[k] == final[k]).all() for k in final),
        "history": result.history,
    }
    (out_dir / f"rank{rank}.json").write_text(json.dumps(info))
