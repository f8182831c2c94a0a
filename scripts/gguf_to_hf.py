"""Converts a Llama-architecture GGUF file into a Hugging Face model directory.

Contract: `convert(gguf_path, out_dir, eos_token=None)` writes into `out_dir` (which must not
exist yet):
  config.json            LlamaForCausalLM, from the llama.* metadata; tied embeddings when the
                         file has no output.weight
  model.safetensors      every tensor dequantized to float32 (gguf.quants.dequantize), so the
                         directory holds exactly the quantized model's values, not the original
                         release's; q/k rows put back in HF's rotary order
  tokenizer.json         byte-level BPE from tokenizer.ggml.{tokens,merges,token_type}, with the
                         pre-tokenizer that tokenizer.ggml.pre names (llama.cpp's table)
  tokenizer_config.json  special tokens, the file's chat template, no BOS added
It raises ValueError naming the metadata key or tensor it cannot convert. Python is the set-up's
language here (scripts/get_smollm2.py calls it); the product reads the directory it writes.

    .venv/bin/python scripts/gguf_to_hf.py MODEL.gguf OUT_DIR [--eos-token TOKEN]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

# llama.cpp's pre-tokenizer names (tokenizer.ggml.pre) as HF pre-tokenizer steps. "smollm" is
# llama.cpp's pair of regexes: every \p{N} character alone, then GPT-2's byte-level split (the
# same as HF's Digits(individual_digits) + ByteLevel).
_BYTE_LEVEL = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
PRE_TOKENIZERS = {
    "gpt2": [_BYTE_LEVEL],
    "smollm": [{"type": "Split", "pattern": {"Regex": "\\p{N}"}, "behavior": "Isolated",
                "invert": False}, _BYTE_LEVEL],
}

# GGUF token types (llama.cpp's llama_token_type): 3 control, 4 user-defined. Both are matched
# whole before BPE, as HF's added tokens; only control tokens are special (skipped on decode).
_CONTROL, _USER_DEFINED = 3, 4

# GGUF tensor names per layer -> HF parameter names.
_LAYER_TENSORS = {
    "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj",
}
_GLOBAL_TENSORS = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}


def _field(reader, key, default=None):
    field = reader.fields.get(key)
    if field is None:
        if default is None:
            raise ValueError(f"GGUF metadata '{key}' is missing")
        return default
    return field.contents()


def hf_name(gguf_name: str) -> str:
    """blk.3.attn_q.weight -> model.layers.3.self_attn.q_proj.weight."""
    base, _, suffix = gguf_name.rpartition(".")
    if base.startswith("blk."):
        _, layer, part = base.split(".", 2)
        if part in _LAYER_TENSORS:
            return f"model.layers.{layer}.{_LAYER_TENSORS[part]}.{suffix}"
    elif base in _GLOBAL_TENSORS:
        return f"{_GLOBAL_TENSORS[base]}.{suffix}"
    raise ValueError(f"GGUF tensor '{gguf_name}' has no Llama counterpart")


def unpermute_rotary(weight: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp's converter reorders each head's q/k rows from HF's half-split rotary layout
    (first half, second half) to interleaved pairs; this is the inverse."""
    rows = weight.shape[0]
    half = rows // heads // 2
    return weight.reshape(heads, half, 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def read_config(reader) -> dict:
    arch = _field(reader, "general.architecture")
    if arch != "llama":
        raise ValueError(f"general.architecture is '{arch}'; only 'llama' is converted")
    hidden = int(_field(reader, "llama.embedding_length"))
    heads = int(_field(reader, "llama.attention.head_count"))
    tokens = _field(reader, "tokenizer.ggml.tokens")
    has_output = any(t.name == "output.weight" for t in reader.tensors)
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": len(tokens),
        "hidden_size": hidden,
        "intermediate_size": int(_field(reader, "llama.feed_forward_length")),
        "num_hidden_layers": int(_field(reader, "llama.block_count")),
        "num_attention_heads": heads,
        "num_key_value_heads": int(_field(reader, "llama.attention.head_count_kv", heads)),
        "head_dim": int(_field(reader, "llama.rope.dimension_count", hidden // heads)),
        "max_position_embeddings": int(_field(reader, "llama.context_length")),
        "rms_norm_eps": float(_field(reader, "llama.attention.layer_norm_rms_epsilon")),
        "rope_parameters": {"rope_type": "default",
                            "rope_theta": float(_field(reader, "llama.rope.freq_base", 10000.0))},
        "hidden_act": "silu",
        "attention_bias": False,
        "mlp_bias": False,
        "tie_word_embeddings": not has_output,
        "dtype": "float32",
    }


def read_weights(reader, config: dict) -> dict[str, np.ndarray]:
    from gguf.quants import dequantize

    weights = {}
    for tensor in reader.tensors:
        name = hf_name(tensor.name)
        value = dequantize(tensor.data, tensor.tensor_type).astype(np.float32, copy=False)
        if ".attn_q." in tensor.name:
            value = unpermute_rotary(value, config["num_attention_heads"])
        elif ".attn_k." in tensor.name:
            value = unpermute_rotary(value, config["num_key_value_heads"])
        weights[name] = np.ascontiguousarray(value)
    return weights


def read_tokenizer(reader, eos_token: str | None) -> tuple[dict, dict]:
    """(tokenizer.json, tokenizer_config.json) contents."""
    if _field(reader, "tokenizer.ggml.model") != "gpt2":
        raise ValueError("tokenizer.ggml.model: only byte-level BPE ('gpt2') is converted")
    pre = _field(reader, "tokenizer.ggml.pre", "gpt2")
    if pre not in PRE_TOKENIZERS:
        raise ValueError(f"tokenizer.ggml.pre: '{pre}' is not one of {sorted(PRE_TOKENIZERS)}")
    tokens = _field(reader, "tokenizer.ggml.tokens")
    types = _field(reader, "tokenizer.ggml.token_type")
    merges = [m.split(" ") for m in _field(reader, "tokenizer.ggml.merges")]
    added = [{"id": i, "content": tokens[i], "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": False, "special": types[i] == _CONTROL}
             for i in range(len(tokens)) if types[i] in (_CONTROL, _USER_DEFINED)]
    steps = PRE_TOKENIZERS[pre]
    tokenizer = {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": steps[0] if len(steps) == 1 else {"type": "Sequence", "pretokenizers": steps},
        "post_processor": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False,
                           "use_regex": True},
        "decoder": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False,
                  "ignore_merges": False, "vocab": {t: i for i, t in enumerate(tokens)}, "merges": merges},
    }

    def token_of(key):
        return tokens[int(_field(reader, key))] if key in reader.fields else None

    eos = eos_token or token_of("tokenizer.ggml.eos_token_id")
    if eos not in tokenizer["model"]["vocab"]:
        raise ValueError(f"eos token '{eos}' is not in the vocabulary")
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": token_of("tokenizer.ggml.bos_token_id"),
        "eos_token": eos,
        # The padding id never reaches the loss (masked); EOS is what HF chat models pad with.
        "pad_token": eos,
        "unk_token": token_of("tokenizer.ggml.unknown_token_id"),
        # Chat templates write their own turn markers; a BOS in front would double the first.
        "add_bos_token": False,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": int(_field(reader, "llama.context_length")),
        "chat_template": _field(reader, "tokenizer.chat_template", ""),
    }
    return tokenizer, config


def convert(gguf_path: Path, out_dir: Path, eos_token: str | None = None) -> None:
    from gguf import GGUFReader
    from safetensors.numpy import save_file

    reader = GGUFReader(str(gguf_path))
    config = read_config(reader)
    tokenizer, tokenizer_config = read_tokenizer(reader, eos_token)
    vocab = tokenizer["model"]["vocab"]
    for key in ("bos_token", "eos_token", "pad_token"):
        config[f"{key}_id"] = vocab.get(tokenizer_config[key])
    out_dir.mkdir(parents=True)
    save_file(read_weights(reader, config), str(out_dir / "model.safetensors"), metadata={"format": "pt"})
    (out_dir / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    (out_dir / "tokenizer.json").write_text(json.dumps(tokenizer, ensure_ascii=False) + "\n")
    (out_dir / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("gguf", type=Path)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--eos-token", help="overrides tokenizer.ggml.eos_token_id")
    args = parser.parse_args()
    convert(args.gguf, args.out_dir, args.eos_token)


if __name__ == "__main__":
    main()
