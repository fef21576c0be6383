"""Workflow configuration: YAML loading, JSON-schema validation with defaults, and
checks the schema cannot express. Every error is one line naming the culprit."""

from __future__ import annotations

import copy
import os
from importlib import resources
from pathlib import Path

import jsonschema
import yaml

DEFAULT_CONFIG_PATH = "config.yaml"
NAME_CHARS = "A-Z a-z 0-9 _ . -"


# Config keys that name a subset of the scenarios: (section, key); null or absent = all.
SCENARIO_SUBSETS = (("analysis", "patch_scenarios"), ("adapter_edits", "scenarios"))

class ConfigError(ValueError):
    """A bad configuration; the message is one line naming the key."""


def schema() -> dict:
    text = resources.files("interp_lib").joinpath("schemas/config.schema.yaml").read_text()
    return yaml.safe_load(text)


def _with_defaults(validator_class):
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, sch):
        if isinstance(instance, dict):
            for prop, sub in properties.items():
                if "default" in sub:
                    instance.setdefault(prop, copy.deepcopy(sub["default"]))
        yield from validate_properties(validator, properties, instance, sch)

    return jsonschema.validators.extend(validator_class, {"properties": set_defaults})


def _key_path(path) -> str:
    return ".".join(str(p) for p in path) or "<top level>"


def _describe(error: jsonschema.ValidationError) -> str:
    where = _key_path(error.absolute_path)
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        extra = sorted(set(error.instance) - set(allowed))
        prefix = "" if not error.absolute_path else where + "."
        hint = f" (allowed: {', '.join(allowed)})" if allowed else ""
        return f"unknown key {prefix}{extra[0] if extra else '?'}{hint}"
    if error.validator == "required":
        return f"{where}: {error.message}"
    if error.validator == "pattern" and error.schema.get("pattern") == "^[A-Za-z0-9_.-]+$":
        return f"{where}: name {error.instance!r} may use only {NAME_CHARS}"
    if error.validator == "propertyNames":
        return f"{where}: {error.message}"
    return f"{where}: {error.message}"


def _coerce_strings(value, sch: dict, defs: dict):
    """Snakemake's --config hands nested values over as strings ('false', '10'): convert
    those the schema types as boolean, integer or number; leave everything else alone."""
    if "$ref" in sch:
        sch = defs.get(sch["$ref"].rsplit("/", 1)[-1], {})
    types = sch.get("type", [])
    types = [types] if isinstance(types, str) else types
    if isinstance(value, dict):
        props = sch.get("properties", {})
        extra = sch.get("additionalProperties")
        for key, item in value.items():
            sub = props.get(key, extra if isinstance(extra, dict) else {})
            value[key] = _coerce_strings(item, sub, defs)
        return value
    if isinstance(value, list):
        return [_coerce_strings(v, sch.get("items", {}), defs) for v in value]
    if isinstance(value, str):
        if "boolean" in types and value.lower() in ("true", "false"):
            return value.lower() == "true"
        if "null" in types and value.lower() in ("null", "none", "~"):
            return None
        for kind, cast in (("integer", int), ("number", float)):
            if kind in types:
                try:
                    return cast(value)
                except ValueError:
                    pass
    return value


