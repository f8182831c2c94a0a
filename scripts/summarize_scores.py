"""Before/after table of dpo-eval score files written with --reference (scripts/demo_smollm2.sh).

For each file (one data set), from the per-pair log-probs dpo-eval wrote:
  implicit reward   beta * (log pi - log pi_ref): accuracy (chosen reward > rejected reward) and
                    mean margin. Before training pi = pi_ref, so every reward is 0: accuracy 0,
                    margin 0 by definition, as TRL logs at step 0.
  log-prob          whether the model itself gives the chosen completion the higher total
                    log-prob, before (the reference's columns) and after (the policy's), with the
                    mean margin log pi(chosen) - log pi(rejected) in nats.
Accuracies carry their standard error sqrt(p(1-p)/n), to tell movement from noise.

    .venv/bin/python scripts/summarize_scores.py SCORES.jsonl [SCORES.jsonl ...]
"""
import json
import math
import sys
from pathlib import Path


def accuracy(wins: list[bool]) -> str:
    p = sum(wins) / len(wins)
    return f"{p:.3f} ± {math.sqrt(p * (1 - p) / len(wins)):.3f}"


def mean(values: list[float]) -> str:
    return f"{sum(values) / len(values):+.3f}"


def summarize(path: Path) -> list[str]:
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    if any(r["reference_chosen_logps"] is None for r in rows):
        raise SystemExit(f"{path}: scored without --reference")
    ref = [r["reference_chosen_logps"] - r["reference_rejected_logps"] for r in rows]
    pol = [r["policy_chosen_logps"] - r["policy_rejected_logps"] for r in rows]
    reward = [r["reward_chosen"] - r["reward_rejected"] for r in rows]
    name = f"{path.name} ({len(rows)} pairs)"
    return [
        f"| {name} | implicit reward accuracy | 0 | {accuracy([m > 0 for m in reward])} |",
        f"| {name} | implicit reward margin | 0 | {mean(reward)} |",
        f"| {name} | log-prob accuracy | {accuracy([m > 0 for m in ref])} | {accuracy([m > 0 for m in pol])} |",
        f"| {name} | log-prob margin (nats) | {mean(ref)} | {mean(pol)} |",
    ]


def main() -> None:
    print("| data | measure | before | after |\n|---|---|---|---|")
    for arg in sys.argv[1:]:
        print("\n".join(summarize(Path(arg))))


if __name__ == "__main__":
    main()
