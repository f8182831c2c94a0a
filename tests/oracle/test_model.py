"""Oracle: our LibTorch Llama-family model (dpo-model-check) vs transformers on tiny random
models of each supported architecture, plus checkpoint round trips through both libraries.

Tolerances: fp32 logits max|ours - HF| <= 1e-4 * max|HF logit|; per-token log-probs within 1e-4
(absolute). Both run the same fp32 math in a different op order, so differences are rounding only.
"""
import json
import os
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import (AutoModelForCausalLM, LlamaConfig, MistralConfig, Qwen2Config,
                          Qwen3Config)

BIN = Path(os.environ.get("DPO_BINARY_DIR", "build")) / "bin" / "dpo-model-check"
VOCAB = 300
COMMON = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
              num_attention_heads=4, max_position_embeddings=128, rms_norm_eps=1e-5,
              bos_token_id=1, eos_token_id=2, pad_token_id=0)

ARCHS = {
    "llama2": lambda: LlamaConfig(**COMMON, num_key_value_heads=4),
    "llama31": lambda: LlamaConfig(**COMMON, num_key_value_heads=2, rope_parameters={
        "rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
        "high_freq_factor": 4.0, "original_max_position_embeddings": 32}),
    "mistral": lambda: MistralConfig(**COMMON, num_key_value_heads=2, sliding_window=64),
    "qwen2": lambda: Qwen2Config(**COMMON, num_key_value_heads=2),
    "qwen3": lambda: Qwen3Config(**COMMON, num_key_value_heads=2, head_dim=32,
                                 tie_word_embeddings=True),
    "qwen3_bias_untied": lambda: Qwen3Config(**COMMON, num_key_value_heads=1, head_dim=16,
                                             attention_bias=True, tie_word_embeddings=False),
    "llama_gqa_tied": lambda: LlamaConfig(**{**COMMON, "num_attention_heads": 8},
                                          num_key_value_heads=2, tie_word_embeddings=True),
    # Windows shorter than the sequences (random_ids: 12 tokens). transformers 5 applies
    # sliding_window in MistralForCausalLM on every layer, and in Qwen2/Qwen3 only with
    # use_sliding_window on the layers from max_window_layers on (layer_types).
    "mistral_window5": lambda: MistralConfig(**COMMON, num_key_value_heads=2, sliding_window=5),
    "qwen2_window5_layer1": lambda: Qwen2Config(**COMMON, num_key_value_heads=2, use_sliding_window=True,
                                                sliding_window=5, max_window_layers=1),
}

# Max errors seen, printed at the end of the run (pytest -s) for the report.
MEASURED = {}


def make_hf_model(arch, seed=0, attn_implementation=None):
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(ARCHS[arch](), dtype=torch.float32,
                                             attn_implementation=attn_implementation)
    # transformers inits biases to 0 and norms to 1; randomize everything so every parameter
    # (biases, q/k norms, norm weights) influences the comparison.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
            else:
                p.normal_(0.0, 0.05)
    return model.eval()


def run_ours(model_dir, ids, tmp_path, position_ids=None, extra=()):
    inputs = {"input_ids": ids.contiguous()}
    if position_ids is not None:
        inputs["position_ids"] = position_ids.contiguous()
    ids_file, out_file = tmp_path / "ids.safetensors", tmp_path / "out.safetensors"
    save_file(inputs, str(ids_file))
    subprocess.run([str(BIN), "logits", "--model", str(model_dir), "--ids", str(ids_file),
                    "--out", str(out_file), *extra], check=True)
    return load_file(str(out_file))["logits"]


def hf_logits(model, ids, position_ids=None):
    with torch.no_grad():
        return model(input_ids=ids, position_ids=position_ids).logits.float()


def compare(name, ours, ref):
    assert ours.shape == ref.shape
    scale = ref.abs().max().item()
    err = (ours - ref).abs().max().item()
    lp_err = (torch.log_softmax(ours.double(), -1) - torch.log_softmax(ref.double(), -1)).abs().max().item()
    MEASURED[name] = (err / scale, lp_err)
    print(f"{name}: max|dlogit|={err:.3e} max|logit|={scale:.3e} rel={err / scale:.3e} "
          f"max|dlogprob|={lp_err:.3e}")
    assert err <= 1e-4 * scale, f"{name}: max|dlogit| {err} > 1e-4 * {scale}"
    assert lp_err <= 1e-4, f"{name}: log-prob error {lp_err}"