def validate_config(config: dict, source: str = "config") -> dict:
    """Validates a config dict in place, filling defaults; returns it. Raises ConfigError,
    whose message starts with `source` (the file the config came from)."""
    if not isinstance(config, dict):
        raise ConfigError(f"{source}: must be a mapping of keys, got {type(config).__name__}")
    sch = schema()
    _coerce_strings(config, sch, sch.get("$defs", {}))
    validator = _with_defaults(jsonschema.Draft202012Validator)(sch)
    analysis = config.get("analysis")
    if isinstance(analysis, dict) and "dtype" in analysis:
        raise ConfigError(f"{source}: analysis.dtype was replaced by analysis.precision "
                          "(float32, tf32, bfloat16, bfloat16-resid32 or float16)")
    errors = list(validator.iter_errors(config))
    if errors:
        error = jsonschema.exceptions.best_match(errors)
        if error.validator == "propertyNames":
            bad = [e for e in error.context] or [error]
            raise ConfigError(
                f"{source}: {_key_path(error.absolute_path)}: name {bad[0].instance!r} may use only {NAME_CHARS}"
            )
        raise ConfigError(f"{source}: {_describe(error)}")
    try:
        _check_games(config)
        _add_swapped_scenarios(config)
        _check_references(config)
        _check_steering(config)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    if config["embedded"]["dir"] is None:
        config["embedded"]["dir"] = f"{config['results_dir'].rstrip('/')}/demo"
    try:
        config["gguf"] = _checked_gguf(config)
        config["rl_adapters"] = _checked_rl_adapters(config)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    return config


def _checked_gguf(config: dict) -> dict:
    """The gguf section with its directories normalised (spelled as the convert_gguf rule's
    outputs are); each source is {package, file}, {path} or {chunks, sha256}, and no directory
    is claimed twice."""
    out: dict = {}
    for key, src in config["gguf"].items():
        where = f"gguf.{key}"
        given = [form for form, keys in (("package and file", ("package", "file")), ("path", ("path",)),
                                          ("chunks", ("chunks",))) if any(src.get(k) for k in keys)]
        if len(given) != 1:
            raise ConfigError(f"{where}: give one of package and file, path, or chunks "
                              f"(got {', '.join(k for k in src if k not in ('sha256', 'chat_template')) or 'nothing'})")
        if src.get("chunks") and not src.get("sha256"):
            raise ConfigError(f"{where}: chunks need the joined file's sha256")
        if given[0] == "package and file" and not (src.get("package") and src.get("file")):
            raise ConfigError(f"{where}: a packaged GGUF file needs both package and file")
        out[_output_dir(config, where, key, out, "gguf")] = src
    return out


def _output_dir(config: dict, where: str, key: str, claimed: dict, section: str) -> str:
    """`key` normalised (spelled as a rule's outputs are); it must lie outside embedded.dir
    and be claimed by no other entry of this section or the gguf section."""
    norm = os.path.normpath(key)
    if Path(norm).resolve().is_relative_to(Path(config["embedded"]["dir"]).resolve()):
        raise ConfigError(f"{where}: lies inside embedded.dir ({config['embedded']['dir']}), "
                          "where the embedded family is built; choose another directory")
    claimed_by = {k: f"{section}.{k}" for k in claimed}
    if section != "gguf":
        claimed_by.update({k: f"gguf.{k}" for k in config["gguf"]})
    twin = next((name for k, name in claimed_by.items() if Path(k).resolve() == Path(norm).resolve()), None)
    if twin is not None:
        raise ConfigError(f"{where}: the same directory as {twin}")
    return norm


def _checked_rl_adapters(config: dict) -> dict:
    """The rl_adapters section with its directories normalised and each seed filled in (the
    config's seed unless given)."""
    out: dict = {}
    for key, spec in config["rl_adapters"].items():
        norm = _output_dir(config, f"rl_adapters.{key}", key, out, "rl_adapters")
        out[norm] = {**spec, "seed": config["seed"] if spec.get("seed") is None else spec["seed"]}
    return out


def rl_adapter_dir(config: dict, path: str | None) -> str | None:
    """The rl_adapters section's directory that a model's adapter path names, or None."""
    if not path:
        return None
    target = Path(path).resolve()
    return next((key for key in config.get("rl_adapters", {}) if Path(key).resolve() == target), None)


def gguf_dir(config: dict, path: str | None) -> str | None:
    """The gguf section's directory that a model path names (relative or absolute), spelled
    as the section spells it; None if the path is not converted from a GGUF file."""
    if not path:
        return None
    target = Path(path).resolve()
    return next((key for key in config.get("gguf", {}) if Path(key).resolve() == target), None)


