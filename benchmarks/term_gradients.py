"""How much of a training step is ICRM's? The gradient of each term of the objective, step by step, on a real model.

ICRM's objective is ``(1 − λ)·BT + λ·L_ICRM + α·SFT``. When ICRM and BT
reward models come out the same, the first question is whether the
consistency term moved the model at all. This script trains a reward model as
``benchmarks/real_quality.py`` does (SmolLM2-135M-Instruct, LoRA, the chat
pairs it wrote to its work folder) and, at every step, takes the gradient of
each weighted term on its own with respect to the trained weights, split into
the value head and the rest (LoRA's matrices, or the backbone when training
fully; the SFT term's own LM head is left out). The step itself is the
Trainer's, on the whole objective (its forward runs a second time), so the
numbers follow a real run.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from icrm import ICRMConfig, ICRMTrainer
from icrm.training.objective import batch_objective

from .harness import RESULTS, machine, seeded_parser, start, write_text
from .real_quality import generator_dir


class TermGradientTrainer(ICRMTrainer):
    """An ICRM trainer that records each weighted term's gradient norm before the usual step."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.records: list[dict] = []

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        objective = batch_objective(model, self.accelerator.unwrap_model(model), inputs, self.args)
        lam, alpha = self.args.consistency_weight, self.args.sft_coef
        weighted = {"bt": (1 - lam) * objective.terms["bt"], "icrm": lam * objective.terms["icrm"]}
        if alpha > 0:
            weighted["sft"] = alpha * objective.terms["sft"]
        named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
        record = {"step": self.state.global_step + 1}
        for term, value in weighted.items():
            grads = torch.autograd.grad(value, [p for _, p in named], retain_graph=True, allow_unused=True)
            for part in ("head", "body"):
                chosen = [g for (name, _), g in zip(named, grads) if g is not None and part_of(name) == part]
                record[f"{term}_{part}"] = float(torch.sqrt(sum((g.float() ** 2).sum() for g in chosen))) if chosen else 0.0
        self.records.append(record)
        print(json.dumps(record), flush=True)
        return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)


def part_of(name: str) -> str | None:
    """``head`` (the value head), ``body`` (LoRA's matrices or the backbone) or None (the SFT term's own LM head)."""
    if "sft_head" in name:
        return None
    return "head" if "score_head" in name else "body"


def main(argv: list[str] | None = None) -> None:
    from datasets import Dataset
    from peft import LoraConfig

    p = seeded_parser(__doc__, seeds=1)
    p.add_argument("--work", default=str(RESULTS / "real-quality-chat-work"), help="real_quality.py's work folder")
    p.add_argument("--lam", type=float, default=0.1)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--full", action="store_true", help="train every weight instead of LoRA")
    p.add_argument("--out", default="term-gradients")
    a = p.parse_args(argv)
    os.environ["ICRM_THREADS"] = str(a.threads)
    (seed,) = start(a)[:1]
    work = Path(a.work)
    rows = [json.loads(line) for line in (work / "train.jsonl").read_text().splitlines()]
    config = ICRMConfig(output_dir=str(RESULTS / f"{a.out}-run"), method="icrm", lambda_=a.lam,
                        generator=str(generator_dir(work)), max_length=256, per_device_train_batch_size=8,
                        learning_rate=1e-5 if a.full else 2e-4, max_steps=a.steps, seed=seed, use_cpu=True,
                        bf16=False, report_to=[], save_strategy="no", logging_steps=a.steps)
    lora = None if a.full else LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="SEQ_CLS")
    trainer = TermGradientTrainer(model="smollm2-135m", args=config, train_dataset=Dataset.from_list(rows),
                                  peft_config=lora)
    trainer.train()
    result = {"settings": {"lam": a.lam, "steps": a.steps, "full": a.full, "seed": seed, "work": str(work)},
              "machine": machine(), "steps": trainer.records}
    write_text(RESULTS / f"{a.out}.json", json.dumps(result, indent=2) + "\n")
    body = "backbone" if a.full else "LoRA"
    lines = [f"λ = {a.lam}, {'full fine-tuning' if a.full else 'LoRA r 16'}, seed {seed}: gradient norm of each "
             f"weighted term (value head / {body})", "", f"| step | BT | ICRM | ICRM/BT | SFT ({body}) |", "|---|---|---|---|---|"]
    for r in trainer.records:
        lines.append(f"| {r['step']} | {r['bt_head']:.3g} / {r['bt_body']:.3g} | {r['icrm_head']:.3g} / "
                     f"{r['icrm_body']:.3g} | {r['icrm_head'] / r['bt_head']:.3f} / "
                     f"{r['icrm_body'] / max(r['bt_body'], 1e-30):.3f} | "
                     f"{r.get('sft_body', 0):.3g} |")
    write_text(RESULTS / f"{a.out}.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
