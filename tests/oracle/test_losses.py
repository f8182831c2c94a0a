"""DPO loss family (common/loss/dpo_loss.h) against TRL 1.16's own code, in the same run.

The oracle is DPOTrainer._compute_loss itself, run on a trainer built with DPOTrainer.__new__ and
only the attributes that method reads; its policy / reference models are stubs that return the
per-token outputs of TRL's fused LM head (log_probs, entropy, mean_logits, is_top1,
log_sum_sq_probs; zero where the label is -100). The same random per-token tensors go to ours
through $DPO_BINARY_DIR/bin/dpo-loss-check. Compared: the loss, chosen/rejected rewards, the
gradient of the loss w.r.t. the policy per-token log-probs, and the logged metrics.

Two modes TRL 1.16's DPOTrainer lacks are compared with what they stand for:
  * reference_free: TRL with precomputed reference log-probs that are all zero;
  * simpo: TRL's CPOTrainer.cpo_loss (loss_type="simpo", alpha=0) on per-token averaged log-probs.

Tolerance: |ours - TRL| <= 1e-5·|TRL| + 1e-7 per element (both fp32, same operation order).
"""

import json
import math
import subprocess
from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch

from loss_check_tool import enc, run_ours, tool

REL, ABS = 1e-5, 1e-7
PAIRS, TIME = 5, 12
MAX_REL_ERR = defaultdict(float)  # loss type -> worst relative error seen (printed at the end)


def check(ours, ref, what: str, key: str) -> None:
    ours = torch.as_tensor(ours, dtype=torch.float64)
    ref = torch.as_tensor(ref, dtype=torch.float64).detach()
    err = (ours - ref).abs()
    assert torch.all(err <= REL * ref.abs() + ABS), f"{what}: ours {ours} vs TRL {ref}"
    rel = (err / ref.abs().clamp_min(1e-12)).masked_fill(err <= ABS, 0.0)
    MAX_REL_ERR[key] = max(MAX_REL_ERR[key], rel.max().item() if rel.numel() else 0.0)


def make_batch(seed: int) -> dict:
    """Per-token outputs for 2·PAIRS rows [chosen..., rejected...], right padded."""
    gen = torch.Generator().manual_seed(seed)
    rows = 2 * PAIRS
    attention = torch.zeros(rows, TIME, dtype=torch.int64)
    completion = torch.zeros(rows, TIME, dtype=torch.int64)
    for r in range(rows):
        prompt = int(torch.randint(1, 4, (1,), generator=gen))
        length = int(torch.randint(prompt + 2, TIME + 1, (1,), generator=gen))
        attention[r, :length] = 1
        completion[r, prompt:length] = 1
    mask = completion[:, 1:].bool()

    def per_token(values):
        return (values * mask).float()

    logps = per_token(-3.0 * torch.rand(rows, TIME - 1, generator=gen))
    return {
        "attention_mask": attention,
        "completion_mask": completion,
        "input_ids": torch.randint(0, 100, (rows, TIME), generator=gen),
        "policy": {
            "log_probs": logps,
            "entropy": per_token(4.0 * torch.rand(rows, TIME - 1, generator=gen)),
            "mean_logits": per_token(torch.randn(rows, TIME - 1, generator=gen)),
            "is_top1": torch.rand(rows, TIME - 1, generator=gen).lt(0.4) & mask,
            "log_sum_sq_probs": per_token(-2.0 * torch.rand(rows, TIME - 1, generator=gen)),
        },
        "ref_log_probs": per_token(logps + 0.4 * torch.randn(rows, TIME - 1, generator=gen)),
    }


class _StubModel:
    """Stands in for a model patched by add_fused_lm_head: returns fixed per-token outputs."""

    training = True
    is_gradient_checkpointing = False

    def __init__(self, outputs: dict):
        self.outputs = outputs

    def __call__(self, **kwargs):
        assert kwargs.get("fused_lm_head") is True
        return SimpleNamespace(**self.outputs)


