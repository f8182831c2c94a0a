"""Sharded training benchmark on the CPU: train.sharding none / optimizer / full at 1, 2 and 4
MPI ranks, side by side in one run, with the global batch fixed.

Validates first: at every rank count, each sharded mode's loss and grad_norm curves must equal
the replicated run's (1e-4 relative). Then reports, per mode and rank count: pairs/s and the
median step time, the model-state bytes per rank (parameters, gradients and optimizer state
counted from the tensors' storages by the worker), its share of none's, the peak resident
memory of rank 0, and for the sharded modes the share of the all-gathers' and
reduce-scatters' time in flight that compute did not wait for. The issue's goals are checked
last: full within 1.3x of none's step time at 2 ranks, and full's model state at most 55% of
none's at 2 ranks and 30% at 4.

  .venv/bin/python bench/sharding_bench.py [--hidden 512] [--layers 8] [--steps 8] [--batch 8]
"""
import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "integration"))
from worker_runs import EXAMPLES, metrics, run_worker  # noqa: E402

MODES = ("none", "optimizer", "full")


def model_config(path: Path, hidden: int, layers: int) -> Path:
    config = json.loads((EXAMPLES / "tiny-llama" / "config.json").read_text())
    config.update(hidden_size=hidden, intermediate_size=hidden * 11 // 4, num_hidden_layers=layers,
                  num_attention_heads=hidden // 64, num_key_value_heads=max(1, hidden // 256),
                  head_dim=64)
    path.write_text(json.dumps(config))
    return path


def run(tmp: Path, config: Path, ranks: int, mode: str, args) -> list[dict]:
    out = tmp / f"{mode}-{ranks}"
    run_worker(out, ranks=ranks, **{
        "model.random": f'{{config: "{config}", seed: 7}}',
        "train.sharding": mode, "train.max_steps": str(args.steps), "train.save_steps": "100000",
        "train.logging_steps": "1", "train.per_device_train_batch_size": str(args.batch // ranks),
        "data.max_length": str(args.max_length), "data.train_sampling_strategy": "sequential"})
    return metrics(out)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--batch", type=int, default=8, help="global pairs per step")
    parser.add_argument("--max-length", type=int, default=192)
    parser.add_argument("--ranks", default="1,2,4")
    args = parser.parse_args()
    rank_counts = [int(r) for r in args.ranks.split(",")]

    results: dict[tuple[str, int], list[dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        config = model_config(tmp / "config.json", args.hidden, args.layers)
        for ranks in rank_counts:
            for mode in MODES:
                results[mode, ranks] = run(tmp, config, ranks, mode, args)

    # Validate before reporting: the sharded runs did the same work with the same numbers.
    for ranks in rank_counts:
        for mode in MODES[1:]:
            for got, want in zip(results[mode, ranks], results["none", ranks]):
                for key in ("loss", "grad_norm"):
                    if abs(got[key] - want[key]) > 1e-4 * abs(want[key]):
                        raise SystemExit(f"validation failed: {mode} at {ranks} ranks, step "
                                         f"{got['step']} {key} {got[key]} vs {want[key]}")

    def step_seconds(lines):  # median over steps after the first two (warm-up)
        return statistics.median(args.batch / l["pairs/s"] for l in lines[2:])

    rows = []
    print(f"model: hidden {args.hidden}, {args.layers} layers, vocab 1024; global batch "
          f"{args.batch} pairs, max_length {args.max_length}, fp32, {args.steps} steps; "
          "validated: sharded loss/grad_norm equal none's within 1e-4")
    print("| ranks | sharding | pairs/s | step s | vs none | model state MiB/rank | vs none | "
          "peak RSS GiB (rank 0) | comm hidden |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    for ranks in rank_counts:
        base = results["none", ranks]
        for mode in MODES:
            lines = results[mode, ranks]
            state = lines[-1]["model_state_bytes"]
            hidden = statistics.mean(l["comm_hidden_fraction"] for l in lines[2:]) if mode != "none" else None
            row = dict(ranks=ranks, mode=mode, pairs_per_s=statistics.median(l["pairs/s"] for l in lines[2:]),
                       step=step_seconds(lines), step_ratio=step_seconds(lines) / step_seconds(base),
                       state=state, state_ratio=state / base[-1]["model_state_bytes"],
                       peak=lines[-1]["peak_memory_gib"], hidden=hidden)
            rows.append(row)
            print(f"| {ranks} | {mode} | {row['pairs_per_s']:.2f} | {row['step']:.3f} | "
                  f"{row['step_ratio']:.2f}x | {state / 2**20:.1f} | {row['state_ratio']:.0%} | "
                  f"{row['peak']:.2f} | {'—' if hidden is None else f'{hidden:.0%}'} |")

    goals = []
    by = {(r["mode"], r["ranks"]): r for r in rows}
    if ("full", 2) in by:
        goals.append(("full step time at 2 ranks <= 1.3x none's", by["full", 2]["step_ratio"] <= 1.3,
                      f"{by['full', 2]['step_ratio']:.2f}x"))
        goals.append(("full model state at 2 ranks <= 55% of none's", by["full", 2]["state_ratio"] <= 0.55,
                      f"{by['full', 2]['state_ratio']:.0%}"))
    if ("full", 4) in by:
        goals.append(("full model state at 4 ranks <= 30% of none's", by["full", 4]["state_ratio"] <= 0.30,
                      f"{by['full', 4]['state_ratio']:.0%}"))
    for name, ok, value in goals:
        print(f"goal: {name}: {value} {'met' if ok else 'NOT met'}")


if __name__ == "__main__":
    main()
