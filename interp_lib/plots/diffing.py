"""Model-diffing figures: the activation-difference lens (per reference: the decision-position
difference's size per layer and its logit-lens reading in both labellings, and the steering
effect of the difference beside random directions) and the crosscoder (latent classes and the
causal check)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..contexts import REFERENCE
from ..diffing.adl import ALL_STATES, steering_state
from ..style import ModelStyle, color_at
from . import save_figure


def plot_adl(differences: pd.DataFrame, steering: pd.DataFrame, path, style: ModelStyle | None = None) -> None:
    """One row per reference: (a) |mean difference| / mean |reference activation| per layer
    (IPD prompts, decision position, standard labelling, pooled over states; band = 95%
    interval, dotted = noise norm), (b) its logit lens (> 0 = towards the labelling's Defect
    token; solid standard, dashed swapped: opposite signs = a token preference), (c) the
    reference steered by the difference at each layer (alpha = 1): mean delta change, beside the
    random directions', (d) each state's difference's lens at the last layer in both labellings
    (95% intervals; the same sign in both = a decision in that state)."""
    import matplotlib.pyplot as plt

    d = differences[(differences["context"] == REFERENCE) & (differences["position_class"] == "decision")]
    if "state" not in d.columns:  # a table written before the states
        d = d.assign(state=ALL_STATES)
    by_state, d = d[d["state"] != ALL_STATES], d[d["state"] == ALL_STATES]
    steering = steering[steering["steering"].map(steering_state) == ALL_STATES] if len(steering) else steering
    references = list(dict.fromkeys(d["reference"])) or ["(none)"]
    style = (style or ModelStyle()).with_models(d["model"].unique() if len(d) else [])
    fig, axes = plt.subplots(len(references), 4, figsize=(20, 3.6 * len(references)), squeeze=False)
    for r, reference in enumerate(references):
        _plot_states(axes[r, 3], by_state[by_state["reference"] == reference], style)
        rows = d[d["reference"] == reference]
        for model in dict.fromkeys(rows["model"]):
            color = style.color(model)
            for lab, ls in (("standard", "-"), ("swapped", "--")):
                m = rows[(rows["model"] == model) & (rows["labelling"] == lab)].sort_values("layer")
                if not len(m):
                    continue
                if lab == "standard":
                    ref = m["reference_norm"]
                    axes[r, 0].plot(m["layer"], m["norm"] / ref, color=color, label=style.label(model))
                    axes[r, 0].fill_between(m["layer"], m["norm_ci_low"] / ref, m["norm_ci_high"] / ref, color=color,
                                            alpha=0.2, linewidth=0)
                    axes[r, 0].plot(m["layer"], m["noise_norm"] / ref, ":", color=color, linewidth=0.8)
                axes[r, 1].plot(m["layer"], m["lens_delta"], ls, color=color,
                                label=f"{style.label(model)} ({lab})")
        s = steering[(steering["target"] == reference) & (steering["alpha"] == 1.0)] if len(steering) else steering
        if len(s):
            for k, (name, g) in enumerate(s.groupby("steering", sort=False)):
                model = name.split(" ")[1]
                main = g[g["direction"] == "mean difference"].groupby("layer")["delta_change"].mean()
                rand = g[g["direction"] != "mean difference"].groupby("layer")["delta_change"].apply(
                    lambda x: x.abs().mean())
                axes[r, 2].plot(main.index, main.to_numpy(), color=style.color(model), label=style.label(model))
                axes[r, 2].plot(rand.index, rand.to_numpy(), ":", color=style.color(model), linewidth=0.8)
        axes[r, 0].set_ylabel(f"vs {reference}\n|mean diff| / |activation|")
        axes[r, 1].set_ylabel("logit lens of the difference")
        axes[r, 2].set_ylabel("delta change steered (alpha = 1)")
        for ax in axes[r, :3]:
            ax.set_xlabel("layer")
            ax.axhline(0, color="#999999", linewidth=0.6)
            ax.grid(alpha=0.3, linewidth=0.5)
        axes[r, 0].legend(fontsize=7, frameon=False)
        axes[r, 1].legend(fontsize=6, frameon=False, ncol=2)
    axes[0, 0].set_title("(a) size of the decision-position difference;\nband 95% CI, dotted: noise norm",
                         fontsize=9, loc="left")
    axes[0, 1].set_title("(b) its logit lens; solid standard, dashed swapped", fontsize=9, loc="left")
    axes[0, 2].set_title("(c) the reference steered by it; dotted: mean |change| of random directions", fontsize=9,
                         loc="left")
    axes[0, 3].set_title("(d) each state's difference, lens at the last layer;\nfilled standard, open swapped",
                         fontsize=9, loc="left")
    fig.tight_layout()
    save_figure(fig, path)


def _plot_states(ax, rows: pd.DataFrame, style: ModelStyle) -> None:
    """Panel (d) of plot_adl: per state (x) and fine-tune, the last layer's lens with its 95%
    interval, filled = standard labelling, open = swapped."""
    ax.axhline(0, color="#999999", linewidth=0.6)
    ax.grid(alpha=0.3, linewidth=0.5)
    if not len(rows):
        ax.text(0.5, 0.5, "the prompts show one state\n(or diffing.by_state is off)", ha="center", va="center",
                transform=ax.transAxes, fontsize=8)
        return
    last = rows[rows["layer"] == rows["layer"].max()]
    states = sorted(last["state"].unique())
    models = list(dict.fromkeys(last["model"]))
    width = 0.8 / max(len(models), 1)
    for m, model in enumerate(models):
        for lab, face, shift in (("standard", style.color(model), -0.2), ("swapped", "none", 0.2)):
            g = last[(last["model"] == model) & (last["labelling"] == lab)].set_index("state").reindex(states)
            x = np.arange(len(states)) - 0.4 + width * (m + 0.5) + shift * width
            err = np.abs(np.stack([g["lens_delta"] - g["lens_ci_low"], g["lens_ci_high"] - g["lens_delta"]]))
            ax.errorbar(x, g["lens_delta"], yerr=err, fmt="o", color=style.color(model), markerfacecolor=face,
                        capsize=2, markersize=4, label=style.label(model) if lab == "standard" else None)
    ax.set_xticks(range(len(states)), states)
    ax.set_xlabel("state (own, opponent's last move)")
    ax.set_ylabel("logit lens, last layer")
    ax.legend(fontsize=7, frameon=False)


def plot_crosscoder(quality: pd.DataFrame, latents: pd.DataFrame, causal: pd.DataFrame, path) -> None:
    """(a) latents per class, (b) held-out fraction of variance explained per model beside the
    PCA baseline, (c) the causal check: per checked latent and model, the mean delta change
    (ablate in the models that have it, add to the base) beside the random directions' mean
    |change|."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    counts = latents["class"].value_counts()
    axes[0].bar(range(len(counts)), counts.to_numpy(), color=[color_at(i) for i in range(len(counts))])
    axes[0].set_xticks(range(len(counts)), counts.index, rotation=30, ha="right", fontsize=8)
    axes[0].set_ylabel("latents")
    layer = int(quality["layer"].iloc[0]) if len(quality) else -1
    axes[0].set_title(f"(a) latent classes (layer {layer})", fontsize=9, loc="left")
    x = np.arange(len(quality))
    axes[1].bar(x - 0.2, quality["fve_held_out"], 0.4, label="crosscoder", color=color_at(0))
    axes[1].bar(x + 0.2, quality["pca_fve_held_out"], 0.4, label="PCA, as many components as L0", color=color_at(1))
    axes[1].set_xticks(x, quality["model"], rotation=30, ha="right", fontsize=8)
    axes[1].set_ylim(0, 1)
    axes[1].set_title("(b) held-out fraction of variance explained", fontsize=9, loc="left")
    axes[1].legend(fontsize=7, frameon=False)
    if len(causal):
        keys = list(dict.fromkeys(zip(causal["latent"], causal["model"], causal["action"])))
        for i, (j, model, action) in enumerate(keys):
            g = causal[(causal["latent"] == j) & (causal["model"] == model) & (causal["action"] == action)]
            main = g[g["direction"] == "latent"]["delta_change"]
            rand = g[g["direction"] != "latent"]["delta_change"].abs().mean()
            axes[2].errorbar([i], [main.mean()], yerr=[[1.96 * main.std(ddof=1) / np.sqrt(len(main))]]
                             if len(main) > 1 else None, fmt="o", color=color_at(0), capsize=2)
            axes[2].plot([i - 0.3, i + 0.3], [rand, rand], color="#333333", linewidth=1)
            axes[2].plot([i - 0.3, i + 0.3], [-rand, -rand], color="#333333", linewidth=1)
        axes[2].set_xticks(range(len(keys)), [f"#{j} {action} {m}" for j, m, action in keys], rotation=40,
                           ha="right", fontsize=7)
        axes[2].axhline(0, color="#999999", linewidth=0.6)
    else:
        axes[2].text(0.5, 0.5, "no fine-tune-specific latent fires at the decision", ha="center",
                     transform=axes[2].transAxes, fontsize=8)
    axes[2].set_ylabel("delta change")
    axes[2].set_title("(c) causal check: mean +- 95% CI; lines: random directions' mean |change|", fontsize=9,
                      loc="left")
    fig.tight_layout()
    save_figure(fig, path)