def trl_dpo(config: dict, batch: dict, ref_mode: str):
    from trl import DPOTrainer

    trainer = DPOTrainer.__new__(DPOTrainer)
    log_probs = batch["policy"]["log_probs"].clone().requires_grad_()
    outputs = {**batch["policy"], "log_probs": log_probs}
    trainer.model = _StubModel(outputs)
    trainer.ref_model = _StubModel({"log_probs": batch["ref_log_probs"]})
    trainer.accelerator = SimpleNamespace(device=torch.device("cpu"), gather=lambda x: x,
                                          gather_for_metrics=lambda x: x)
    trainer.args = SimpleNamespace(gradient_checkpointing_kwargs=None, max_length=None,
                                   discopop_tau=config.get("discopop_tau", 0.05))
    trainer.beta = config.get("beta", 0.1)
    trainer.loss_types = config["loss_type"]
    trainer.loss_weights = config.get("loss_weights") or [1.0] * len(trainer.loss_types)
    trainer.ld_alpha = config.get("ld_alpha")
    trainer.f_divergence_type = config.get("f_divergence_type", "reverse_kl")
    trainer.f_alpha_divergence_coef = config.get("f_alpha_divergence_coef", 0.5)
    trainer.label_smoothing = config.get("label_smoothing", 0.0)
    trainer.use_weighting = config.get("use_weighting", False)
    trainer.aux_loss_enabled = False
    trainer._metrics = {"train": defaultdict(list), "eval": defaultdict(list)}
    trainer._total_train_tokens = 0
    trainer._tp_size = 1
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "completion_mask")}
    trainer.precompute_ref_logps = ref_mode != "model"
    if ref_mode == "precomputed":
        ref = batch["ref_log_probs"].sum(1)
        inputs["ref_chosen_logps"], inputs["ref_rejected_logps"] = ref.chunk(2)
    elif ref_mode == "zero":
        inputs["ref_chosen_logps"] = inputs["ref_rejected_logps"] = torch.zeros(PAIRS)
    loss = trainer._compute_loss(trainer.model, inputs, return_outputs=False)
    loss.backward()
    metrics = {k: v[-1] for k, v in trainer._metrics["train"].items()}
    return loss, log_probs.grad, metrics


def payload(config: dict, batch: dict, ref_mode: str) -> dict:
    policy = {f"token_{k}": enc(v) for k, v in batch["policy"].items()}
    policy["token_logps"] = policy.pop("token_log_probs")
    policy["completion_mask"] = enc(batch["completion_mask"])
    out = {"mode": "loss", "options": config, "policy": policy}
    if ref_mode == "model":
        out["reference"] = {"token_logps": enc(batch["ref_log_probs"])}
    elif ref_mode == "precomputed":
        chosen, rejected = batch["ref_log_probs"].sum(1).chunk(2)
        out["reference"] = {"chosen": enc(chosen), "rejected": enc(rejected)}
    return out


