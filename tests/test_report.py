"""The research-question summary and the Snakemake report on a completed workflow run:
the summary's numbers against independent computations from the tables, missing inputs
named instead of failing, every plot of results/ in the report with a caption and a
category, and (where chromium is installed) that the self-contained report renders
offline in a headless browser."""

from __future__ import annotations

import html as html_lib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import REPO
from interp_lib.report.document import to_html, to_markdown
from interp_lib.report.inputs import Inputs
from interp_lib.report.rq_summary import build_summary

TARGETS = ["results/weights/weight_deltas.csv", "results/weights/weight_deltas_modules.png",
           "results/weights/weight_deltas_heads.png", "results/rq_summary.md", "results/rq_summary.html"]
CATEGORIES = {"Logit lens", "Direct logit attribution", "Activation patching", "Patching", "Behaviour", "Weights",
              "Research questions", "Attention patterns", "Counterfactual patching", "Steering", "Linear probes",
              "Component interactions", "Adapter edits", "Model diffing"}
PLOT_SUFFIXES = {".png", ".svg", ".pdf", ".jpg", ".jpeg"}
MORAL = ["PT3_COREDe", "PT3_COREUt", "PT4_COREDe"]


def _snakefile(tmp: Path) -> Path:
    """The repository's Snakefile, or (while it does not include workflow/rules/report.smk)
    a wrapper that includes both."""
    main = REPO / "Snakefile"
    if "workflow/rules/report.smk" in main.read_text():
        return main
    wrapper = tmp / "Snakefile"
    wrapper.write_text(f'include: "{main}"\ninclude: "{REPO / "workflow/rules/report.smk"}"\n')
    return wrapper


def _snakemake(snakefile: Path, workdir: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "snakemake", "-s", str(snakefile), "--directory", str(workdir), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=workdir)
    if proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


@pytest.fixture(scope="module")
def report_run(workflow_dir, tmp_path_factory):
    """(workdir, snakefile) with the summary, the weight deltas and their plots built."""
    snakefile = _snakefile(tmp_path_factory.mktemp("snakefile"))
    _snakemake(snakefile, workflow_dir, "--cores", "2", *TARGETS)
    return workflow_dir, snakefile


@pytest.fixture(scope="module")
def summary(report_run) -> str:
    return (report_run[0] / "results/rq_summary.md").read_text()


def _section(text: str, heading: str) -> str:
    """Text from `heading` to the next heading of the same or a higher level."""
    level = len(heading) - len(heading.lstrip("#"))
    start = text.index(heading + "\n")
    nxt = re.search(r"^#{1,%d} " % level, text[start + len(heading):], flags=re.M)
    return text[start: start + len(heading) + (nxt.start() if nxt else len(text))]


