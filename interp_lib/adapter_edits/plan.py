"""Which configured models get adapter edits, and which transplants: from the config alone
(no torch; the workflow's rules read it at parse time)."""

from __future__ import annotations

from ..analyses.weight_deltas import reference_model


def edit_models(config: dict) -> tuple[dict[str, str], dict[str, str]]:
    """({fine-tune: reference}, {skipped model: reason}). A fine-tune is a model with an
    adapter; its reference is the configured model without one on the same base (`base`
    preferred), whose weights and cache the edits use. Models without an adapter that are
    some fine-tune's reference are not fine-tunes and are not listed as skipped."""
    models = config["models"]
    edited, skipped = {}, {}
    for name, spec in models.items():
        if not spec.get("adapter"):
            continue
        ref = reference_model(config, name)
        if ref is None:
            skipped[name] = (f"no configured model without an adapter on its base {spec['base']} (the edits need the "
                             "base's weights and cache)")
        else:
            edited[name] = ref
    references = set(edited.values())
    for name, spec in models.items():
        if not spec.get("adapter") and name not in references:
            skipped[name] = "no adapter (merged-only weights): its update cannot be split by layer and module"
    return edited, skipped


def transplant_sources(config: dict, model: str) -> tuple[dict[str, str], dict[str, str]]:
    """({source model: experiment}, {experiment: why skipped}) of the configured experiments
    whose target is `model`: the source adapter's update goes into `model`, layer by layer.
    A source without an adapter, or on another base, is skipped with its reason."""
    models = config["models"]
    sources, skipped = {}, {}
    for name, exp in config.get("experiments", {}).items():
        if exp["target"] != model:
            continue
        src = exp["source"]
        if not models[src].get("adapter"):
            skipped[name] = f"source {src} has no adapter (merged-only weights): no update to transplant"
        elif models[src]["base"] != models[model]["base"]:
            skipped[name] = (f"source {src} is on base {models[src]['base']}, {model} on {models[model]['base']}: "
                             "an update is only defined against its own base")
        elif src not in sources:
            sources[src] = name
    return sources, skipped
