#!/usr/bin/env python3
"""Convert the Gemma 3 270M GGUF into a float32 safetensors Hugging Face folder for vLLM.

Run with the vLLM venv's Python (it needs torch, transformers, gguf):

    python scripts/convert_gemma_gguf_to_hf.py --gguf PATH.gguf --out DIR [--chat-template FILE]

What it does (docs/architecture.md, "Real upstreams"):
  * transformers ``from_pretrained(dir, gguf_file=name)`` for the model (dequantized, float32)
    and the tokenizer;
  * drops ``config.quantization_config`` (the GGUF loader sets it; vLLM would then look for a
    quantization method) before ``save_pretrained``;
  * the tokenizer built from the GGUF adds no ``<bos>``: its post-processor is replaced so that
    it prepends ``<bos>`` to every encoding, as llama.cpp does (``add_special``);
  * writes the Gemma chat template into the tokenizer config when one is given;
  * checks the saved folder loads back and that "Hello world" encodes with a leading ``<bos>``.

Skips everything when ``DIR/.entropy-sentinel-complete`` matches this GGUF and converter version.
The marker is written last, so an interrupted run is redone from scratch.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import sys
import time
from pathlib import Path

CONVERTER_VERSION = "1"
MARKER = ".entropy-sentinel-complete"
REQUIRED_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json")


def log(msg: str) -> None:
    print(f"[convert {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def marker_key(gguf: Path, template: Path | None) -> str:
    st = gguf.stat()
    key = {
        "converter": CONVERTER_VERSION,
        "gguf": gguf.name,
        "gguf_size": st.st_size,
        "chat_template_sha256": (
            hashlib.sha256(template.read_bytes()).hexdigest() if template else None
        ),
    }
    return json.dumps(key, sort_keys=True)


def is_complete(out: Path, key: str) -> bool:
    marker = out / MARKER
    if not marker.is_file() or marker.read_text() != key:
        return False
    if not all((out / f).is_file() for f in REQUIRED_FILES):
        return False
    return any(out.glob("*.safetensors"))


def fix_bos(tokenizer) -> int:
    """Make the fast tokenizer prepend <bos> (single and pair), like llama.cpp."""
    from tokenizers import processors

    bos = tokenizer.bos_token or "<bos>"
    bos_id = tokenizer.convert_tokens_to_ids(bos)
    if bos_id is None or bos_id == tokenizer.unk_token_id:
        raise SystemExit(f"tokenizer has no id for bos token {bos!r}")
    tokenizer._tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{bos}:0 $A:0",
        pair=f"{bos}:0 $A:0 $B:1",
        special_tokens=[(bos, bos_id)],
    )
    # Keep the slow-tokenizer style flags coherent with the post-processor, where they exist.
    for attr in ("add_bos_token", "_add_bos_token"):
        if hasattr(tokenizer, attr):
            with contextlib.suppress(Exception):
                setattr(tokenizer, attr, True)
    for attr in ("add_eos_token", "_add_eos_token"):
        if hasattr(tokenizer, attr):
            with contextlib.suppress(Exception):
                setattr(tokenizer, attr, False)
    # Setting add_bos_token may have rebuilt the post-processor: set ours again, last.
    tokenizer._tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{bos}:0 $A:0",
        pair=f"{bos}:0 $A:0 $B:1",
        special_tokens=[(bos, bos_id)],
    )
    return bos_id


def convert(gguf: Path, out: Path, template: Path | None) -> None:
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log(f"transformers {transformers.__version__}, torch {torch.__version__}")
    tmp = out.with_name(out.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)

    t0 = time.monotonic()
    log(f"loading tokenizer from {gguf}")
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    before = tokenizer("Hello world")["input_ids"]
    bos_id = fix_bos(tokenizer)
    after = tokenizer("Hello world")["input_ids"]
    log(f"tokenizer {type(tokenizer).__name__}: 'Hello world' -> {before} before fix, {after} after")
    if not after or after[0] != bos_id or after.count(bos_id) != 1:
        raise SystemExit(f"bos fix did not take: {after}")
    if template is not None:
        tokenizer.chat_template = template.read_text()
        log(f"chat template from {template}")
    else:
        log("no chat template given: pass --chat-template when serving")

    log("loading model (dequantizing the GGUF to float32)")
    dtype_kw = {"dtype": torch.float32}
    try:
        model = AutoModelForCausalLM.from_pretrained(
            str(gguf.parent), gguf_file=gguf.name, **dtype_kw
        )
    except TypeError:  # older transformers: torch_dtype
        model = AutoModelForCausalLM.from_pretrained(
            str(gguf.parent), gguf_file=gguf.name, torch_dtype=torch.float32
        )
    model = model.to(torch.float32)
    n_params = sum(p.numel() for p in model.parameters())
    log(f"model {type(model).__name__}: {n_params / 1e6:.1f} M parameters, loaded in {time.monotonic() - t0:.0f} s")

    cfg = model.config
    if hasattr(cfg, "quantization_config"):
        delattr(cfg, "quantization_config")
        log("dropped config.quantization_config")
    if hasattr(model, "hf_quantizer"):
        model.hf_quantizer = None
    if getattr(model, "is_quantized", False):
        with contextlib.suppress(Exception):
            model.is_quantized = False

    log(f"saving to {tmp}")
    model.save_pretrained(str(tmp), safe_serialization=True)
    tokenizer.save_pretrained(str(tmp))

    # Drop any leftover quantization entry from the written config, whatever wrote it.
    cfg_path = tmp / "config.json"
    cfg_json = json.loads(cfg_path.read_text())
    if cfg_json.pop("quantization_config", None) is not None:
        cfg_path.write_text(json.dumps(cfg_json, indent=2, sort_keys=True) + "\n")
        log("removed quantization_config from config.json")

    # Load back: the tokenizer must still prepend exactly one <bos>.
    tok2 = AutoTokenizer.from_pretrained(str(tmp))
    ids = tok2("Hello world")["input_ids"]
    if not ids or ids[0] != bos_id or ids.count(bos_id) != 1:
        raise SystemExit(f"saved tokenizer does not prepend <bos>: {ids}")
    if template is not None and not tok2.chat_template:
        raise SystemExit("saved tokenizer lost its chat template")
    log(
        f"reloaded tokenizer ok: 'Hello world' -> {ids}; architectures={cfg_json.get('architectures')}, "
        f"model_type={cfg_json.get('model_type')}"
    )

    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    log(f"wrote {out} ({size / 1e6:.0f} MB) in {time.monotonic() - t0:.0f} s")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gguf", required=True, type=Path, help="path of the Gemma 3 GGUF file")
    ap.add_argument("--out", required=True, type=Path, help="output HF folder")
    ap.add_argument("--chat-template", type=Path, default=None, help="Jinja chat template to embed")
    ap.add_argument("--force", action="store_true", help="convert even if the folder is complete")
    args = ap.parse_args(argv)

    gguf = args.gguf.resolve()
    if not gguf.is_file():
        raise SystemExit(f"no GGUF at {gguf}")
    template = args.chat_template.resolve() if args.chat_template else None
    if template is not None and not template.is_file():
        raise SystemExit(f"no chat template at {template}")
    out = args.out.expanduser().resolve()
    key = marker_key(gguf, template)
    if not args.force and is_complete(out, key):
        log(f"{out} already complete; skipping conversion")
        return 0
    out.parent.mkdir(parents=True, exist_ok=True)
    convert(gguf, out, template)
    (out / MARKER).write_text(key)
    log("conversion complete")
    return 0


if __name__ == "__main__":
    sys.exit(main())
