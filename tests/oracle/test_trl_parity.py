"""TRL parity: our dpo-worker and TRL's DPOTrainer (trl pinned in scripts/requirements.txt) train
the same tiny random Llama on the same 40 HH-RLHF pairs with identical hyperparameters, fp32 on
the CPU, for 10 steps; and on 18 pairs at 4 a batch, where each epoch ends in a partial batch
(with and without gradient accumulation and dataloader_drop_last), resumed mid-epoch too. Per-step loss, rewards/chosen, rewards/rejected and grad_norm must agree
within 1e-4 relative (absolute floor 1e-6 for values near 0: rewards start at exactly 0)."""
import json
import math

import pytest

from shared_data import needs_shared
from trl_runs import (EXAMPLE_TOKENIZER, HH_RLHF, RunConfig, explicit_pairs, fits,
                      make_tiny_llama, run_ours, run_trl, write_jsonl)

RTOL = 1e-4
ATOL = 1e-6

pytestmark = needs_shared(HH_RLHF)


def _reference(tmp_path, cfg: RunConfig):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(EXAMPLE_TOKENIZER)
    model_dir = make_tiny_llama(tmp_path / "model", cfg, vocab_size=len(tokenizer))
    pairs = explicit_pairs(cfg.pairs, keep=fits(tokenizer, cfg.max_length))
    assert len(pairs) == cfg.pairs
    data = write_jsonl(tmp_path / "pairs.jsonl", pairs)
    trl_logs, _ = run_trl(model_dir, EXAMPLE_TOKENIZER, pairs, cfg, tmp_path / "trl")
    return cfg, model_dir, data, trl_logs


@pytest.fixture(scope="module")
def trl_reference(tmp_path_factory):
    """One TRL run, the oracle for every layout of ours."""
    return _reference(tmp_path_factory.mktemp("parity"), RunConfig())


# padded: TRL's own layout. padding_free: our default, where each pair's prompt is computed once
# and the rejected sequence attends to the chosen's copy: the same math, other float rounding.
@pytest.mark.parametrize("padding_free", [False, True], ids=["padded", "padding_free"])
def test_per_step_metrics_match_trl(trl_reference, tmp_path, padding_free):
    _assert_parity(*trl_reference, tmp_path, padding_free)


def test_weight_decay_matches_trl(tmp_path):
    # HF's Trainer leaves biases and norm weights out of weight decay; decaying them too put
    # the loss 3e-4 and grad_norm 1.5e-3 off TRL's. The parity bound is unchanged.
    _assert_parity(*_reference(tmp_path, RunConfig(weight_decay=0.1)), tmp_path, padding_free=False)


# 18 pairs at 4 a batch: every fifth batch holds 2 pairs. HF's dataloader_drop_last defaults to
# false, so TRL trains them (steps 5 and 10 with one pair per micro-batch; with accumulation 2,
# the last step of each epoch accumulates the one batch left, its loss divided by 1, not 2).
# drop_last: 4 steps per epoch, the last 2 pairs never seen.
@pytest.mark.parametrize("accumulation,drop_last,steps", [(1, False, 10), (2, False, 6), (1, True, 8)],
                         ids=["partial_batch", "partial_accumulation", "drop_last"])
def test_a_last_partial_batch_matches_trl(tmp_path, accumulation, drop_last, steps):
    cfg = RunConfig(pairs=18, steps=steps, gradient_accumulation_steps=accumulation, drop_last=drop_last)
    _assert_parity(*_reference(tmp_path, cfg), tmp_path, padding_free=True)


def test_resume_mid_epoch_and_across_the_partial_batch(tmp_path):
    # 18 pairs at 4: the batches of each epoch are 4, 4, 4, 4, 2. A straight 10-step run saves
    # every step; runs resumed from step 3 (mid-epoch, the partial batch still ahead) and from
    # step 5 (just after it: the data position is the end of epoch 0) must continue exactly as
    # the straight run did (relative 1e-6: the same operations on the same state), and the
    # straight run must equal TRL's.
    cfg = RunConfig(pairs=18, steps=10, save_steps=1)
    cfg, model_dir, data, trl_logs = _reference(tmp_path, cfg)
    straight = _assert_parity(cfg, model_dir, data, trl_logs, tmp_path, padding_free=True)
    by_step = {l["step"]: l for l in straight}
    for start in (3, 5):
        checkpoint = tmp_path / "ours" / "run" / f"checkpoint-{start}"
        state = json.loads((checkpoint / "trainer_state.json").read_text())
        assert (state["epoch"], state["batch_in_epoch"]) == ((0, 3) if start == 3 else (0, 5))
        resumed, _ = run_ours(model_dir, EXAMPLE_TOKENIZER, data, cfg, tmp_path / f"resumed-{start}",
                              padding_free=True, resume_from=checkpoint)
        assert [l["step"] for l in resumed] == list(range(start + 1, cfg.steps + 1))
        for line in resumed:
            for key in ("loss", "rewards/chosen", "rewards/rejected", "grad_norm", "learning_rate"):
                assert line[key] == pytest.approx(by_step[line["step"]][key], rel=1e-6, abs=1e-9), (
                    f"resumed from {start}: step {line['step']} {key}")


def _assert_parity(cfg, model_dir, data, trl_logs, tmp_path, padding_free):
    our_logs, _ = run_ours(model_dir, EXAMPLE_TOKENIZER, data, cfg, tmp_path / "ours",
                           padding_free=padding_free)
    assert [l["step"] for l in trl_logs] == list(range(1, cfg.steps + 1))
    assert [l["step"] for l in our_logs] == list(range(1, cfg.steps + 1))

    worst = {}
    for trl, ours in zip(trl_logs, our_logs):
        for key in ("loss", "rewards/chosen", "rewards/rejected", "grad_norm"):
            expected, actual = float(trl[key]), float(ours[key])
            err = abs(actual - expected) / max(abs(expected), ATOL / RTOL)
            worst[key] = max(worst.get(key, 0.0), err)
            assert math.isclose(actual, expected, rel_tol=RTOL, abs_tol=ATOL), (
                f"step {trl['step']} {key}: ours {actual!r} vs TRL {expected!r}")
        assert ours["epoch"] == pytest.approx(float(trl["epoch"]), abs=1e-4), f"step {trl['step']} epoch"
    # The run must actually train: the loss moves away from log(2) and rewards separate.
    assert abs(float(trl_logs[-1]["loss"]) - math.log(2)) > 1e-3
    print("worst relative error per metric:", worst)
    return our_logs


def test_the_prompt_ends_at_the_last_shared_assistant_turn(tmp_path):
    # The helper once stopped its search one character early and cut every pair a turn too soon.
    source = tmp_path / "pairs.jsonl"
    shared = "\n\nHuman: hi\n\nAssistant: yes\n\nHuman: more\n\nAssistant:"
    source.write_text(json.dumps({"chosen": shared + " ok sure", "rejected": shared + " no"}) + "\n")
    (pair,) = explicit_pairs(1, source=source)
    assert pair == {"prompt": shared, "chosen": " ok sure", "rejected": " no"}
