"""Shared by the TRL parity test and the TRL benchmark: one tiny random Llama, one data set and one
set of hyperparameters, run through TRL's DPOTrainer and through our dpo-worker.

Both sides see the same explicit-form pairs (prompt split done here once, at the last
"\n\nAssistant:" both dialogues share), in file order (TRL: train_sampling_strategy=sequential;
ours: data.train_sampling_strategy: sequential), fp32 on the CPU, no warmup, linear decay.
"""
from __future__ import annotations

import gzip
import json
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

SOURCE_DIR = Path(os.environ.get("DPO_SOURCE_DIR", Path(__file__).resolve().parents[2]))
BINARY_DIR = Path(os.environ.get("DPO_BINARY_DIR", SOURCE_DIR / "build"))
EXAMPLE_TOKENIZER = SOURCE_DIR / "examples" / "tokenizer"
from shared_data import HH_RLHF, SHARED_DIR  # noqa: E402,F401  (re-exported)
ASSISTANT = "\n\nAssistant:"


@dataclass
class RunConfig:
    pairs: int = 40
    batch_size: int = 4
    steps: int = 10
    learning_rate: float = 3e-3
    beta: float = 0.1
    max_length: int = 256
    hidden_size: int = 64
    layers: int = 2
    seed: int = 0
    weight_decay: float = 0.0
    gradient_accumulation_steps: int = 1
    drop_last: bool = False  # HF's dataloader_drop_last (its default: the partial batch trains)
    save_steps: int = 100000
    loss_type: str = "sigmoid"
    implicit_prompt: str = "assistant_turn"  # ours, for {chosen, rejected} rows; TRL: common_prefix


def explicit_pairs(count: int, source: Path = HH_RLHF, keep=lambda pair: True) -> list[dict]:
    """The first `count` HH-RLHF pairs (that `keep` accepts), split into prompt / chosen /
    rejected."""
    pairs = []
    opener = gzip.open if str(source).endswith(".gz") else open
    with opener(source, "rt", encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            chosen, rejected = row["chosen"], row["rejected"]
            shared = 0
            while shared < min(len(chosen), len(rejected)) and chosen[shared] == rejected[shared]:
                shared += 1
            # The last "\n\nAssistant:" lying wholly inside the shared prefix (rfind's end bound
            # is where the match must end by).
            cut = chosen.rfind(ASSISTANT, 0, shared)
            if cut < 0:
                continue
            cut += len(ASSISTANT)
            if chosen[cut:] == "" or rejected[cut:] == "":
                continue
            pair = {"prompt": chosen[:cut], "chosen": chosen[cut:], "rejected": rejected[cut:]}
            if keep(pair):
                pairs.append(pair)
            if len(pairs) == count:
                break
    return pairs


def fits(tokenizer, max_length: int):
    """TRL (keep_start) drops pairs whose prompt alone fills max_length, and so do we; the
    parity runs use pairs that both keep, so that both see the same batches."""
    return lambda pair: len(tokenizer(pair["prompt"])["input_ids"]) < max_length


def make_tiny_llama(directory: Path, cfg: RunConfig, vocab_size: int) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(cfg.seed)
    config = LlamaConfig(
        vocab_size=vocab_size, hidden_size=cfg.hidden_size, intermediate_size=cfg.hidden_size * 2,
        num_hidden_layers=cfg.layers, num_attention_heads=4, num_key_value_heads=2,
        max_position_embeddings=2048, tie_word_embeddings=False, torch_dtype="float32")
    model = LlamaForCausalLM(config)
    model.save_pretrained(directory)
    return directory


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    return path


def run_trl(model_dir: Path, tokenizer_dir: Path, pairs: list[dict], cfg: RunConfig, out: Path,
            threads: int = 1) -> tuple[list[dict], float]:
    """Trains with TRL's DPOTrainer; returns its per-step logs and the training seconds."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import DPOConfig, DPOTrainer

    torch.set_num_threads(threads)
    logs: list[dict] = []

    class Collect(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                logs_copy = dict(logs)
                logs_copy["step"] = state.global_step
                collected.append(logs_copy)

    collected = logs
    model = AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    args = DPOConfig(
        output_dir=str(out), per_device_train_batch_size=cfg.batch_size, max_steps=cfg.steps,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        dataloader_drop_last=cfg.drop_last,
        learning_rate=cfg.learning_rate, lr_scheduler_type="linear", warmup_steps=0,
        max_grad_norm=1.0, weight_decay=cfg.weight_decay, beta=cfg.beta, loss_type=[cfg.loss_type], max_length=cfg.max_length,
        truncation_mode="keep_start", logging_steps=1, save_strategy="no", report_to="none",
        use_cpu=True, bf16=False, seed=cfg.seed, train_sampling_strategy="sequential",
        dataloader_num_workers=0, gradient_checkpointing=False, pad_to_multiple_of=None,
        disable_tqdm=True)
    trainer = DPOTrainer(model=model, args=args, processing_class=tokenizer,
                         train_dataset=Dataset.from_list(pairs), callbacks=[Collect()])
    start = time.perf_counter()
    trainer.train()
    return logs, time.perf_counter() - start


def our_spec(model_dir: Path, tokenizer_dir: Path, data: Path, cfg: RunConfig, out: Path,
             padding_free: bool, resume_from: Path | None = None) -> str:
    resume = f'\n  resume_from_checkpoint: "{resume_from}"' if resume_from else ""
    return f"""\
model: {{path: "{model_dir}", dtype: float32, device: cpu}}
tokenizer: {{path: "{tokenizer_dir}"}}
data:
  train: "{data}"
  max_length: {cfg.max_length}
  truncation_mode: keep_start
  implicit_prompt: {cfg.implicit_prompt}
  train_sampling_strategy: sequential
  padding_free: {str(padding_free).lower()}
dpo: {{beta: {cfg.beta}, loss_type: {cfg.loss_type}}}
train:
  seed: {cfg.seed}
  per_device_train_batch_size: {cfg.batch_size}
  gradient_accumulation_steps: {cfg.gradient_accumulation_steps}
  dataloader_drop_last: {str(cfg.drop_last).lower()}
  max_steps: {cfg.steps}
  learning_rate: {cfg.learning_rate}
  lr_scheduler_type: linear
  warmup_steps: 0
  max_grad_norm: 1.0
  weight_decay: {cfg.weight_decay}
  logging_steps: 1
  save_steps: {cfg.save_steps}
  bf16: false
reference: {{mode: model}}
output:
  dir: "{out}"{resume}
"""


def run_ours(model_dir: Path, tokenizer_dir: Path, data: Path, cfg: RunConfig, out: Path,
             threads: int = 1, padding_free: bool = False,
             resume_from: Path | None = None) -> tuple[list[dict], float]:
    """Trains with our dpo-worker; returns its per-step train metrics and the wall seconds.
    padding_free=False is TRL's own default layout (padded rows), the one parity is checked in.
    resume_from: a checkpoint directory the run continues from. Checkpoints land in out/run."""
    out.mkdir(parents=True, exist_ok=True)
    spec = out / "job.yaml"
    spec.write_text(our_spec(model_dir, tokenizer_dir, data, cfg, out / "run", padding_free, resume_from))
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    start = time.perf_counter()
    proc = subprocess.run([str(BINARY_DIR / "bin" / "dpo-worker"), "--job", str(spec)],
                          capture_output=True, text=True, env=env, timeout=1800)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise AssertionError(f"dpo-worker failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    lines = [json.loads(l) for l in (out / "run" / "metrics.jsonl").read_text().splitlines()]
    return [l for l in lines if l.get("split") == "train"], seconds