def _add_swapped_scenarios(config: dict) -> None:
    """Each scenario with `counterbalance` gets a sibling `<name>_swapped` right after it: the
    same prompts with action1 = Defect (`labelling: swapped`, `variants_of: <name>`: the same
    wordings and orderings, variant for variant). Every analysis then keeps the labellings
    apart, and the label bias pairs the two. Idempotent; a configured scenario of that name
    that is not the sibling is an error."""
    from .prompts import SWAPPED_SUFFIX, swapped_sibling

    out = {}
    for name, spec in config["scenarios"].items():
        if spec.get("variants_of") and config["scenarios"].get(spec["variants_of"], {}).get("counterbalance"):
            continue  # a sibling added before: re-added below, after its scenario
        out[name] = spec
        if not spec.get("counterbalance"):
            continue
        sibling, sibling_spec = swapped_sibling(name, spec)
        existing = config["scenarios"].get(sibling)
        if existing is not None and existing.get("variants_of") != name:
            raise ConfigError(f"scenarios.{sibling}: the name is taken by the swapped-label variants of "
                              f"scenarios.{name} (counterbalance: true); rename it")
        if spec.get("labelling", "standard") != "standard":
            raise ConfigError(f"scenarios.{name}: counterbalance needs the standard labelling")
        description = spec.get("description") or name
        out[sibling] = {**sibling_spec, "description": f"{description} (labels exchanged: action1 = Defect)"}
    config["scenarios"] = out
    for section, key in SCENARIO_SUBSETS:  # a counterbalanced scenario comes with its sibling
        subset = (config.get(section) or {}).get(key)
        if subset:
            with_siblings = []
            for scen in subset:
                with_siblings.append(scen)
                if out.get(scen, {}).get("counterbalance"):
                    with_siblings.append(scen + SWAPPED_SUFFIX)
            config[section][key] = list(dict.fromkeys(with_siblings))


def _check_games(config: dict) -> None:
    """Every configured game is well formed; every scenario names a known game, in a format
    that can show it, with as many distinct variants as asked for."""
    from .formats import UNRELATED, check_format, moves_shown, n_wordings
    from .games import GameError, configured_games
    from .prompts import ORDERINGS, TEMPLATES

    try:
        games = configured_games(config.get("games"))
    except GameError as exc:
        raise ConfigError(str(exc)) from None
    n_variants = config["variants_per_scenario"]
    for name, spec in config["scenarios"].items():
        game, fmt = spec.get("game", "ipd"), spec.get("format", "table")
        if game not in games:
            raise ConfigError(f"scenarios.{name}.game: unknown game {game!r} (known: {', '.join(games)})")
        try:
            check_format(fmt, game, spec.get("preprompt"))
        except ValueError as exc:
            raise ConfigError(f"scenarios.{name}: {exc}") from None
        shown = moves_shown(fmt)
        for key in ("self_last", "opponent_last"):
            if key in shown and spec.get(key) is None:
                raise ConfigError(f"scenarios.{name}.{key}: required (C or D) for format {fmt!r}")
            if key not in shown and spec.get(key) is not None:
                raise ConfigError(f"scenarios.{name}.{key}: format {fmt!r} shows no {key}; remove it")
        if fmt in UNRELATED and not shown and spec.get("counterbalance"):
            raise ConfigError(f"scenarios.{name}.counterbalance: format {fmt!r} shows no move, so both labellings "
                              f"give the same prompts; remove it")
        if fmt in UNRELATED and spec.get("extra_sentence"):
            raise ConfigError(f"scenarios.{name}.extra_sentence: format {fmt!r} has no place for it")
        symbols = spec.get("symbols") or ["action1", "action2"]
        if symbols[0] == symbols[1]:
            raise ConfigError(f"scenarios.{name}.symbols: two distinct labels needed, got {symbols}")
        most = len(ORDERINGS) * n_wordings(fmt, len(TEMPLATES))
        if n_variants > most:
            raise ConfigError(f"scenarios.{name}: format {fmt!r} has {most} distinct variants; "
                              f"variants_per_scenario is {n_variants}")


