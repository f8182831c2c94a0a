"""CPU training benchmark: our dpo-worker against TRL's DPOTrainer, side by side in one run.

Same tiny random Llama, same HH-RLHF pairs (explicit form), same batch, max_length, steps and
thread count, fp32 on the CPU. Validates first (the two loss curves must agree, as in the parity
test), then reports pairs/s and tokens/s of each and the ratio ours/TRL. Times are training-loop
times on both sides (TRL's train_runtime; the sum of our logged step times); our whole-process
time, with tokenization and model loading, is reported beside it.

  .venv/bin/python bench/trl_train_bench.py [--pairs 160] [--batch 8] [--threads 2]
"""
import argparse
import json
import math
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "oracle"))
from trl_runs import (EXAMPLE_TOKENIZER, RunConfig, explicit_pairs, fits,  # noqa: E402
                      make_tiny_llama, run_ours, run_trl, write_jsonl)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pairs", type=int, default=160)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--padded", action="store_true", help="ours in TRL's padded layout too")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each side; best is kept")
    args = parser.parse_args()

    from transformers import AutoTokenizer

    cfg = RunConfig(pairs=args.pairs, batch_size=args.batch, steps=args.pairs // args.batch,
                    max_length=args.max_length, hidden_size=args.hidden, layers=args.layers,
                    learning_rate=1e-4)
    tokenizer = AutoTokenizer.from_pretrained(EXAMPLE_TOKENIZER)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = make_tiny_llama(tmp / "model", cfg, vocab_size=len(tokenizer))
        pairs = explicit_pairs(cfg.pairs, keep=fits(tokenizer, cfg.max_length))
        data = write_jsonl(tmp / "pairs.jsonl", pairs)
        # Alternating runs, best of each kept: both sides see the same machine noise.
        trl_runs_, our_runs = [], []
        for r in range(args.repeats):
            trl_runs_.append(run_trl(model, EXAMPLE_TOKENIZER, pairs, cfg, tmp / f"trl{r}", args.threads))
            # Ours with its defaults (padding-free batches); TRL with its own (padded).
            our_runs.append(run_ours(model, EXAMPLE_TOKENIZER, data, cfg, tmp / f"ours{r}",
                                     args.threads, padding_free=not args.padded))
        trl_logs, trl_seconds = min(trl_runs_, key=lambda run: run[1])
        our_logs, our_seconds = min(our_runs, key=lambda run: sum(cfg.batch_size / l["pairs/s"] for l in run[0]))

    # Validate before reporting: identical work, identical numbers.
    worst = max(abs(float(o["loss"]) - float(t["loss"])) / abs(float(t["loss"]))
                for o, t in zip(our_logs, trl_logs))
    if len(our_logs) != len(trl_logs) or worst > 1e-3:
        raise SystemExit(f"validation failed: loss curves differ (worst relative {worst:.2e})")
    tokens = sum(float(t["num_tokens"]) for t in trl_logs[-1:])  # TRL's running token count
    # Training-loop time, as TRL's train_runtime counts it (no tokenization, no model loading):
    # the sum of our per-step times (each logged line is one step).
    our_loop = sum(cfg.batch_size / l["pairs/s"] for l in our_logs)
    result = {
        "pairs": cfg.pairs, "batch": cfg.batch_size, "steps": cfg.steps, "max_length": cfg.max_length,
        "model": f"llama hidden={cfg.hidden_size} layers={cfg.layers} vocab={len(tokenizer)}",
        "threads": args.threads, "repeats": args.repeats,
        "trl_train_seconds": trl_seconds, "ours_train_seconds": our_loop,
        "ours_process_seconds": our_seconds,
        "trl_pairs_per_s": cfg.pairs / trl_seconds, "ours_pairs_per_s": cfg.pairs / our_loop,
        "trl_tokens_per_s": tokens / trl_seconds, "ours_tokens_per_s": tokens / our_loop,
        "speedup": trl_seconds / our_loop,
        "speedup_including_our_startup": trl_seconds / our_seconds,
        "loss_curve_worst_rel_diff": worst,
        "ours_layout": "padded" if args.padded else "padding-free",
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
