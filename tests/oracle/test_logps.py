"""Chunked completion log-probs (common/loss/sequence_logps.h) against TRL 1.16 and PyTorch.

Oracles, computed in this run:
  * TRL's fused LM head (trl.trainer.utils.add_fused_lm_head) on a tiny random Llama: the per-token
    log_probs, entropy, log_sum_sq_probs, mean_logits and is_top1 that DPOTrainer reads, with
    TRL's masking (labels = input_ids where completion_mask, shifted by one), and the lm_head
    weight gradient of sum(seed * log_probs);
  * plain PyTorch: log_softmax over the full fp32 logits + gather, with autograd grads for the
    hidden states and the weight.
Ours runs through $DPO_BINARY_DIR/bin/dpo-loss-check. Tolerance: 1e-5 relative to the largest
magnitude of each compared tensor (fp32, sums in a different order).
"""

import json
import subprocess

import pytest
import torch

from loss_check_tool import enc, run_ours, tool

TOL = 1e-5


def assert_close(ours: torch.Tensor, ref: torch.Tensor, what: str) -> None:
    ref = ref.detach().double()
    scale = max(1.0, ref.abs().max().item())
    err = (ours - ref).abs().max().item()
    assert err <= TOL * scale, f"{what}: max abs error {err:.3g} > {TOL * scale:.3g}"


def make_masks(batch: int, time: int, gen: torch.Generator):
    """Right-padded rows, random prompt and completion lengths (one row may have 1 token)."""
    attention = torch.zeros(batch, time, dtype=torch.int64)
    completion = torch.zeros(batch, time, dtype=torch.int64)
    for b in range(batch):
        prompt = int(torch.randint(1, time // 2, (1,), generator=gen))
        length = int(torch.randint(prompt + 1, time + 1, (1,), generator=gen))
        attention[b, :length] = 1
        completion[b, prompt:length] = 1
    return attention, completion


def torch_reference(hidden, weight, input_ids, completion_mask):
    logits = hidden[:, :-1].float() @ weight.float().t()
    labels = input_ids[:, 1:].masked_fill(completion_mask[:, 1:] == 0, 0)
    mask = completion_mask[:, 1:].bool()
    log_p = logits.log_softmax(-1)
    logps = log_p.gather(-1, labels.unsqueeze(-1)).squeeze(-1) * mask
    p = log_p.exp()
    return {
        "token_logps": logps,
        "token_entropy": -(p * log_p).sum(-1) * mask,
        "token_log_sum_sq_probs": (p * p).sum(-1).log() * mask,
        "token_mean_logits": logits.mean(-1) * mask,
        "token_is_top1": (logits.argmax(-1) == labels) & mask,
    }


@pytest.mark.parametrize("chunk_tokens", [1, 7, 512])
def test_chunked_matches_pytorch_log_softmax(tmp_path, chunk_tokens):
    gen = torch.Generator().manual_seed(1234 + chunk_tokens)
    batch, time, hidden_size, vocab = 4, 13, 24, 301
    hidden = torch.randn(batch, time, hidden_size, generator=gen, requires_grad=True)
    weight = (0.3 * torch.randn(vocab, hidden_size, generator=gen)).requires_grad_()
    input_ids = torch.randint(0, vocab, (batch, time), generator=gen)
    _, completion = make_masks(batch, time, gen)
    seed = torch.randn(batch, time - 1, generator=gen)

    ref = torch_reference(hidden, weight, input_ids, completion)
    (ref["token_logps"] * seed).sum().backward()
    payload = {"mode": "logps", "hidden": enc(hidden), "weight": enc(weight),
               "input_ids": enc(input_ids), "completion_mask": enc(completion),
               "grad_seed": enc(seed), "chunk_tokens": chunk_tokens}
    ours = run_ours(tmp_path, payload)
    for key, value in ref.items():
        if key == "token_is_top1":
            assert torch.equal(ours[key].bool(), value), key
        else:
            assert_close(ours[key], value, key)
    assert_close(ours["grad_hidden"], hidden.grad, "grad_hidden")
    assert_close(ours["grad_weight"], weight.grad, "grad_weight")
    assert torch.equal(ours["completion_tokens"], completion.sum(1).double())
    # The non-chunked C++ reference agrees too.
    ref_cc = run_ours(tmp_path, {**payload, "reference": True})
    assert_close(ref_cc["token_logps"], ref["token_logps"], "reference token_logps")
    assert_close(ref_cc["grad_weight"], weight.grad, "reference grad_weight")


def test_matches_trl_fused_lm_head_on_tiny_llama(tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM
    from trl.trainer.utils import add_fused_lm_head

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=257, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                         tie_word_embeddings=False)
    model = LlamaForCausalLM(config).float().eval()
    outputs = ("log_probs", "entropy", "mean_logits", "is_top1", "log_sum_sq_probs")
    add_fused_lm_head(model, outputs=outputs)

    gen = torch.Generator().manual_seed(99)
    batch, time = 6, 17
    input_ids = torch.randint(0, config.vocab_size, (batch, time), generator=gen)
    attention, completion = make_masks(batch, time, gen)
    # As in DPOTrainer._compute_loss: prompt and padding labels are -100.
    labels = input_ids.masked_fill(completion == 0, -100)
    out = model(input_ids=input_ids, attention_mask=attention, labels=labels, fused_lm_head=True)
    seed = torch.randn(batch, time - 1, generator=gen)
    (out.log_probs * seed).sum().backward()
    with torch.no_grad():
        hidden = model.model(input_ids=input_ids, attention_mask=attention).last_hidden_state

    ours = run_ours(tmp_path, {
        "mode": "logps", "hidden": enc(hidden), "weight": enc(model.lm_head.weight),
        "input_ids": enc(input_ids), "completion_mask": enc(completion),
        "grad_seed": enc(seed), "chunk_tokens": 5})
    assert_close(ours["token_logps"], out.log_probs, "log_probs")
    assert_close(ours["token_entropy"], out.entropy, "entropy")
    assert_close(ours["token_log_sum_sq_probs"], out.log_sum_sq_probs, "log_sum_sq_probs")
    assert_close(ours["token_mean_logits"], out.mean_logits, "mean_logits")
    assert torch.equal(ours["token_is_top1"].bool(), out.is_top1.bool()), "is_top1"
    assert torch.equal(ours["label_mask"].bool(), out.label_mask), "label_mask"
    assert_close(ours["grad_weight"], model.lm_head.weight.grad, "lm_head grad")


def test_rejects_label_outside_vocabulary(tmp_path):
    hidden = torch.randn(1, 4, 3)
    weight = torch.randn(5, 3)
    input_ids = torch.tensor([[0, 1, 9, 2]])
    payload = {"mode": "logps", "hidden": enc(hidden), "weight": enc(weight),
               "input_ids": enc(input_ids), "completion_mask": enc(torch.tensor([[0, 1, 1, 1]])),
               "grad_seed": enc(torch.ones(1, 3))}
    src, dst = tmp_path / "in.json", tmp_path / "out.json"
    src.write_text(json.dumps(payload))
    proc = subprocess.run([str(tool()), str(src), str(dst)], capture_output=True, text=True)
    assert proc.returncode == 1
    assert "outside the vocabulary" in proc.stderr