CASES = [
    {"loss_type": ["sigmoid"]},
    {"loss_type": ["sigmoid"], "beta": 0.7},
    {"loss_type": ["hinge"], "beta": 0.3},
    {"loss_type": ["ipo"], "beta": 0.2},
    {"loss_type": ["exo_pair"], "label_smoothing": 1e-3},
    {"loss_type": ["nca_pair"]},
    {"loss_type": ["robust"], "label_smoothing": 0.1},
    {"loss_type": ["robust"], "label_smoothing": 0.3, "beta": 0.5},
    {"loss_type": ["bco_pair"]},
    {"loss_type": ["sppo_hard"], "beta": 0.5},
    {"loss_type": ["aot"]},
    {"loss_type": ["aot"], "label_smoothing": 0.2},
    {"loss_type": ["aot_unpaired"], "label_smoothing": 0.1},
    {"loss_type": ["apo_zero"]},
    {"loss_type": ["apo_down"]},
    {"loss_type": ["discopop"]},
    {"loss_type": ["discopop"], "discopop_tau": 0.3, "beta": 0.5},
    {"loss_type": ["sft"]},
    {"loss_type": ["sigmoid_norm"], "beta": 2.0},
    {"loss_type": ["sigmoid", "sft"], "loss_weights": [1.0, 0.3]},  # RPO
    {"loss_type": ["sigmoid", "bco_pair", "sft"], "loss_weights": [0.8, 0.2, 1.0]},  # MPO
    {"loss_type": ["sigmoid"], "f_divergence_type": "forward_kl"},
    {"loss_type": ["sigmoid"], "f_divergence_type": "js_divergence"},
    {"loss_type": ["sigmoid"], "f_divergence_type": "alpha_divergence"},
    {"loss_type": ["hinge"], "f_divergence_type": "alpha_divergence",
     "f_alpha_divergence_coef": 0.3},
    {"loss_type": ["sigmoid"], "f_divergence_type": "alpha_divergence",
     "f_alpha_divergence_coef": 1.0},
    {"loss_type": ["ipo"], "f_divergence_type": "js_divergence"},
    {"loss_type": ["exo_pair", "sft"], "f_divergence_type": "forward_kl", "label_smoothing": 0.01},
    {"loss_type": ["sigmoid"], "ld_alpha": 0.5},
    {"loss_type": ["ipo"], "ld_alpha": 0.0},
    {"loss_type": ["sigmoid", "sft"], "ld_alpha": 0.3},
    {"loss_type": ["sigmoid"], "use_weighting": True},
    {"loss_type": ["ipo"], "use_weighting": True},
]


def _case_id(config: dict) -> str:
    return "-".join(f"{k}={v}" for k, v in config.items()).replace(" ", "")


def _compare(ours: dict, loss, grad, metrics, config: dict) -> None:
    key = "+".join(config["loss_type"])
    check(ours["loss"], loss, "loss", key)
    check(ours["grad_token_logps"], grad, "grad w.r.t. policy per-token log-probs", key)
    for name, value in metrics.items():
        if name != "num_tokens":  # counted by the trainer from attention_mask, not the loss
            check(ours["metrics"][name], value, f"metric {name}", key)


@pytest.mark.parametrize("config", CASES, ids=_case_id)
def test_matches_trl_with_reference_model(tmp_path, config):
    batch = make_batch(seed=len(_case_id(config)))
    loss, grad, metrics = trl_dpo(config, batch, "model")
    ours = run_ours(tmp_path, payload(config, batch, "model"))
    _compare(ours, loss, grad, metrics, config)
    assert math.isfinite(loss.item())
    # Rewards: β·(policy - reference) sequence sums, in fp32 as _compute_loss forms them.
    beta = config.get("beta", 0.1)
    if config.get("ld_alpha") is None:
        ratios = batch["policy"]["log_probs"].sum(1) - batch["ref_log_probs"].sum(1)
        chosen, rejected = (beta * ratios).chunk(2)
        check(ours["chosen_rewards"], chosen, "chosen_rewards", "rewards")
        check(ours["rejected_rewards"], rejected, "rejected_rewards", "rewards")
        check(ours["chosen_rewards"].mean(), metrics["rewards/chosen"], "rewards/chosen", "rewards")


@pytest.mark.parametrize("config", [{"loss_type": ["sigmoid"]},
                                    {"loss_type": ["apo_down"], "beta": 0.4}], ids=_case_id)
def test_matches_trl_with_precomputed_reference(tmp_path, config):
    batch = make_batch(seed=7)
    loss, grad, metrics = trl_dpo(config, batch, "precomputed")
    _compare(run_ours(tmp_path, payload(config, batch, "precomputed")), loss, grad, metrics, config)


@pytest.mark.parametrize("config", [{"loss_type": ["sigmoid"]}, {"loss_type": ["ipo"]},
                                    {"loss_type": ["aot"]}], ids=_case_id)
def test_reference_free_is_trl_with_zero_reference(tmp_path, config):
    batch = make_batch(seed=11)
    loss, grad, metrics = trl_dpo(config, batch, "zero")
    ours = run_ours(tmp_path, payload({**config, "reference_free": True}, batch, "none"))
    _compare(ours, loss, grad, metrics, config)


