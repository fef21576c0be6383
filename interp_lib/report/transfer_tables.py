"""The transfer tables of a workflow run (issue 28 item 4) from the per-job files: which file
holds what is the only thing known here; the numbers come from analyses.transfer and
analyses.probe_transfer."""

from __future__ import annotations

import pandas as pd

from ..analyses.probe_transfer import COLUMNS as PROBE_COLUMNS
from ..analyses.transfer import CIRCUIT_COLUMNS, COLUMNS, circuit_summary, dla_transfer, patching_transfer
from ..steering.summary import context_layer_ranking


def _read(files) -> list[pd.DataFrame]:
    return [pd.read_csv(f) for f in files]


def _concat(frames, columns) -> pd.DataFrame:
    frames = [f for f in frames if len(f)]
    return pd.concat(frames, ignore_index=True)[columns] if frames else pd.DataFrame(columns=columns)


def component_tables(patch_files: dict, dla_files: dict, experiments: dict, contexts: dict, top_k: int,
                     seed: int = 0, states: dict | None = None, labellings: dict | None = None) -> pd.DataFrame:
    """COLUMNS of every experiment, patching then DLA. `patch_files` maps experiment -> its
    per-scenario patches files; `dla_files` maps model -> its per-scenario DLA files;
    `experiments` maps experiment -> (source, target); `states` scenario -> state (the
    reference's prompts are matched by state, analyses.transfer.component_transfer) and
    `labellings` scenario -> labelling (means balanced over labellings)."""
    frames, dla_of = [], {}  # a model's DLA tables, read once for all its experiments
    for experiment, files in patch_files.items():
        patches = pd.concat(_read(files), ignore_index=True)
        if len(patches):
            frames.append(patching_transfer(patches, contexts, top_k, seed, states, labellings))
        source, target = experiments[experiment]
        scenarios = set(patches["scenario"])
        for m in (source, target):
            if m not in dla_of:
                dla_of[m] = pd.concat(_read(dla_files[m]), ignore_index=True)
        dla = {m: dla_of[m][dla_of[m]["scenario"].isin(scenarios)] for m in (source, target)}
        meta = {"experiment": experiment, "source": source, "target": target}
        frames.append(dla_transfer(dla[source], dla[target], contexts, top_k, meta, seed, states,
                                   labellings))
    return _concat(frames, COLUMNS)


def steering_tables(steering_files: dict, contexts: dict) -> pd.DataFrame:
    """context_layer_ranking of every steering experiment (name -> its per-scenario files)."""
    frames = [context_layer_ranking(pd.concat(_read(files), ignore_index=True), contexts)
              for files in steering_files.values() if files]
    frames = [f for f in frames if len(f)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["context", "game", "steering"])


def probe_tables(files) -> pd.DataFrame:
    return _concat(_read(files), PROBE_COLUMNS)


def circuit_tables(files, contexts: dict) -> pd.DataFrame:
    prompts = [f for f in _read(files) if len(f)]
    if not prompts:
        return pd.DataFrame(columns=CIRCUIT_COLUMNS)
    return circuit_summary(pd.concat(prompts, ignore_index=True), contexts)
