"""Direct logit attribution (DLA) at the decision position, exact for Gemma-2.

With the final norm's scale s_f frozen at its value in the forward pass, the pre-softcap
delta is linear in the final residual, which is the sum of the scaled embedding, every
head's output (post-attention norm scale frozen: cache `head_out_decision`) and every
MLP output (`mlp_out`). So with u = (W_U[D] - W_U[C]) * ln_final_gain / s_f

    delta_pre_softcap = embed . u + sum_{l,h} head[l, h] . u + sum_l mlp[l] . u

exactly (up to float error: `reconstruction_error`). Contributions are in pre-softcap
logit units; positive = pro-Defect, negative = pro-Cooperate. Computed in float64.

One implementation works on arrays (`attribute`); the cache path (`results_from_cache`)
and `DirectLogitAttributor` (one forward pass of a `HookedModel`) both feed it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from .behaviour import action_of
from ..cache import CacheError, CacheFile
from .logit_lens import ActionReadout

log = logging.getLogger(__name__)

FULL_COLUMNS = ["model", "scenario", "variant", "component", "kind", "layer", "head", "contribution"]
TOP_COLUMNS = ["model", "scenario", "rank", "component", "contribution", "ci_low", "ci_high", "direction"]


def reconstruction_tolerance(delta_pre_softcap: float) -> float:
    """Allowed |reconstruction_error| for float32 activations: 1e-4 * max(1, |delta|)."""
    return 1e-4 * max(1.0, abs(float(delta_pre_softcap)))


# Storing a number x in a cache's storage dtype changes it by at most ROUNDING[0] * |x| + ROUNDING[1]
# (unit roundoff; half the smallest subnormal).
STORAGE_ROUNDING = {"float32": (0.0, 0.0), "float16": (2.0 ** -11, 2.0 ** -25)}


def storage_error_bound(arrays, attrs, readout: ActionReadout, storage_dtype: str) -> float:
    """Largest change of the sum of the components that storing them in `storage_dtype` can
    cause (the stored delta_pre_softcap is exact): sum over components c and coordinates i of
    |change of c_i| * |u_i|, u as in `attribute`. 0 for float32."""
    relative, absolute = STORAGE_ROUNDING[storage_dtype]
    if not relative:
        return 0.0
    pos = int(attrs["decision_position"])
    u = np.abs(readout.direction / float(np.asarray(arrays["ln_final_scale"][pos])))
    components = np.concatenate([np.asarray(arrays["embed"][pos], dtype=np.float64)[None],
                                 np.asarray(arrays["head_out_decision"][()], dtype=np.float64).reshape(-1, u.size),
                                 np.asarray(arrays["mlp_out"][:, pos], dtype=np.float64)])  # [1 + L*H + L, d]
    return float(((relative * np.abs(components) + absolute) @ u).sum())


@dataclass
class DLAResult:
    """Attribution of one prompt's pre-softcap delta (positive = pro-Defect).

    head_contributions [n_layers, n_heads], mlp_contributions [n_layers]; final_delta is
    the model's post-softcap delta, final_delta_pre_softcap its pre-softcap delta;
    reconstruction_error = sum of all components - final_delta_pre_softcap.
    """

    head_contributions: np.ndarray
    mlp_contributions: np.ndarray
    embed_contribution: float
    final_delta: float
    final_delta_pre_softcap: float
    reconstruction_error: float
    model: str = ""
    scenario: str = ""
    variant: int | None = None
    prompt: str = field(default="", repr=False)
    n_variants: int = 1  # > 1 for a mean over variants (`average_results`, variant None)
    max_abs_error: float = float("nan")  # largest |reconstruction_error| of the prompts (default: this one's)

    def __post_init__(self):
        if not np.isfinite(self.max_abs_error):
            self.max_abs_error = abs(float(self.reconstruction_error))

    @property
    def n_layers(self) -> int:
        return self.head_contributions.shape[0]

    @property
    def n_heads(self) -> int:
        return self.head_contributions.shape[1]

    @property
    def total(self) -> float:
        """Sum of all components (= final_delta_pre_softcap + reconstruction_error)."""
        return float(self.embed_contribution + self.head_contributions.sum() + self.mlp_contributions.sum())

    def components(self) -> list[tuple]:
        """[(name, kind, layer, head, contribution)] in model order: embed, then per layer
        its heads L{l}H{h} and its MLP L{l}_MLP."""
        out = [("embed", "embed", None, None, float(self.embed_contribution))]
        for l in range(self.n_layers):
            out += [(f"L{l}H{h}", "head", l, h, float(self.head_contributions[l, h])) for h in range(self.n_heads)]
            out.append((f"L{l}_MLP", "mlp", l, None, float(self.mlp_contributions[l])))
        return out


def attribute(embed, head_out, mlp_out, final_scale: float, readout: ActionReadout):
    """Contributions of each component vector to the pre-softcap delta.

    embed [d], head_out [L, H, d], mlp_out [L, d] at the decision position; final_scale the
    final norm's scale there. Returns (embed float, heads [L, H], mlps [L]), float64.
    """
    u = readout.direction / float(final_scale)
    embed = np.asarray(embed, dtype=np.float64)
    heads = np.asarray(head_out, dtype=np.float64) @ u
    mlps = np.asarray(mlp_out, dtype=np.float64) @ u
    return float(embed @ u), heads, mlps


def dla_from_arrays(arrays, attrs, readout: ActionReadout, **meta) -> DLAResult:
    """DLAResult of one prompt. `arrays`/`attrs`: a cache variant group (h5py) or the dicts
    of `cache.collect_variant`; `meta`: model, scenario, variant, prompt."""
    pos = int(attrs["decision_position"])
    embed, heads, mlps = attribute(
        np.asarray(arrays["embed"][pos]),
        np.asarray(arrays["head_out_decision"][()]),
        np.asarray(arrays["mlp_out"][:, pos]),
        float(np.asarray(arrays["ln_final_scale"][pos])),
        readout,
    )
    pre = float(attrs["delta_pre_softcap"])
    total = embed + heads.sum() + mlps.sum()
    return DLAResult(heads, mlps, embed, float(attrs["delta"]), pre, float(total - pre), **meta)


def results_from_cache(cache: CacheFile) -> list[DLAResult]:
    """One DLAResult per variant of a cache file."""
    readout = ActionReadout.from_cache(cache)
    model, scenario = str(cache.attrs["model"]), str(cache.attrs["scenario"])
    storage = str(cache.attrs.get("storage_dtype", "float32"))
    out = []
    for v in cache.variants:
        try:
            group = cache.group(v)
            res = dla_from_arrays(group, group.attrs, readout.for_labelling(cache.labelling(v)), model=model, scenario=scenario, variant=int(v),
                                  prompt=str(group.attrs.get("prompt", "")))
        except (OSError, KeyError) as exc:
            raise CacheError(f"cannot read variant {v} of {cache.path} ({exc}); delete it and rerun the workflow") from None
        tolerance = reconstruction_tolerance(res.final_delta_pre_softcap)
        if abs(res.reconstruction_error) > tolerance and storage != "float32":
            tolerance += storage_error_bound(group, group.attrs, readout.for_labelling(cache.labelling(v)), storage)
        if abs(res.reconstruction_error) > tolerance:
            log.warning("%s/%s variant %d: DLA reconstruction error %.3g exceeds %.3g (model dtype %s, cache "
                        "storage %s)", model, scenario, v, res.reconstruction_error, tolerance,
                        cache.attrs.get("dtype"), storage)
        out.append(res)
    return out


def scenario_tables(cache_path, fingerprint: str):
    """The per-variant table (FULL_COLUMNS) and the summary table (one `summary_row` per
    variant) of one cache file, checked against its model's `fingerprint`: one scenario of
    a dla_model job."""
    import pandas as pd

    with CacheFile(cache_path, fingerprint=fingerprint) as cache:
        results = results_from_cache(cache)
    summary = pd.DataFrame([summary_row(r) for r in results])
    log.info("%s: %d variants; max |reconstruction error| = %.3g", cache_path, len(results),
             summary["reconstruction_error"].abs().max())
    return pd.concat([result_frame(r) for r in results], ignore_index=True), summary


def average_results(results: list[DLAResult]) -> DLAResult:
    """Mean over prompt variants (of one model and scenario): every field averaged,
    variant None, n_variants = len(results), max_abs_error the largest of theirs."""
    if not results:
        raise ValueError("no DLA results to average")
    mean = lambda attr: float(np.mean([getattr(r, attr) for r in results]))  # noqa: E731
    return DLAResult(
        np.mean([r.head_contributions for r in results], axis=0), np.mean([r.mlp_contributions for r in results], axis=0),
        mean("embed_contribution"), mean("final_delta"), mean("final_delta_pre_softcap"), mean("reconstruction_error"),
        model=results[0].model, scenario=results[0].scenario, variant=None, n_variants=len(results),
        max_abs_error=max((r.max_abs_error for r in results if np.isfinite(r.max_abs_error)), default=np.nan))


def results_from_frame(full, summary=None) -> list[DLAResult]:
    """DLAResults back from tidy rows (FULL_COLUMNS), one per (model, scenario, variant) in
    first-seen order; delta fields from `summary` rows (dla_summary_stats.csv), else NaN."""
    nan = float("nan")
    deltas = {}
    if summary is not None:
        for row in summary.itertuples(index=False):
            deltas[(row.model, row.scenario, int(row.variant))] = (
                row.final_delta, row.final_delta_pre_softcap, row.reconstruction_error)
    out = []
    for (model, scenario, variant), grp in full.groupby(["model", "scenario", "variant"], sort=False):
        heads = grp[grp["kind"] == "head"]
        n_layers = int(grp["layer"].max()) + 1
        n_heads = int(heads["head"].max()) + 1 if len(heads) else 0
        head_arr = np.full((n_layers, n_heads), np.nan)
        head_arr[heads["layer"].to_numpy(int), heads["head"].to_numpy(int)] = heads["contribution"].to_numpy(float)
        mlps = grp[grp["kind"] == "mlp"]
        mlp_arr = np.full(n_layers, np.nan)
        mlp_arr[mlps["layer"].to_numpy(int)] = mlps["contribution"].to_numpy(float)
        embed = grp.loc[grp["kind"] == "embed", "contribution"]
        final, pre, err = deltas.get((model, scenario, int(variant)), (nan, nan, nan))
        out.append(DLAResult(head_arr, mlp_arr, float(embed.iloc[0]) if len(embed) else nan, final, pre, err,
                             model=model, scenario=scenario, variant=int(variant)))
    return out


def top_components(result: DLAResult, top_k: int = 20) -> dict:
    """{'pro_defect': [(name, value)] largest positive first, 'pro_cooperate': most negative
    first}; at most top_k each, components of the wrong sign left out."""
    comps = [(name, value) for name, _, _, _, value in result.components()]
    pro_d = sorted((c for c in comps if c[1] > 0), key=lambda c: -c[1])[:top_k]
    pro_c = sorted((c for c in comps if c[1] < 0), key=lambda c: c[1])[:top_k]
    return {"pro_defect": pro_d, "pro_cooperate": pro_c}


def result_frame(result: DLAResult):
    """Tidy DataFrame (FULL_COLUMNS): one row per component; layer/head empty where they
    do not apply (nullable Int64)."""
    import pandas as pd

    rows = [{"model": result.model, "scenario": result.scenario, "variant": result.variant, "component": name,
             "kind": kind, "layer": layer, "head": head, "contribution": value}
            for name, kind, layer, head, value in result.components()]
    df = pd.DataFrame(rows, columns=FULL_COLUMNS)
    for col in ("layer", "head"):
        df[col] = df[col].astype("Int64")
    return df


def read_job_results(components, summary) -> list[DLAResult]:
    """The DLAResults of one model and scenario (a dla_model job's per-variant CSV and its summary
    CSV)."""
    import pandas as pd

    return results_from_frame(read_full_results(components), pd.read_csv(summary))


def read_full_results(path):
    """dla_full_results.csv (or a per-job CSV) with layer/head as nullable Int64."""
    import pandas as pd

    return pd.read_csv(path, dtype={"layer": "Int64", "head": "Int64", "model": str, "scenario": str,
                                    "component": str, "kind": str})


def summary_row(result: DLAResult) -> dict:
    """One dla_summary_stats.csv row."""
    top = top_components(result, 1)
    pro_d = top["pro_defect"][0] if top["pro_defect"] else ("", float("nan"))
    pro_c = top["pro_cooperate"][0] if top["pro_cooperate"] else ("", float("nan"))
    pre = result.final_delta_pre_softcap
    return {
        "model": result.model, "scenario": result.scenario, "variant": result.variant,
        "final_delta": result.final_delta, "final_action": action_of(result.final_delta),
        "final_delta_pre_softcap": pre, "component_sum": result.total,
        "reconstruction_error": result.reconstruction_error,
        "relative_error": abs(result.reconstruction_error) / max(1.0, abs(pre)),
        "heads_total": float(result.head_contributions.sum()), "mlps_total": float(result.mlp_contributions.sum()),
        "embed": result.embed_contribution,
        "top_pro_defect": pro_d[0], "top_pro_defect_value": pro_d[1],
        "top_pro_cooperate": pro_c[0], "top_pro_cooperate_value": pro_c[1],
    }


def mean_over_variants(full):
    """Per (model, scenario, component): mean, std, min, max of contribution over variants
    and the mean's bootstrap 95% interval (ci_low, ci_high), in the components' first-seen
    order; keeps kind, layer, head."""
    from ..stats import grouped_mean_ci

    keys = ["model", "scenario", "component"]
    g = full.groupby(keys, sort=False)
    out = g.agg(kind=("kind", "first"), layer=("layer", "first"), head=("head", "first"),
                contribution=("contribution", "mean"), std=("contribution", "std"),
                min=("contribution", "min"), max=("contribution", "max"),
                n_variants=("contribution", "size")).reset_index()
    out["std"] = out["std"].fillna(0.0)
    ci = grouped_mean_ci(full, keys, "contribution")
    out["ci_low"], out["ci_high"] = ci["ci_low"].to_numpy(), ci["ci_high"].to_numpy()
    return out


def top_components_table(full, top_k: int = 20):
    """dla_top_components.csv: per (model, scenario) the top_k pro-Defect components (largest
    positive mean over variants first) and the top_k pro-Cooperate ones (most negative first);
    rank counts from 1 within each direction."""
    import pandas as pd

    means = mean_over_variants(full)
    parts = []
    for (model, scenario), grp in means.groupby(["model", "scenario"], sort=False):
        for direction, sel, asc in (("pro_defect", grp["contribution"] > 0, False),
                                    ("pro_cooperate", grp["contribution"] < 0, True)):
            top = grp[sel].sort_values("contribution", ascending=asc, kind="stable").head(top_k)
            parts.append(pd.DataFrame({"model": model, "scenario": scenario, "rank": range(1, len(top) + 1),
                                       "component": top["component"].values,
                                       "contribution": top["contribution"].values, "ci_low": top["ci_low"].values,
                                       "ci_high": top["ci_high"].values, "direction": direction}))
    if not parts:
        return pd.DataFrame(columns=TOP_COLUMNS)
    return pd.concat(parts, ignore_index=True)[TOP_COLUMNS]


class DirectLogitAttributor:
    """DLA on a `HookedModel` (one forward pass per prompt, same arrays as the cache)."""

    def __init__(self, model, action_tokens: dict | None = None):
        from ..tokens import get_action_token_ids

        self.model = model
        self.action_tokens = action_tokens or get_action_token_ids(model.tokenizer)
        self.readout = ActionReadout.from_model(model, self.action_tokens)

    def decompose_logits(self, prompt, scenario: str = "", variant: int | None = None) -> DLAResult:
        """DLAResult of a prompt (text, or decision input ids [1, T])."""
        import torch

        from ..cache import collect_variant
        from ..tokens import decision_input_ids

        is_text = isinstance(prompt, str)
        ids = decision_input_ids(self.model.tokenizer, prompt, self.action_tokens) if is_text else prompt
        with torch.no_grad():
            data = collect_variant(self.model, ids.to(self.model.device), self.action_tokens, self.model.name)
        return dla_from_arrays(data["arrays"], data["attrs"], self.readout, model=self.model.name,
                               scenario=scenario, variant=variant, prompt=prompt if is_text else "")

    @staticmethod
    def identify_top_components(result: DLAResult, top_k: int = 20) -> dict:
        return top_components(result, top_k)

    @staticmethod
    def export_to_dataframe(result: DLAResult):
        return result_frame(result)