@pytest.mark.parametrize("beta,gamma,smoothing", [(2.0, 0.5, 0.0), (2.5, 1.4, 0.1)])
def test_simpo_matches_trl_cpo_trainer(tmp_path, beta, gamma, smoothing):
    from trl.experimental.cpo import CPOTrainer

    batch = make_batch(seed=13)
    log_probs = batch["policy"]["log_probs"].clone().requires_grad_()
    loss_mask = batch["completion_mask"][:, 1:].bool()
    # CPOTrainer.get_batch_logps(average_log_prob=True) for simpo
    avg = (log_probs * loss_mask).sum(-1) / loss_mask.sum(-1)
    cpo = CPOTrainer.__new__(CPOTrainer)
    cpo.alpha, cpo.loss_type, cpo.simpo_gamma = 0.0, "simpo", gamma
    cpo.beta, cpo.label_smoothing = beta, smoothing
    cpo.accelerator = SimpleNamespace(device=torch.device("cpu"))
    losses, _, _ = cpo.cpo_loss(*avg.chunk(2))
    loss = losses.mean()
    loss.backward()
    config = {"loss_type": ["simpo"], "beta": beta, "simpo_gamma": gamma,
              "label_smoothing": smoothing, "reference_free": True}
    ours = run_ours(tmp_path, payload(config, batch, "none"))
    check(ours["loss"], loss, "simpo loss", "simpo")
    check(ours["grad_token_logps"], log_probs.grad, "simpo grad", "simpo")


def test_sft_with_weighting_where_trl_fails(tmp_path):
    """TRL 1.16 cannot combine sft with use_weighting: `per_sequence_loss *= weights` writes into
    the expanded scalar SFT loss and raises. Ours applies the weights out of place, which is what
    TRL's code means; checked as TRL(sigmoid, weighted) + w_sft · mean(sft_nll · weights)."""
    batch = make_batch(seed=17)
    with pytest.raises(RuntimeError, match="more than one element"):
        trl_dpo({"loss_type": ["sigmoid", "sft"], "use_weighting": True}, batch, "model")
    sigmoid_loss, _, _ = trl_dpo({"loss_type": ["sigmoid"], "use_weighting": True}, batch, "model")
    logps, lssp = batch["policy"]["log_probs"], batch["policy"]["log_sum_sq_probs"]
    mask = batch["completion_mask"][:, 1:]
    weights = torch.exp(((logps - lssp) * mask).sum(1) / mask.sum(1).clamp_min(1))
    chosen_w, rejected_w = weights.chunk(2)
    sft_nll = -logps[:PAIRS][mask[:PAIRS].bool()].mean()
    expected = sigmoid_loss + 0.5 * (sft_nll * chosen_w * rejected_w).mean()
    config = {"loss_type": ["sigmoid", "sft"], "use_weighting": True, "loss_weights": [1.0, 0.5]}
    ours = run_ours(tmp_path, payload(config, batch, "model"))
    check(ours["loss"], expected, "sigmoid+sft weighted loss", "sigmoid+sft (weighted)")


def _tiny_llama(seed: int):
    from transformers import LlamaConfig, LlamaForCausalLM
    from trl.trainer.utils import add_fused_lm_head

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=211, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                         tie_word_embeddings=False)
    model = LlamaForCausalLM(config).float()
    add_fused_lm_head(model, outputs=("log_probs", "entropy", "mean_logits", "is_top1",
                                      "log_sum_sq_probs"))
    return model