def scenario_metric(config: dict, scenario: str) -> str:
    """The decision metric's name in a scenario's game, e.g. P(Defect)."""
    from .games import configured_games

    return configured_games(config.get("games"))[config["scenarios"][scenario].get("game", "ipd")].metric


def scenario_game(config: dict, scenario: str) -> dict:
    """The config form of a scenario's game with its `name` (what its prompts depend on)."""
    from .games import configured_games

    name = config["scenarios"][scenario].get("game", "ipd")
    return {"name": name, **configured_games(config.get("games"))[name].to_spec()}


def _check_references(config: dict) -> None:
    models, scenarios = config["models"], config["scenarios"]
    known = ", ".join(models)
    for name, exp in config.get("experiments", {}).items():
        for role in ("source", "target"):
            if exp[role] not in models:
                raise ConfigError(
                    f"experiments.{name}.{role}: unknown model {exp[role]!r} (known models: {known})"
                )
        if exp["source"] == exp["target"]:
            raise ConfigError(f"experiments.{name}: source and target are the same model {exp['source']!r}")
    for name, cf in config.get("counterfactuals", {}).items():
        if cf["model"] not in models:
            raise ConfigError(f"counterfactuals.{name}.model: unknown model {cf['model']!r} (known models: {known})")
        for role in ("source", "target"):
            if cf[role] not in scenarios:
                raise ConfigError(f"counterfactuals.{name}.{role}: unknown scenario {cf[role]!r} "
                                  f"(known: {', '.join(scenarios)})")
        if cf["source"] == cf["target"]:
            raise ConfigError(f"counterfactuals.{name}: source and target are the same scenario {cf['source']!r}")
        labellings = [scenarios[cf[role]].get("labelling", "standard") for role in ("source", "target")]
        if labellings[0] != labellings[1]:
            raise ConfigError(f"counterfactuals.{name}: source {cf['source']!r} is in the {labellings[0]} labelling, "
                              f"target {cf['target']!r} in the {labellings[1]}; their prompts cannot align")
    for section, key in SCENARIO_SUBSETS:
        for scen in (config.get(section) or {}).get(key) or ():
            if scen not in scenarios:
                raise ConfigError(f"{section}.{key}: unknown scenario {scen!r} (known: {', '.join(scenarios)})")
    for role, model in (config.get("roles") or {}).items():
        if model not in models:
            raise ConfigError(f"roles.{role}: unknown model {model!r} (known models: {known})")
    ref = config.get("prompt_tokenizer_model")
    if ref is not None and ref not in models:
        raise ConfigError(f"prompt_tokenizer_model: unknown model {ref!r} (known models: {known})")
    seen = {}
    for name, spec in scenarios.items():
        key = (spec.get("self_last"), spec.get("opponent_last"), spec.get("extra_sentence"), spec.get("labelling", "standard"),
               spec.get("game", "ipd"), spec.get("format", "table"), spec.get("preprompt"),
               tuple(spec.get("symbols") or ()))
        if key in seen:
            raise ConfigError(
                f"scenarios.{name}: same state, game, format and extra sentence as scenarios.{seen[key]}; prompts would repeat"
            )
        seen[key] = name


