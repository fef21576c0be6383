"""Start-up cost of the workflow's jobs as ordinary processes, measured in one run on one machine.

    python benchmarks/job_startup.py                          # a tiny Llama checkpoint for the load rows
    python benchmarks/job_startup.py --model-dir results_smollm2/models/PT4_COREDe --repeats 5

Three tables:
- per script: the wall time of a fresh `python -c` that runs the top-level imports of each
  script in workflow/scripts/ (read with ast, so the table follows the scripts), grouped by the
  heavy libraries those imports load. Jobs import their heavy libraries inside the interp_lib
  functions they call, so this is what every job pays before its work starts.
- per job kind: the libraries a kind of job loads in all (each job's log ends with them:
  `job loaded: ...`), imported in a fresh process.
- per model load: a fresh process that loads a model directory as a model job does,
  `models.load_hooked` (the decoder built from config.json and safetensors, no HF modelling
  import) against the same through HF's `AutoModelForCausalLM`, each with the tokenizer, and
  their ratio. Median of --repeats runs each.
"""

from __future__ import annotations

import argparse
import ast
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "transformers", "peft", "sklearn", "scipy", "matplotlib", "pandas", "h5py")


def script_imports(path: Path) -> str:
    """The script's top-level import statements, as source."""
    tree = ast.parse(path.read_text())
    return "\n".join(ast.get_source_segment(path.read_text(), node) for node in tree.body
                     if isinstance(node, (ast.Import, ast.ImportFrom)))


def timed(code: str, repeats: int) -> tuple[float, str]:
    """(median wall seconds, heavy modules loaded) of `python -c code` in fresh processes."""
    probe = code + "\nimport sys\nprint(','.join(m for m in %r if m in sys.modules))" % (HEAVY,)
    times, loaded = [], ""
    for _ in range(repeats):
        start = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True)
        times.append(time.perf_counter() - start)
        if out.returncode:
            raise SystemExit(f"{code!r} failed: {out.stderr.strip().splitlines()[-1]}")
        loaded = out.stdout.strip().splitlines()[-1] if out.stdout.strip() else ""
    return statistics.median(times), loaded


def tiny_checkpoint(out: Path) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536,
                                         num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3,
                                         tie_word_embeddings=True))
    model.save_pretrained(out)
    from interp_lib.training.demo.tokenizer import build_tokenizer

    build_tokenizer().save_pretrained(out)  # the demo family's word-level tokenizer
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-dir", help="a model directory (config.json, model.safetensors, tokenizer)")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    base, _ = timed("pass", args.repeats)
    kinds: dict[str, list] = {}
    for script in sorted((REPO / "workflow" / "scripts").glob("*.py")):
        seconds, loaded = timed(script_imports(script), args.repeats)
        kinds.setdefault(loaded or "(none)", []).append((script.stem, seconds))
    print(f"python itself: {base:.2f} s (median of {args.repeats})\n")
    print("| heavy libraries the imports load | scripts | import time (median per script, range) |")
    print("|---|---|---|")
    for loaded, rows in sorted(kinds.items(), key=lambda kv: statistics.median(s for _, s in kv[1])):
        times = [s for _, s in rows]
        print(f"| {loaded} | {len(rows)}: {', '.join(n for n, _ in rows)} | "
              f"{statistics.median(times):.2f} s ({min(times):.2f}-{max(times):.2f}) |")

    print("\n| job kind | libraries | import time (median) |")
    print("|---|---|---|")
    for kind, code in (
        ("tables (dla_tables, logit_lens_tables, patch tables, summaries)", "import pandas, h5py"),
        ("plots", "import pandas, h5py, matplotlib; matplotlib.use('Agg'); import matplotlib.pyplot"),
        ("probes", "import pandas, h5py, sklearn.linear_model"),
        ("model job before loading its model (torch)", "import torch"),
        ("model job, native loader (torch + transformers' config and tokenizer code)",
         "import torch, transformers; from transformers import AutoConfig, AutoTokenizer; "
         "import transformers.models.llama.configuration_llama, transformers.tokenization_utils_base"),
        ("model job, HF loader (+ HF modelling)", "import torch; from transformers import AutoModelForCausalLM; "
         "import transformers.models.llama.modeling_llama"),
    ):
        seconds, _ = timed(code, args.repeats)
        print(f"| {kind} | `{code}` | {seconds:.2f} s |")

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(args.model_dir) if args.model_dir else tiny_checkpoint(Path(tmp) / "tiny")
        native = ("from interp_lib.model.loading import load_hooked\n"
                  f"h = load_hooked({str(model_dir)!r}, 'float32', 'cpu', 'm', with_tokenizer=True)\n"
                  "assert type(h.model).__name__ == 'NativeDecoder'")
        via_hf = ("from interp_lib.model.hooked import HookedModel\n"
                  "from interp_lib.model.loading import load_base_model, load_tokenizer\n"
                  f"h = HookedModel(load_base_model({str(model_dir)!r}, 'float32', 'cpu', 'm'), "
                  f"load_tokenizer({str(model_dir)!r}, 'm'))")
        t_native, _ = timed(native, args.repeats)
        t_hf, _ = timed(via_hf, args.repeats)
    print(f"\nmodel load in a fresh process ({model_dir if args.model_dir else 'tiny random Llama, SmolLM2-135M widths'}):")
    print("| loader | wall time (median) |")
    print("|---|---|")
    print(f"| models.load_hooked (no HF modelling import) | {t_native:.2f} s |")
    print(f"| HF AutoModelForCausalLM + HookedModel | {t_hf:.2f} s |")
    print(f"| ratio HF / native | {t_hf / t_native:.2f} |")


if __name__ == "__main__":
    main()
