"""ReCode-style robustness: perturbed HumanEval prompts made here, pass@1 drop and BPB degradation.

    proxylm eval robustness runs/proxy-bpe-tiny --limit 20 --seeds 5           # pass@1 + BPB, Markdown table
    proxylm eval robustness runs/proxy-bpe-tiny --no-exec --json                 # BPB only (cheap, small models)
    proxylm eval robustness runs/proxy-bpe-tiny --families format,syntax --out results/rob
    proxylm eval robustness --export perturbed.jsonl --seeds 5                 # the perturbed set, HumanEval format

Families (every perturbation is deterministic given (seed, family, name, task_id) and edits the text through
`tokenize`/`ast`, never by guessing; each says whether it keeps the code valid Python, checked by ast.parse):
  format     newline_insert, newline_remove, indent_width, tab_indent, trailing_whitespace
  rename     entry_point (prompt, docstring examples, tests and the check() call), variables (parameters
             and locals of the entry point, found with ast)
  docstring  typos, case (inside docstrings only; doctest lines are left alone)
  syntax     aug_assign (x += e <-> x = x + e), compare_swap (a < b -> b > a), if_swap (if not / else
             blocks), for_while (for i in range(..) -> while), var_rename (locals, as natgen does),
             dead_code (an unreachable `if False:` block)
format and syntax use ReCode's "partial code" setting: the prompt plus the first half of the canonical
solution's lines, perturbed; rename and docstring perturb the plain prompt. Each perturbation is computed on
the complete text prompt + canonical solution; the prompt gets the edits that lie wholly before the cut, an
edit across the cut (a loop rewrite half in the prompt) is dropped, so prompt + rest stays one valid text.

Metrics per family (and per perturbation), greedy decoding:
  nominal   pass@1 on the unperturbed prompts of that setting
  perturbed mean pass@1 over the perturbed prompts
  robust    fraction of problems that pass under every variant (seeds x perturbations); a variant that
            changes nothing is the nominal prompt and counts with the nominal result
  drop      (nominal - robust) / nominal, 0 when nominal is 0
  attack_success  among nominally solved problems, the share some variant breaks
  bpb_clean, bpb_perturbed, bpb_ratio, bits_ratio: raw-byte BPB (evaluate_bpb through the run's
            interface) of the perturbed full texts against the same problems' clean texts; bits_ratio
            compares total bits (tabs shorten a text, so per-byte numbers alone mislead)
At small scale pass@1 is ~0 and the BPB columns carry the signal.
Output directory (--out, default RUN/eval/robustness): generations.jsonl (one line per distinct prompt,
resumable), bpb.jsonl (each perturbed text: its BPB and its clean text's),
robustness.json (rows, each family's "all" row also per seed), robustness.md.

Modules: source (edits, parsed text, registry), text (format, rename, docstring), syntax (code rewrites),
variants (nominal/perturbed problems, export), metrics (pass and BPB metrics, tables), run (run_robustness).
"""

from .metrics import bpb_metrics, markdown_table, robustness_metrics, summarize_robustness
from .source import (DEFAULT_SEEDS, FAMILIES, PARTIAL_FAMILIES, REGISTRY, Change, Edit, Perturbation, Source,
                     apply_edits, non_overlapping, perturbation)
from .variants import _prompt_key, _rng  # noqa: F401  (the tests use them)
from .variants import export_variants, make_variants, nominal_variant, partial_cut, perturb, perturbations

__all__ = ["DEFAULT_SEEDS", "FAMILIES", "PARTIAL_FAMILIES", "REGISTRY",
           "Change", "Edit", "Perturbation", "Source", "apply_edits", "bpb_metrics", "export_variants",
           "make_variants", "markdown_table", "nominal_variant", "non_overlapping", "partial_cut", "perturb",
           "perturbation", "perturbations", "robustness_metrics", "summarize_robustness"]

_RUN_NAMES = ("BPB_FILE", "GENERATIONS_FILE", "SUMMARY_JSON", "SUMMARY_MD", "run_robustness")


def __getattr__(name: str):
    """run.py's names (_RUN_NAMES, public too), loaded on first use: run.py imports torch (generation, BPB),
    and the CLI's parser reads this package's families and seeds (`proxylm --help` imports no torch)."""
    if name in _RUN_NAMES:
        from . import run

        return getattr(run, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
