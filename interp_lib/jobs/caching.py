"""The workflow's caching job: one model on one scenario's prompts, written to its cache file."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..cache import CacheError, CacheStorage, CacheWriter, collect_variant, file_attrs, unembed_arrays


def unknown_words(tokenizer, text: str) -> list[str]:
    """The pieces of `text` that `tokenizer` maps to its unknown token, in order (none for a
    byte-level or byte-fallback tokenizer, which has no unknown pieces)."""
    unk = tokenizer.unk_token_id
    if unk is None:
        return []
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    return list(dict.fromkeys(text[a:b] for i, (a, b) in zip(enc["input_ids"], enc["offset_mapping"]) if i == unk))


def build_cache_file(model_dir: str | Path, model_name: str, scenario: str, records: list[dict],
                     out: str | Path, precision: str = "float32", device: str = "cpu",
                     cache_dtype: str = "float32", cache_compression: str = "none") -> None:
    """Runs a merged model on one scenario's prompt records, in a precision mode (see
    precision.py; the merged weights are stored in its weights' dtype), and writes its cache
    file, stored as `cache_dtype` / `cache_compression` (cache.CacheStorage), a prompt at a time."""
    from tqdm import tqdm

    from ..model.loading import load_hooked, read_fingerprint, state_fingerprint
    from ..model.precision import get_precision
    from ..tokens import (COOPERATE, DEFECT, ActionTokenError, decision_input_ids, get_action_token_ids,
                          labelled_action_tokens, token_texts, tokenizer_hash)

    storage = CacheStorage(cache_dtype, cache_compression)  # bad values fail before the model loads
    mode = get_precision(precision)
    dtype = mode.weights_name
    hooked = load_hooked(model_dir, mode, device, model_name, with_tokenizer=True)
    model, tokenizer = hooked.model, hooked.tokenizer
    expected = read_fingerprint(model_dir)["fingerprint"]
    fingerprint = state_fingerprint(model)
    if fingerprint != expected:
        raise CacheError(
            f"model {model_name}: weights in {model_dir} differ from its fingerprint.json "
            f"(loaded in {dtype}?); rerun its merge (delete {model_dir})"
        )
    symbols = {tuple(rec.get("symbols") or (COOPERATE, DEFECT)) for rec in records}
    if len(symbols) != 1:
        raise ValueError(f"scenario {scenario}: its prompts use different action labels {sorted(symbols)}")
    try:
        action_tokens = get_action_token_ids(tokenizer, *symbols.pop())
    except ActionTokenError as exc:
        raise ActionTokenError(f"model {model_name}, scenario {scenario}: {exc}") from None
    limit = getattr(model.config, "max_position_embeddings", None)
    inputs = {}
    for rec in records:
        unknown = unknown_words(tokenizer, rec["prompt"])
        if unknown:
            raise ValueError(
                f"model {model_name} cannot tokenize scenario {scenario}: {len(unknown)} words of its prompt are "
                f"not in its vocabulary ({', '.join(repr(w) for w in unknown[:5])}); leave the scenario out for "
                f"this model (the embedded family's word-level vocabulary knows the table format only)"
            )
        ids = decision_input_ids(tokenizer, rec["prompt"], action_tokens)
        if limit is not None and ids.shape[-1] > limit:
            raise ValueError(
                f"model {model_name}: prompt {scenario}/{rec['variant']} has {ids.shape[-1]} tokens, "
                f"more than the model's context of {limit}"
            )
        inputs[rec["variant"]] = ids.to(hooked.device)
    unembed = unembed_arrays(hooked, action_tokens)
    attrs = file_attrs(hooked, model_name, scenario, fingerprint, tokenizer_hash(tokenizer), action_tokens)
    # Each prompt is written as soon as it is run: memory holds one prompt's arrays, not all of them.
    with CacheWriter(out, attrs, unembed, storage) as writer, mode.matmuls():
        for rec in tqdm(records, desc=f"cache {model_name}/{scenario}"):
            labelling = rec.get("labelling", "standard")
            tokens = labelled_action_tokens(action_tokens, labelling)
            ids = inputs[rec["variant"]]
            data = collect_variant(hooked, ids, tokens, f"{scenario}/{rec['variant']}")
            data["arrays"]["tokens"] = np.array(token_texts(tokenizer, ids[0].tolist()), dtype=object)
            data["attrs"].update(prompt=rec["prompt"], labelling=labelling, template=int(rec.get("template", 0)),
                                 token_C=int(tokens["C"]), token_D=int(tokens["D"]))
            p_defect = 1.0 / (1.0 + math.exp(-data["attrs"]["delta"]))
            data["attrs"]["p_action2"] = p_defect if labelling == "standard" else 1.0 - p_defect
            writer.add(rec["variant"], data)
