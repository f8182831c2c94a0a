#!/usr/bin/env python3
"""Trains the demo tokenizer (examples/tokenizer/) on the demo data (examples/data/).

A Llama-3-style byte-level BPE: the Llama-3 split regex, then ByteLevel bytes-to-unicode,
1000 tokens (the 256 byte symbols, <|endoftext|> and merges), small enough for the tiny demo
model (vocab 1024). <|endoftext|> is BOS (added in front by the post-processor, as Llama-3 adds
<|begin_of_text|>), EOS and padding. Deterministic: the same data gives the same files.

    .venv/bin/python scripts/make_example_tokenizer.py [--data FILE] [--out DIR]
"""
import argparse
import json
from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

ROOT = Path(__file__).resolve().parent.parent
SPECIAL = "<|endoftext|>"
VOCAB_SIZE = 1000
# Llama-3's pre-tokenization pattern (GPT-4 style; splits digits in runs of up to 3).
SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
         r"|\s*[\r\n]+|\s+(?!\S)|\s+")


def texts(path):
    with open(path, encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            for key in ("prompt", "chosen", "rejected"):
                if isinstance(row.get(key), str):
                    yield row[key]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=ROOT / "examples/data/hh_rlhf_sample.jsonl", type=Path)
    parser.add_argument("--out", default=ROOT / "examples/tokenizer", type=Path)
    args = parser.parse_args()

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(SPLIT), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False),
    ])
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB_SIZE, special_tokens=[SPECIAL], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(texts(args.data), trainer=trainer)
    eot = tokenizer.token_to_id(SPECIAL)
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{SPECIAL} $A", pair=f"{SPECIAL} $A {SPECIAL} $B", special_tokens=[(SPECIAL, eot)])

    args.out.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(args.out / "tokenizer.json"))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": SPECIAL,
        "eos_token": SPECIAL,
        "pad_token": SPECIAL,
        "model_max_length": 2048,
        "clean_up_tokenization_spaces": False,
    }
    (args.out / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    print(f"{args.out}: vocab {tokenizer.get_vocab_size()}")


if __name__ == "__main__":
    main()