def random_ids(batch=2, length=12, seed=1):
    return torch.randint(0, VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_logits_match_transformers(arch, tmp_path):
    model = make_hf_model(arch)
    model.save_pretrained(tmp_path / "hf")
    ids = random_ids()
    compare(arch, run_ours(tmp_path / "hf", ids, tmp_path), hf_logits(model, ids))


def test_explicit_position_ids(tmp_path):
    model = make_hf_model("llama31")
    model.save_pretrained(tmp_path / "hf")
    ids = random_ids()
    pos = torch.stack([torch.arange(12) + 5, torch.arange(12) + 40])
    compare("llama31+position_ids", run_ours(tmp_path / "hf", ids, tmp_path, pos),
            hf_logits(model, ids, pos))


def test_activation_checkpointing_flag_keeps_logits(tmp_path):
    model = make_hf_model("qwen3")
    model.save_pretrained(tmp_path / "hf")
    ids = random_ids()
    compare("qwen3+checkpointing", run_ours(tmp_path / "hf", ids, tmp_path, extra=["--checkpointing"]),
            hf_logits(model, ids))


@pytest.mark.parametrize("arch", ["llama31", "qwen2", "qwen3"])
def test_our_save_loads_in_transformers(arch, tmp_path):
    model = make_hf_model(arch)
    model.save_pretrained(tmp_path / "hf")
    (tmp_path / "hf" / "tokenizer_config.json").write_text('{"model_max_length": 128}')
    subprocess.run([str(BIN), "save", "--model", str(tmp_path / "hf"), "--out",
                    str(tmp_path / "ours")], check=True)
    assert (tmp_path / "ours" / "tokenizer_config.json").exists()
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "ours", dtype=torch.float32).eval()
    ids = random_ids()
    # Same fp32 weights written back: transformers must reproduce its own logits exactly.
    assert torch.equal(hf_logits(reloaded, ids), hf_logits(model, ids))


@pytest.mark.parametrize("arch", ["llama2", "qwen3"])
def test_random_init_from_cpp_loads_in_transformers(arch, tmp_path):
    (tmp_path / "cfg").mkdir()
    ARCHS[arch]().save_pretrained(tmp_path / "cfg")
    subprocess.run([str(BIN), "init", "--config", str(tmp_path / "cfg" / "config.json"),
                    "--seed", "7", "--out", str(tmp_path / "ours")], check=True)
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "ours", dtype=torch.float32).eval()
    weights = load_file(str(tmp_path / "ours" / "model.safetensors"))
    w = weights["model.layers.0.mlp.up_proj.weight"]
    assert abs(w.std().item() - 0.02) < 0.003  # initializer_range
    assert ("lm_head.weight" in weights) == (not model.config.tie_word_embeddings)
    ids = random_ids()
    compare(f"{arch}+cpp_init", run_ours(tmp_path / "ours", ids, tmp_path), hf_logits(model, ids))


