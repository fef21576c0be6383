"""The reports built from the workflow's tables: the research-question summary and the
README's headline numbers, and the tables built from patching results. No eager imports
here: table and report jobs import the module they need (none of them imports torch).

Modules: document (headings, paragraphs, notes and tables rendered to Markdown and HTML),
inputs (which tables the summary reads, and reading them), rq_summary (the builder, RQ1
and RQ2), rq3 (DLA change, merged-weight change, candidates), interventions (steering by
layer, probes), behaviour (behaviour and label bias), counterfactual (counterfactual
patching), patching_tables (per-experiment and cross-experiment tables of patching
results), headline (`python -m interp_lib.report.headline RESULTS_DIR [CONFIG]`).
"""