def _md_tables(text: str) -> list[pd.DataFrame]:
    """Every Markdown table of `text` (cells as strings)."""
    split = lambda ln: [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", ln)[1:-1]]  # noqa: E731
    lines, tables, i = text.splitlines(), [], 0
    while i < len(lines) - 1:
        if lines[i].startswith("|") and re.fullmatch(r"\|(?:(?::---|---:)\|)+", lines[i + 1]):
            header, j = split(lines[i]), i + 2
            while j < len(lines) and lines[j].startswith("|"):
                j += 1
            tables.append(pd.DataFrame([split(ln) for ln in lines[i + 2:j]], columns=header))
            i = j
        else:
            i += 1
    return tables


def _first_table(text: str) -> pd.DataFrame:
    return _md_tables(text)[0]


def _close(text: str, value: float) -> bool:
    """`text` is `value` written with 4 significant digits."""
    return float(text) == pytest.approx(value, rel=6e-4, abs=1e-12)


# --------------------------------------------------------------------------- summary


def standard(df: pd.DataFrame) -> pd.DataFrame:
    """Rows of the standard labelling: the RQ tables leave out the swapped-label sibling
    scenarios (config.yaml's CD_punished_swapped), which enter the label bias instead."""
    return df[~df["scenario"].str.endswith("_swapped")]


def test_rq1_dla_top_component_matches_the_dla_table(report_run, summary):
    full = standard(pd.read_csv(report_run[0] / "results/dla/dla_full_results.csv"))
    comps = full[full["kind"].isin(["head", "mlp"])]
    means = comps.groupby(["component", "model"])["contribution"].mean().unstack()
    pro = means[means["PT2_COREDe"] > 0]
    reduced = pro[np.logical_and.reduce([pro[m] < pro["PT2_COREDe"] for m in MORAL])]
    mean_reduction = sum(reduced["PT2_COREDe"] - reduced[m] for m in MORAL) / len(MORAL)
    top = mean_reduction.idxmax()

    section = _section(summary, "### Direct logit attribution")
    table = _first_table(section)
    assert table["component"].iloc[0] == top
    assert _close(table["PT2_COREDe"].iloc[0], reduced.at[top, "PT2_COREDe"])
    for m in MORAL:
        assert _close(table[m].iloc[0], reduced.at[top, m])
    assert _close(table["mean reduction"].iloc[0], mean_reduction[top])
    assert f"{len(reduced)} of the {len(pro)} pro-Defect components" in section
    assert len(table) == min(10, len(reduced))


def test_rq1_patching_ranks_by_mean_delta_change(report_run, summary):
    wd = report_run[0]
    config = yaml.safe_load((wd / "config.yaml").read_text())
    rq1 = [e for e, x in config["experiments"].items()
           if x["source"] == "PT2_COREDe" and x["target"] in ("PT3_COREDe", "PT3_COREUt")]
    assert rq1
    for exp in rq1:
        res = standard(pd.read_csv(wd / f"results/patching/patch_results_{exp}.csv"))
        per = res.groupby(["component", "scenario"])["delta_change"].mean().groupby("component").mean()
        table = _first_table(_section(summary, f"#### Experiment {exp}"))
        assert table["component"].iloc[0] == per.idxmax()
        assert _close(table["mean delta_change"].iloc[0], per.max())
        flips = int(res["action_flipped"].sum())
        assert f"flip {res['target'].iat[0]}'s action: {flips} of {len(res)}" in summary
        circ = standard(pd.read_csv(wd / f"results/patching/circuits_{exp}.csv"))
        assert f"found for {int(circ['flipped'].sum())} of {len(circ)} prompts" in _section(summary,
                                                                                            f"#### Experiment {exp}")


def test_rq2_cross_patching_and_dla_difference(report_run, summary):
    wd = report_run[0]
    rq2 = _section(summary, "## RQ2: deontological vs utilitarian")
    assert "#### Experiment PT3De_to_PT3Ut" in rq2 and "#### Experiment PT3Ut_to_PT3De" in rq2
    means = standard(pd.read_csv(wd / "results/dla/dla_full_results.csv")).query("kind in ['head', 'mlp']") \
        .groupby(["component", "model"])["contribution"].mean().unstack()
    diff = means["PT3_COREDe"] - means["PT3_COREUt"]
    table = _first_table(_section(rq2, "### DLA difference"))
    assert table["component"].iloc[0] == diff.abs().idxmax()
    assert _close(table["PT3_COREDe - PT3_COREUt"].iloc[0], diff[diff.abs().idxmax()])
    both = _first_table(_section(rq2, "#### Both directions"))
    assert set(both["signs"]) <= {"opposite", "same"}


def test_rq3_weights_match_the_safetensors(report_run, summary):
    from safetensors.numpy import load_file

    wd = report_run[0]
    weights = pd.read_csv(wd / "results/weights/weight_deltas.csv")
    assert set(weights["model"]) == {"PT2_COREDe", *MORAL} and set(weights["reference"]) == {"base"}
    m, b = (load_file(wd / f"results/models/{x}/model.safetensors") for x in ("PT3_COREDe", "base"))
    row = weights[weights["head"].isna() & (weights["model"] == "PT3_COREDe")].sort_values("relative_delta").iloc[-1]
    part = "self_attn" if row["module"].endswith(("q_proj", "k_proj", "v_proj", "o_proj")) else "mlp"
    key = f"model.layers.{row['layer']}.{part}.{row['module']}.weight"
    # the update from the adapter's factors in float64 (scaling x B @ A), and the merged
    # float32 files' difference within float32 merge rounding
    adapter = wd / "results/demo/adapters/PT3_COREDe"
    lora_cfg = json.loads((adapter / "adapter_config.json").read_text())
    factors = load_file(adapter / "adapter_model.safetensors")
    A, B = (next(v for k, v in factors.items() if k.endswith(f"layers.{row['layer']}.{part}.{row['module']}.lora_{x}.weight"))
            for x in ("A", "B"))
    r = lora_cfg["r"]
    scaling = lora_cfg["lora_alpha"] / (np.sqrt(r) if lora_cfg.get("use_rslora") else r)
    exact = np.linalg.norm(scaling * B.astype(np.float64) @ A.astype(np.float64))
    assert row["norm_delta"] == pytest.approx(exact, rel=1e-9)
    assert row["relative_delta"] == pytest.approx(exact / np.linalg.norm(b[key].astype(np.float64)), rel=1e-9)
    merged = m[key].astype(np.float64) - b[key].astype(np.float64)
    assert row["norm_delta"] == pytest.approx(np.linalg.norm(merged), rel=1e-6)
    mods = weights[weights["head"].isna()]
    mean = mods[mods["model"].isin(MORAL)].groupby(["layer", "module"])["relative_delta"].mean()
    table = _first_table(_section(summary, "### Merged-weight change"))
    assert (int(table["layer"].iloc[0]), table["module"].iloc[0]) == mean.idxmax()
    assert _close(table["mean (moral)"].iloc[0], mean.max())
    assert "### Candidates for targeted fine-tuning" in summary
    assert "Missing" not in summary


def test_rq3_steering_and_probe_tables_match_their_files(report_run, summary):
    results = report_run[0] / "results"
    section = _section(summary, "### Steering by layer")
    tables = _md_tables(section)
    for name, table in zip(("PT3De_minus_PT2_on_PT2", "PT4_decision_on_PT4"), tables):
        layers = pd.read_csv(results / f"steering/steering_layers_{name}.csv")
        assert [int(x) for x in table["layer"]] == layers["layer"].tolist()
        for i, row in layers.iterrows():
            shown = table.iloc[i]
            assert _close(shown["delta change"].split(" [")[0], row["effect"])
            assert shown["status"] == row["status"]
            assert (shown["rank"] == "") == pd.isna(row["rank"])
    by_layer = tables[2]  # every layer ranked by DLA change, weight change and each steering effect
    ranking = pd.read_csv(results / "steering/steering_layers_PT3De_minus_PT2_on_PT2.csv").set_index("layer")
    for _, row in by_layer.iterrows():
        value = row["steering PT3De_minus_PT2_on_PT2"]
        status = ranking.loc[int(row["layer"]), "status"]
        assert (value == "") == (status != "ranked")
        if value:
            assert _close(value, ranking.loc[int(row["layer"]), "toward_expected"])
    probes = pd.read_csv(results / "probes/probe_accuracy.csv")
    shown = _first_table(_section(summary, "### Where the decision becomes linearly readable (probes)"))
    assert len(shown) == probes.groupby(["model", "target"]).ngroups
    for _, row in shown.iterrows():
        g = probes[(probes["model"] == row["model"]) & (probes["target"] == row["target"])]
        readable = g[(g["accuracy"] >= 0.9) & (g["ci_low"] > g["chance"])]["layer"]
        assert row["first readable layer"] == (str(int(readable.min())) if len(readable) else "")


def test_html_and_markdown_carry_the_same_tables(report_run, summary):
    page = (report_run[0] / "results/rq_summary.html").read_text()
    tables = _md_tables(summary)
    assert len(tables) > 10 and page.count("<table>") == len(tables)
    cells = [html_lib.unescape(c) for c in re.findall(r"<td[^>]*>(.*?)</td>", page)]
    assert cells == [c for t in tables for row in t.itertuples(index=False) for c in row]

# the roles config.yaml gives the demo family
DEMO_ROLES = {"base": "base", "strategic": "PT2_COREDe", "deontological": "PT3_COREDe",
              "utilitarian": "PT3_COREUt", "game_deontological": "PT4_COREDe"}


def test_missing_models_experiments_and_tables_are_named(report_run, tmp_path):
    wd = report_run[0]
    config = {"models": {"base": {"base": "b"}, "PT2_COREDe": {"base": "b", "adapter": "a"}}, "experiments": {},
              "roles": DEMO_ROLES}
    inputs = Inputs(dla=str(wd / "results/dla/dla_full_results.csv"), decisions=str(tmp_path / "nope.csv"),
                    weights=None)
    doc = build_summary(config, inputs)
    md = to_markdown(doc)
    assert "roles without a configured model: deontological (PT3_COREDe), utilitarian (PT3_COREUt)" in md
    assert "no configured experiment with source PT2_COREDe and target (a PT3 model)" in md
    assert "no configured experiment with source (deontological) and target (utilitarian)" in md
    assert f"behaviour table: {tmp_path / 'nope.csv'} does not exist" in md
    assert "weight-delta table: no file given" in md
    assert "the roles `deontological` and `utilitarian` need configured models" in md
    assert "<!DOCTYPE html>" in to_html(doc)
    # other model names through roles
    renamed = {"models": {"b0": {"base": "b"}, "game": {"base": "b", "adapter": "g"}}, "experiments": {},
               "roles": DEMO_ROLES}
    md = to_markdown(build_summary(renamed, Inputs(), roles={"base": "b0", "strategic": "game"}))
    assert "| strategic | game | yes |" in md and DEMO_ROLES["strategic"] not in md


def test_roles_come_from_the_config_alone():
    """config.yaml names the demo family's roles; a config without `roles` has none (no demo
    model names leak into a user's summary)."""
    from interp_lib.config import validate_config
    from interp_lib.report.rq_summary import resolve_roles

    config = validate_config(yaml.safe_load((REPO / "config.yaml").read_text()))
    assert resolve_roles(config) == DEMO_ROLES
    config.pop("roles")
    assert resolve_roles(validate_config(config)) == {}
    assert resolve_roles({"roles": {"strategic": "x", "base": ""}}) == {"strategic": "x"}


# --------------------------------------------------------------------------- report


def _report_data(page: str) -> tuple[dict, dict]:
    """(results, categories) of a Snakemake 9 report: the JSON assigned to `var results`
    and `var categories` in its inline scripts."""
    decoder = json.JSONDecoder()
    out = []
    for name in ("results", "categories"):
        match = re.search(r"\bvar %s = (?=\{)" % name, page)
        assert match, f"no `var {name} = {{...}}` in the report"
        out.append(decoder.raw_decode(page, match.end())[0])
    return out[0], out[1]


@pytest.fixture(scope="module")
def report_html(report_run, tmp_path_factory) -> Path:
    wd, snakefile = report_run
    out = tmp_path_factory.mktemp("report") / "report.html"
    _snakemake(snakefile, wd, "--report", str(out), "all", *TARGETS)
    return out


def test_report_holds_every_plot_with_a_caption(report_run, report_html):
    wd = report_run[0]
    page = report_html.read_text()
    results, categories = _report_data(page)
    plots = sorted(str(p.relative_to(wd)) for p in (wd / "results").rglob("*")
                   if p.suffix in PLOT_SUFFIXES and not any(part.startswith(".") for part in p.parts))
    assert plots and "results/weights/weight_deltas_modules.png" in plots
    missing = [p for p in plots if p not in results]
    assert not missing, f"plots not in the report: {missing}"
    listed = {p: (c, s) for c, subs in categories.items() for s, paths in subs.items() for p in paths}
    for path, entry in results.items():
        assert entry["caption"].strip(), f"{path} has no caption"
        assert entry["data_uri"].startswith("data:"), f"{path} is not embedded"
        assert path in listed, f"{path} is in no category"
        assert listed[path][0] in CATEGORIES, f"{path}: unknown category {listed[path][0]}"
    assert listed["results/weights/weight_deltas_modules.png"][0] == "Weights"
    assert results["results/rq_summary.html"]["mime_type"] == "text/html"
    assert listed["results/rq_summary.html"][0] == "Research questions"
    assert not re.search(r'<(?:script|link|img)[^>]+(?:src|href)="https?://', page), "report loads a remote file"


def _chromium() -> str | None:
    return next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)