def test_sharded_checkpoints_both_ways(tmp_path):
    model = make_hf_model("llama_gqa_tied")
    model.save_pretrained(tmp_path / "hf", max_shard_size="40KB")
    assert (tmp_path / "hf" / "model.safetensors.index.json").exists()
    ids = random_ids()
    ref = hf_logits(model, ids)
    compare("sharded_read", run_ours(tmp_path / "hf", ids, tmp_path), ref)
    subprocess.run([str(BIN), "save", "--model", str(tmp_path / "hf"), "--out", str(tmp_path / "ours"),
                    "--max-shard-bytes", "50000"], check=True)
    index = json.loads((tmp_path / "ours" / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "ours", dtype=torch.float32).eval()
    assert torch.equal(hf_logits(reloaded, ids), ref)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_checkpoint_read(dtype, tmp_path):
    make_hf_model("qwen2").to(dtype).save_pretrained(tmp_path / "hf")
    # The reference is transformers' own upcast of the same stored weights.
    ref_model = AutoModelForCausalLM.from_pretrained(tmp_path / "hf", dtype=torch.float32).eval()
    ids = random_ids()
    compare(f"qwen2_{dtype}_checkpoint", run_ours(tmp_path / "hf", ids, tmp_path), hf_logits(ref_model, ids))


def test_bf16_forward_close_to_fp32(tmp_path):
    model = make_hf_model("llama31")
    model.save_pretrained(tmp_path / "hf")
    ids = random_ids()
    ours = run_ours(tmp_path / "hf", ids, tmp_path, extra=["--dtype", "bfloat16"])
    ref = hf_logits(model, ids)
    rel = ((ours - ref).abs().max() / ref.abs().max()).item()
    print(f"llama31 bf16 forward vs HF fp32: rel={rel:.3e}")
    assert rel <= 2e-2


def test_missing_tensor_is_a_clear_error(tmp_path):
    model = make_hf_model("llama2")
    model.save_pretrained(tmp_path / "hf")
    weights = load_file(str(tmp_path / "hf" / "model.safetensors"))
    del weights["model.layers.1.self_attn.k_proj.weight"]
    save_file(weights, str(tmp_path / "hf" / "model.safetensors"), metadata={"format": "pt"})
    ids_file = tmp_path / "ids.safetensors"
    save_file({"input_ids": random_ids()}, str(ids_file))
    res = subprocess.run([str(BIN), "logits", "--model", str(tmp_path / "hf"), "--ids", str(ids_file),
                          "--out", str(tmp_path / "out.safetensors")], capture_output=True, text=True)
    assert res.returncode == 1  # a failed command; 2 is bad usage (docs/cli.md)
    assert "model.layers.1.self_attn.k_proj.weight" in res.stderr and "missing" in res.stderr


@pytest.mark.parametrize("arch,checkpointing", [("llama31", False), ("qwen3", True),
                                                ("qwen2", True), ("llama_gqa_tied", False)])
def test_gradients_match_transformers(arch, checkpointing, tmp_path):
    """Backward parity: d(sum of label log-probs)/d(every parameter), ours vs transformers, with
    and without activation checkpointing. Tolerance: max|dgrad| <= 1e-4 * max|grad| per tensor."""
    model = make_hf_model(arch)
    model.save_pretrained(tmp_path / "hf")
    ids = random_ids()
    labels = torch.roll(ids, -1, dims=1)
    labels[:, -1] = -100
    labels[1, 8:] = -100  # a right-padded row
    save_file({"input_ids": ids, "labels": labels}, str(tmp_path / "in.safetensors"))
    cmd = [str(BIN), "grads", "--model", str(tmp_path / "hf"), "--ids", str(tmp_path / "in.safetensors"),
           "--out", str(tmp_path / "grads.safetensors")]
    subprocess.run(cmd + (["--checkpointing"] if checkpointing else []), check=True)
    ours = load_file(str(tmp_path / "grads.safetensors"))

    model.train()  # dropout is 0 in these configs; train mode only enables grads as in training
    logps = torch.log_softmax(model(input_ids=ids).logits.float(), -1)
    mask = labels != -100
    loss = (logps.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1) * mask).sum()
    loss.backward()
    assert abs(ours["loss"].item() - loss.item()) <= 1e-5 * abs(loss.item())
    worst = 0.0
    names = {n for n, _ in model.named_parameters()}
    assert set(ours) - {"loss"} == names
    for name, p in model.named_parameters():
        scale = p.grad.abs().max().item()
        err = (ours[name] - p.grad).abs().max().item()
        assert scale > 0, name
        assert err <= 1e-4 * scale, f"{name}: {err} > 1e-4 * {scale}"
        worst = max(worst, err / scale)
    MEASURED[f"{arch}+grads{'+ckpt' if checkpointing else ''}"] = (worst, 0.0)
    print(f"{arch} grads (checkpointing={checkpointing}): worst rel {worst:.3e}")


def hf_label_logps(model, ids, first_label):
    """log p(ids[t+1] | ids[:t+1]) for t >= first_label, from transformers' forward of `ids`."""
    logps = torch.log_softmax(model(input_ids=ids[None]).logits[0].float(), -1)
    return logps[first_label:-1].gather(-1, ids[first_label + 1:, None]).sum()


