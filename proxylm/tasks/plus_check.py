"""Differential tests of HumanEval+/MBPP+ (EvalPlus 0.3.1 rules), run in the sandbox's judge as a task's tests.

Standard library only, and never imported by the evaluator for running: proxylm/tasks/codegen.py puts this
file's source, followed by one call of `check_inputs(...)` with the task's data embedded as literals, into
the program's test part (sandbox Program.test). That runs in the judge process, which never runs candidate
code: `candidate` is the call proxy's stub (sandbox/proxy.py), so the candidate cannot change the inputs,
the canonical solution, these rules or the outputs it is compared on (they arrive as data).

What one call does (evalplus.evaluate.check_correctness + evalplus.eval.unsafe_execute, fast_check mode):
  1. the canonical solution (prompt + canonical_solution, trusted dataset code) runs in fresh globals on a
     deep copy of every input; its results are the expected outputs, its time per input the reference time
     (evalplus measures it once in the evaluator and caches it; here it is measured in the same process, just
     before the candidate, on the same machine load);
  2. the candidate (the entry point through the call proxy: plain-data results) runs on a deep copy of every
     input, each under a time limit of max(min_time_limit, factor * reference time) (evalplus: 1 s and 4);
  3. results are compared as evalplus does: ==, the special oracles (HumanEval/32 find_zero, Mbpp 164, 295,
     558, 581, set-equality and not-None tasks), and for floats np.allclose(rtol=1e-7, atol) with atol
     raised to 1e-6 when the task's atol is 0 and the expected value is a float (or list/tuple of floats);
     like evalplus, that raised atol stays for the rest of the inputs;
  4. the first failing input raises AssertionError naming it (the sandbox reports `failed`).
"""

import copy
import math
import signal
import time

# evalplus/eval/_special_oracle.py (0.3.1): tasks whose outputs are compared as sets, or only as "not None"
MBPP_OUTPUT_SET_EQ_TASKS = ("similar_elements", "find_char_long", "common_in_nested_lists", "extract_singly",
                            "larg_nnum", "intersection_array", "find_dissimilar", "Diff")
MBPP_OUTPUT_NOT_NONE_TASKS = ("check_str", "text_match_three", "text_starta_endb")


class InputTimeout(BaseException):
    """One input ran past its time limit (a BaseException, as a bare `except Exception` should not eat it)."""


def _on_alarm(signum, frame):
    raise InputTimeout("time limit")


def _poly(xs, x):   # HumanEval/32's polynomial: find_zero is checked by |poly(xs, out)| <= atol
    return sum(c * math.pow(x, i) for i, c in enumerate(xs))


def _surface_area(base_edge, height):   # the reading of Mbpp/581 evalplus also accepts
    slant = math.sqrt((base_edge / 2) ** 2 + height ** 2)
    return round(base_edge ** 2 + 4 * (base_edge * slant) / 2)


def _digit_distance(num1, num2):   # Mbpp/558 with the shorter number padded with zeros
    a, b = str(num1), str(num2)
    width = max(len(a), len(b))
    return sum(abs(int(x) - int(y)) for x, y in zip(a.zfill(width), b.zfill(width)))


def is_floats(x) -> bool:
    """evalplus's is_floats: a float, a non-empty list/tuple of floats, or a float numpy array."""
    if isinstance(x, float):
        return True
    if isinstance(x, (list, tuple)) and x:
        return all(isinstance(i, float) for i in x)
    dtype = getattr(x, "dtype", None)
    return dtype is not None and str(dtype) in ("float64", "float32")


def allclose(out, exp, atol: float) -> bool:
    """np.allclose(out, exp, rtol=1e-07, atol=atol) (numpy is imported only when a float comparison needs it)."""
    import numpy as np

    return bool(np.allclose(out, exp, rtol=1e-07, atol=atol))


def _expected(canonical_src: str, entry_point: str, inputs: list, not_none: bool) -> tuple[list, list]:
    g: dict = {"__name__": "__canonical__"}
    exec(compile(canonical_src, "<canonical solution>", "exec"), g)
    fn = g[entry_point]
    outs, times = [], []
    for i, inp in enumerate(inputs):
        arg = copy.deepcopy(inp)
        start = time.time()
        try:
            outs.append(fn(*arg))
        except Exception as e:   # the dataset's own solution fails: no expected output, the candidate fails
            raise RuntimeError(f"the canonical solution fails on input {i}: {type(e).__name__}: {e}") from None
        times.append(time.time() - start)
    if not_none:
        outs = [o is not None for o in outs]
    return outs, times


def _matches(dataset: str, entry_point: str, inp, out, exp, atol: float) -> tuple[bool, float]:
    """(passed, atol for the next inputs), following evalplus.eval.unsafe_execute."""
    exact = out == exp
    if dataset == "mbpp":
        if entry_point == "are_equivalent":            # Mbpp/164
            exact = True
        elif entry_point == "sum_div":                 # Mbpp/295
            exact = exact or out == 0
        elif entry_point == "surface_Area":            # Mbpp/581
            exact = exact or abs(out - _surface_area(*inp)) <= atol
        elif entry_point == "digit_distance_nums":     # Mbpp/558
            exact = exact or out == _digit_distance(*inp)
        elif entry_point in MBPP_OUTPUT_SET_EQ_TASKS:
            exact = set(out) == set(exp)
        elif entry_point in MBPP_OUTPUT_NOT_NONE_TASKS:
            exact = out == exp if isinstance(out, bool) else exp == (out is not None)
    if dataset == "humaneval" and entry_point == "find_zero":
        return abs(_poly(*inp, out)) <= atol, atol
    if atol == 0 and is_floats(exp):
        atol = 1e-6
    if not exact and atol != 0:
        if type(out) is not type(exp):
            return False, atol
        if isinstance(exp, (list, tuple)) and len(out) != len(exp):
            return False, atol
        return allclose(out, exp, atol), atol
    return bool(exact), atol


def check_inputs(candidate, *, dataset: str, entry_point: str, canonical_src: str, inputs: list, atol: float,
                 label: str, min_time_limit: float = 1.0, time_factor: float = 4.0) -> int:
    """Run `candidate` on every input against the canonical solution; raise AssertionError at the first
    mismatch, error or time-out. Returns the number of inputs checked."""
    not_none = dataset == "mbpp" and entry_point in MBPP_OUTPUT_NOT_NONE_TASKS
    expected, ref_times = _expected(canonical_src, entry_point, inputs, not_none)
    signal.signal(signal.SIGALRM, _on_alarm)
    for i, (inp, exp, ref) in enumerate(zip(inputs, expected, ref_times)):
        limit = max(min_time_limit, time_factor * ref)
        arg = copy.deepcopy(inp)
        try:
            signal.setitimer(signal.ITIMER_REAL, limit)
            try:
                out = candidate(*arg)
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
            ok, atol = _matches(dataset, entry_point, inp, out, exp, atol)
        except InputTimeout:
            raise AssertionError(f"{label} input {i}: over its time limit of {limit:.2f} s") from None
        except Exception as e:
            raise AssertionError(f"{label} input {i}: {type(e).__name__}: {e}") from None
        if not ok:
            raise AssertionError(f"{label} input {i}: wrong output")
    return len(inputs)