def _headless(browser: str, *args: str) -> subprocess.CompletedProcess:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tempfile.mkdtemp(prefix='chromium-')}", "--virtual-time-budget=5000"]
    return subprocess.run([browser, *flags, *args], capture_output=True, timeout=180, check=True)


def report_view(report: Path, result_path: str, out: Path) -> Path:
    """A copy of the report that opens `result_path` (its figure and caption) once loaded."""
    page = report.read_text()
    results, _ = _report_data(page)
    content = "html" if results[result_path]["mime_type"] == "text/html" else "img"
    script = f"""<script>
window.addEventListener("load", function () {{ setTimeout(function () {{
  var p = {json.dumps(result_path)}, cat = null;
  for (var c in categories) for (var s in categories[c]) if (categories[c][s].indexOf(p) >= 0) cat = [c, s];
  app.setView({{navbarMode: "resultinfo", resultPath: p, category: cat[0], subcategory: cat[1],
               content: {json.dumps(content)}, contentPath: results[p].data_uri}});
}}, 200); }});
</script>"""
    i = page.rfind("</body>")
    out.write_text(page[:i] + script + page[i:])
    return out


def test_report_renders_offline_in_chromium(report_html, tmp_path):
    from matplotlib.image import imread

    browser = _chromium()
    if browser is None:
        missing = "headless check needs chromium (apt-get install chromium); not installed here"
        if os.environ.get("CI") == "true":  # .ci/run installs it: a CI run must not skip this
            pytest.fail(missing)
        pytest.skip(missing)
    shot = tmp_path / "report.png"
    _headless(browser, f"--screenshot={shot}", "--window-size=1400,2000", report_html.as_uri())
    img = imread(shot)
    assert img.shape[:2] == (2000, 1400) and img[..., :3].std() > 0.02  # not a blank page

    strip = lambda dom: re.sub(r"<script\b.*?</script>", "", dom, flags=re.S)  # noqa: E731  what the app drew
    menu = strip(_headless(browser, "--dump-dom", report_html.as_uri()).stdout.decode())
    _, categories = _report_data(report_html.read_text())
    for category in categories:
        assert f">{category}<" in menu, f"category {category} not in the rendered menu"

    view = report_view(report_html, "results/weights/weight_deltas_modules.png", tmp_path / "view.html")
    rendered = strip(_headless(browser, "--dump-dom", view.as_uri()).stdout.decode())
    assert "Merged-weight change of each fine-tuned model" in rendered  # the caption
    assert 'src="data:image/png' in rendered  # the figure
    shot = tmp_path / "view.png"
    _headless(browser, f"--screenshot={shot}", "--window-size=1400,1000", view.as_uri())
    right = imread(shot)[:, 500:, :3]  # the figure's side of the page
    assert right.std() > 0.05
