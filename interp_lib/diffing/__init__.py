"""N-way model diffing from the cache (issue 29, docs/diffing.md): the activation-difference
lens (adl.py), the crosscoder's data (dataset.py) and dictionary (crosscoder.py), and the lens's
tables over every (fine-tune, reference) pair (tables.py). The jobs that run them are
interp_lib.jobs.adl and interp_lib.jobs.crosscoder."""