def _check_steering(config: dict) -> None:
    """Fills each steering experiment's target and checks its models and scenarios; a
    counterbalanced scenario in its `scenarios` brings its swapped sibling."""
    from .prompts import SWAPPED_SUFFIX

    models, scenarios = config["models"], config["scenarios"]
    for name, exp in config.get("steering", {}).items():
        where, direction = f"steering.{name}", exp["direction"]
        roles = ("source", "reference") if direction["from"] == "models" else ("model",)
        other = {"source", "reference", "model"} - set(roles)
        for role in roles:
            if not direction.get(role):
                raise ConfigError(f"{where}.direction.{role}: required for a direction from {direction['from']}")
        for role in sorted(other & set(direction)):
            raise ConfigError(f"{where}.direction.{role}: not used by a direction from {direction['from']} "
                              f"(give {' and '.join(roles)})")
        for role in roles:
            if direction[role] not in models:
                raise ConfigError(f"{where}.direction.{role}: unknown model {direction[role]!r} "
                                  f"(known models: {', '.join(models)})")
        if name.startswith("layers_"):  # steering_layers_{X}.csv is experiment X's ranking
            raise ConfigError(f"{where}: a steering experiment's name may not start with 'layers_'")
        if direction["from"] == "decisions" and not direction.get("scenarios"):
            raise ConfigError(f"{where}.direction.scenarios: required for a direction from decisions (one scenario's "
                              "prompts are often all answered one way)")
        if direction["from"] == "models" and direction["source"] == direction["reference"]:
            raise ConfigError(f"{where}.direction: source and reference are the same model {direction['source']!r}")
        exp.setdefault("target", direction["reference" if direction["from"] == "models" else "model"])
        if exp["target"] not in models:
            raise ConfigError(f"{where}.target: unknown model {exp['target']!r} (known models: {', '.join(models)})")
        for key, listed in ((f"{where}.direction.scenarios", direction.get("scenarios")),
                            (f"{where}.scenarios", exp.get("scenarios"))):
            for scen in listed or ():
                if scen not in scenarios:
                    raise ConfigError(f"{key}: unknown scenario {scen!r} (known: {', '.join(scenarios)})")
        if exp.get("scenarios"):
            with_siblings = []
            for scen in exp["scenarios"]:
                with_siblings.append(scen)
                if scenarios[scen].get("counterbalance"):
                    with_siblings.append(scen + SWAPPED_SUFFIX)
            exp["scenarios"] = list(dict.fromkeys(with_siblings))


def steering_scenarios(config: dict, name: str) -> list[str]:
    """The scenarios a steering experiment steers (default every scenario)."""
    return list(config["steering"][name].get("scenarios") or config["scenarios"])


def read_yaml(path: str | os.PathLike):
    """The parsed YAML file; a ConfigError naming the file, line and column if it does not parse."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{path}:{where}: YAML does not parse: {problem}") from None


def load_config(path: str | os.PathLike | None = None) -> dict:
    """Reads and validates a YAML config (default: $INTERP_CONFIG or ./config.yaml)."""
    path = path or os.environ.get("INTERP_CONFIG") or DEFAULT_CONFIG_PATH
    return validate_config(read_yaml(path), source=str(path))


def embedded_path(config: dict, path: str | None) -> str | None:
    """A model path under the embedded family's directory (built by the workflow), spelled
    as `embedded.dir` spells it, whether `path` is relative or absolute; None otherwise."""
    if not path:
        return None
    root = Path(config["embedded"]["dir"])
    target, resolved_root = Path(path).resolve(), root.resolve()
    if not target.is_relative_to(resolved_root):
        return None
    return str(root / target.relative_to(resolved_root))


def patch_scenarios(config: dict) -> list[str]:
    subset = config["analysis"].get("patch_scenarios")
    return list(subset) if subset else list(config["scenarios"])


def adapter_edit_scenarios(config: dict) -> list[str]:
    """The scenarios the adapter edits run on (default every scenario)."""
    subset = (config.get("adapter_edits") or {}).get("scenarios")
    return list(subset) if subset else list(config["scenarios"])


if __name__ == "__main__":  # python -m interp_lib.config my.yaml: check a config file
    import sys

    try:
        for config_path in sys.argv[1:] or [DEFAULT_CONFIG_PATH]:
            load_config(config_path)
            print(f"{config_path}: valid")
    except ConfigError as exc:
        sys.exit(f"Error: {exc}")