@pytest.mark.parametrize("attn_implementation", ["sdpa", "eager"])
@pytest.mark.parametrize("arch", ["mistral_window5", "qwen2_window5_layer1"])
def test_sliding_window_padded_and_packed_match_transformers(arch, attn_implementation, tmp_path):
    """Sequences 2-4x longer than the window 5: p+x and p+y share a 9-token prompt, z stands
    alone. Ours, in right-padded rows and in one packed row (y attending to x's copy of p, as
    padding-free batches lay it out), through both span kernels, against transformers running each
    sequence alone: logits and gradients within the tolerances above. The window must matter:
    transformers without it gives other logits."""
    model = make_hf_model(arch, attn_implementation=attn_implementation)
    model.save_pretrained(tmp_path / "hf")
    gen = torch.Generator().manual_seed(3)
    p, x, y, z = (torch.randint(3, VOCAB, (n,), generator=gen) for n in (9, 8, 6, 17))
    sequences = {"px": torch.cat([p, x]), "py": torch.cat([p, y]), "z": z}
    ref = {name: hf_logits(model, seq[None])[0] for name, seq in sequences.items()}

    no_window = {"sliding_window": None}
    if model.config.model_type != "mistral":  # Qwen2's windowed layers would need a window
        no_window["layer_types"] = ["full_attention"] * model.config.num_hidden_layers
    unwindowed = AutoModelForCausalLM.from_pretrained(tmp_path / "hf", dtype=torch.float32,
                                                      **no_window).eval()
    drift = (hf_logits(unwindowed, sequences["py"][None])[0] - ref["py"]).abs().max().item()
    assert drift > 1e-3 * ref["py"].abs().max().item(), "the window changes nothing: test too weak"

    width = len(sequences["px"]) + len(sequences["z"])
    padded = torch.zeros(3, width, dtype=torch.int64)
    for row, seq in enumerate(sequences.values()):
        padded[row, :len(seq)] = seq
    logits = run_ours(tmp_path / "hf", padded, tmp_path)
    for row, (name, seq) in enumerate(sequences.items()):
        compare(f"{arch}+{attn_implementation}+padded+{name}", logits[row, :len(seq)], ref[name])

    # One row: [p x][y][z][2 padding tokens]; y's positions continue p's.
    row = torch.cat([p, x, y, z, torch.zeros(2, dtype=torch.int64)])[None]
    positions = torch.cat([torch.arange(17), torch.arange(9, 15), torch.arange(17), torch.arange(2)])[None]
    spans = torch.tensor([[0, 0, 17, 0, 0], [0, 17, 6, 0, 9], [0, 23, 17, 0, 0], [0, 40, 2, 0, 0]])
    labels = torch.full_like(row, -100)  # next token within each span: x after p, y after y, z after z
    for start, length in ((0, 17), (17, 6), (23, 17)):
        labels[0, start:start + length - 1] = row[0, start + 1:start + length]
    save_file({"input_ids": row, "position_ids": positions, "spans": spans, "labels": labels},
              str(tmp_path / "packed.safetensors"))
    model.train()  # dropout is 0; enables the gradients of the reference loss below
    model.zero_grad()
    loss = (hf_label_logps(model, sequences["px"], 0) + hf_label_logps(model, sequences["py"], 9) +
            hf_label_logps(model, sequences["z"], 0))
    loss.backward()
    for kernel in ("per-span", "mask"):
        name = f"{arch}+{attn_implementation}+packed+{kernel}"
        out = tmp_path / f"{kernel}.safetensors"
        subprocess.run([str(BIN), "logits", "--model", str(tmp_path / "hf"), "--ids",
                        str(tmp_path / "packed.safetensors"), "--out", str(out),
                        "--span-attention", kernel], check=True)
        packed = load_file(str(out))["logits"][0]
        compare(f"{name}+px", packed[:17], ref["px"])
        compare(f"{name}+py", packed[17:23], ref["py"][9:])
        compare(f"{name}+z", packed[23:40], ref["z"])

        subprocess.run([str(BIN), "grads", "--model", str(tmp_path / "hf"), "--ids",
                        str(tmp_path / "packed.safetensors"), "--out", str(out),
                        "--span-attention", kernel], check=True)
        grads = load_file(str(out))
        assert abs(grads["loss"].item() - loss.item()) <= 1e-5 * abs(loss.item())
        worst = 0.0
        for pname, param in model.named_parameters():
            scale = param.grad.abs().max().item()
            err = (grads[pname] - param.grad).abs().max().item()
            assert scale > 0, pname
            assert err <= 1e-4 * scale, f"{name} {pname}: {err} > 1e-4 * {scale}"
            worst = max(worst, err / scale)
        MEASURED[f"{name}+grads"] = (worst, 0.0)


def test_zz_print_measured():
    for name, (rel, lp) in sorted(MEASURED.items()):
        print(f"MEASURED {name}: rel_logit={rel:.2e} logprob={lp:.2e}")
    assert MEASURED
