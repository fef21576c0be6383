# The config in use: exactly the --configfile(s) given, else ./config.yaml; validated
# against the schema (defaults filled) before any rule is defined.
import os
import sys

from interp_lib.config import ConfigError, read_yaml, validate_config


def _shown(path):
    rel = os.path.relpath(path)
    return str(path) if rel.startswith("..") else rel


# Snakemake documents no Snakefile API for the --configfile(s) in use (its configuration docs
# describe only the merged `config`), and replacing rather than merging needs them. The
# workflow holds them in its ConfigSettings, the settings type of Snakemake's documented
# Python API (snakemake.settings.types: configfiles, config); tests/test_conventions.py
# fails first, naming the fields, should a release rename them.
GIVEN_CONFIGFILES = list(workflow.config_settings.configfiles)
CONFIG_FILES = [_shown(f) for f in GIVEN_CONFIGFILES] or ["config.yaml"]
# what error messages name: the file(s) in use, and command-line --config values if any
CONFIG_SOURCE = " + ".join(CONFIG_FILES) + (
    " + --config" if workflow.config_settings.config else ""
)

try:
    if not GIVEN_CONFIGFILES:
        # Snakemake's own message for a YAML error names neither line nor column.
        read_yaml("config.yaml")
        # The default config only when none is given: a `configfile:` directive would be
        # deep-merged under every --configfile, dragging the demo's models along.
        workflow.configfile("config.yaml")
    validate_config(config, source=CONFIG_SOURCE)
except ConfigError as exc:
    sys.exit(f"Error: {exc}")