@pytest.mark.parametrize("config", [
    {"loss_type": ["sigmoid"], "beta": 0.5},
    {"loss_type": ["ipo"], "ld_alpha": 0.5},
    {"loss_type": ["sigmoid", "sft"], "loss_weights": [1.0, 0.2], "f_divergence_type": "js_divergence"},
    {"loss_type": ["apo_zero"], "use_weighting": True},
], ids=_case_id)
def test_end_to_end_matches_trl_on_tiny_llama(tmp_path, config):
    """Hidden states -> chunked log-probs -> loss, against _compute_loss with TRL's own fused LM
    head on a tiny random Llama (policy and reference initialised differently). Compared: the
    loss, the lm_head weight gradient and the logged metrics."""
    policy, reference = _tiny_llama(1), _tiny_llama(2).eval()
    batch = make_batch(seed=23)
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "completion_mask")}
    from trl import DPOTrainer

    trainer = DPOTrainer.__new__(DPOTrainer)
    trainer.model, trainer.ref_model = policy, reference
    policy.train()
    trainer.accelerator = SimpleNamespace(device=torch.device("cpu"), gather=lambda x: x,
                                          gather_for_metrics=lambda x: x)
    trainer.args = SimpleNamespace(gradient_checkpointing_kwargs=None, max_length=None,
                                   discopop_tau=0.05)
    trainer.beta = config.get("beta", 0.1)
    trainer.loss_types = config["loss_type"]
    trainer.loss_weights = config.get("loss_weights") or [1.0] * len(trainer.loss_types)
    trainer.ld_alpha = config.get("ld_alpha")
    trainer.f_divergence_type = config.get("f_divergence_type", "reverse_kl")
    trainer.f_alpha_divergence_coef = 0.5
    trainer.label_smoothing = 0.0
    trainer.use_weighting = config.get("use_weighting", False)
    trainer.aux_loss_enabled = False
    trainer.precompute_ref_logps = False
    trainer._metrics = {"train": defaultdict(list), "eval": defaultdict(list)}
    trainer._total_train_tokens, trainer._tp_size = 0, 1
    loss = trainer._compute_loss(policy, inputs, return_outputs=False)
    loss.backward()
    metrics = {k: v[-1] for k, v in trainer._metrics["train"].items()}

    with torch.no_grad():
        def hidden(model):
            return model.model(input_ids=inputs["input_ids"],
                               attention_mask=inputs["attention_mask"]).last_hidden_state
        ours = run_ours(tmp_path, {
            "mode": "pipeline", "options": config, "chunk_tokens": 16,
            "hidden": enc(hidden(policy)), "weight": enc(policy.lm_head.weight),
            "ref_hidden": enc(hidden(reference)), "ref_weight": enc(reference.lm_head.weight),
            "input_ids": enc(inputs["input_ids"]), "completion_mask": enc(inputs["completion_mask"])})
    key = "end-to-end " + "+".join(config["loss_type"])
    check(ours["loss"], loss, "loss", key)
    # The weight gradient is a sum over tokens of fp32 products: 1e-5 of its largest entry.
    grad = policy.lm_head.weight.grad
    err = (ours["grad_weight"] - grad.double()).abs().max().item()
    assert err <= REL * grad.abs().max().item(), f"lm_head grad: max error {err:.3g}"
    for name, value in metrics.items():
        if name != "num_tokens":
            assert abs(ours["metrics"][name] - value) <= REL * abs(value) + 1e-6, name


def test_rejects_what_trl_rejects(tmp_path):
    batch = make_batch(seed=3)
    for config, message in [
        ({"loss_type": ["exo_pair"]}, "exo_pair"),
        ({"loss_type": ["bco_pair"], "f_divergence_type": "forward_kl"},
         "dpo.f_divergence_type: forward_kl is not supported with loss type bco_pair"),
        ({"loss_type": ["aot"], "use_weighting": True}, "dpo.use_weighting: not supported with aot"),
        ({"loss_type": ["dpop"]}, 'dpo.loss_type[0]: unknown loss type "dpop"'),
    ]:
        src, dst = tmp_path / "in.json", tmp_path / "out.json"
        src.write_text(json.dumps(payload(config, batch, "model")))
        proc = subprocess.run([str(tool()), str(src), str(dst)], capture_output=True, text=True)
        assert proc.returncode == 1 and message in proc.stderr, (config, proc.stderr)


def test_zz_report_max_relative_errors():
    """Prints the worst relative error per loss type (run with -s to see it)."""
    assert MAX_REL_ERR, "no comparisons ran"
    for key, err in sorted(MAX_REL_ERR.items()):
        print(f"max relative error {key}: {err:.2e}")
        assert err <= REL
