"""Analyses that read the activation caches and run no model: behaviour (decisions, label
bias), logit lens, direct logit attribution, attention, linear probes, and weight change.
Importing the package imports nothing."""
