"""Every number that enters is checked where it enters (issue 26): a sweep of every numeric flag of the
`proxylm` parser and every numeric key of the run config with nan, +-inf, 0, -1, 1e400 and 2**70.

    .venv/bin/python -m pytest tests/test_numbers.py -q

Generated from the parser and the dataclasses, so flags and keys added later are swept too.
"""

import argparse
import dataclasses
import json
import types
import typing

import pytest

from proxylm.cli import build_parser
from proxylm.cli.args import numeric_actions
from proxylm.config import ConfigError, RunConfig, load_config
from proxylm.core.errors import UserError

NEVER = ("nan", "inf", "-inf", "1e400", "-1e400")   # refused by every numeric flag
INT_NEVER = (str(2 ** 70), str(-2 ** 70))          # refused by every integer flag (floats may be large: FLOPs)


def _subparser(parser, path):
    for name in path:
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = sub.choices[name]
    return parser


def _argv(parser, path, action, value):
    """`path` + the command's required positionals (dummies) + the flag with `value`."""
    sub = _subparser(parser, path)
    positionals = [a for a in sub._actions if not a.option_strings and not isinstance(a, argparse._SubParsersAction)
                   and a.nargs not in ("?", "*", argparse.REMAINDER) and a is not action]
    def dummy(a):
        return "1" if getattr(a.type, "kind", None) else (list(a.choices)[0] if a.choices else "x")

    required = [f"{a.option_strings[0]}={dummy(a)}" for a in sub._actions
                if a.option_strings and a.required and a is not action]
    flag = [f"{action.option_strings[0]}={value}"] if action.option_strings else [value]
    return [*path, *required, *flag, *["x"] * len(positionals)]


PARSER = build_parser()
FLAGS = list(numeric_actions(PARSER))


def test_the_sweep_sees_the_flags():
    names = {(" ".join(p), a.option_strings[0]) for p, a in FLAGS if a.option_strings}
    assert ("eval humaneval", "--timeout") in names and ("generate", "--temperature") in names
    assert ("generate", "--seed") in names and ("eval bpb", "--seq-len") in names and len(names) > 40


def _parse(argv, capsys):
    try:
        PARSER.parse_args(argv)
    except SystemExit as e:
        return e.code, capsys.readouterr().err
    return 0, ""


@pytest.mark.parametrize("path,action", FLAGS, ids=[" ".join(p) + " " + (a.option_strings or [a.dest])[0]
                                                    for p, a in FLAGS])
def test_every_numeric_flag_is_checked(path, action, capsys):
    parser = PARSER
    flag = (action.option_strings or [action.dest])[0]
    low = getattr(action.type, "low", None)
    assert low is not None, f"{flag} takes a number without a declared range"
    high = getattr(action.type, "high", None)
    big = INT_NEVER if action.type.kind is int or (high is not None and high < 2 ** 70) else ()
    for value in NEVER + big + ("-1",) + (("0",) if low > 0 else ()):
        if value in ("-1",) and low <= -1:
            continue
        code, err = _parse(_argv(parser, path, action, value), capsys)
        assert code == 2 and flag in err and err.count("\n") == 1, (flag, value, err)
    if low <= 0:   # 0 is in the declared range: it parses
        code, err = _parse(_argv(parser, path, action, "0"), capsys)
        assert code == 0, (flag, err)


_types: dict = {}


def _numeric_keys(cls, prefix=""):
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            yield from _numeric_keys(tp, prefix + f.name + ".")
            continue
        args = typing.get_args(tp) if typing.get_origin(tp) in (typing.Union, types.UnionType) else (tp,)
        if any(a in (int, float) for a in args):
            _types[prefix + f.name] = int if int in args else float
            yield prefix + f.name


KEYS = list(_numeric_keys(RunConfig))


def test_the_sweep_sees_the_keys():
    assert {"train.lr", "train.max_steps", "data.seq_len", "model.dim", "train.seed"} <= set(KEYS)


@pytest.mark.parametrize("key", KEYS)
def test_every_numeric_key_is_checked(key):
    tp = _types[key]
    big = (str(2 ** 70),) if tp is int else ()
    for value in ("nan", ".nan", "inf", ".inf", "-.inf", "1e400", "1.0e+400", "-1", "abc", "[1]", *big):
        with pytest.raises(ConfigError) as e:
            load_config(None, [f"{key}={value}"])
        assert key.split(".")[-1] in str(e.value), (key, value, str(e.value))
    try:   # 0: refused naming the key, or accepted as a finite number
        cfg = load_config(None, [f"{key}=0"])
    except ConfigError as e:
        assert key.split(".")[-1] in str(e)
    else:
        node = cfg
        for part in key.split("."):
            node = node[part] if isinstance(node, dict) else getattr(node, part)
        assert node == 0


def test_yaml_values_are_checked_too(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("base: proxy-bpe-tiny\ntrain:\n  lr: .nan\n")
    with pytest.raises(ConfigError, match="train.lr"):
        load_config(str(path))


# ---- JSONL fields: file:line and the field named ----

PROBLEM = {"task_id": "T/0", "prompt": "def f(x):\n", "test": "assert f(1) == 1\n", "entry_point": "f"}


def _jsonl(path, lines):
    path.write_text("".join((low if isinstance(low, str) else json.dumps(low)) + "\n" for low in lines))
    return path


@pytest.mark.parametrize("sample", ["1e400", "[1]", '"abc"', "NaN", "-1", "Infinity", str(2 ** 70), "1.5", "true"])
def test_completion_fields_are_checked(tmp_path, sample):
    from proxylm.tasks import results

    path = _jsonl(tmp_path / "c.jsonl", [{"task_id": "T/0", "completion": "  return x"},
                                         '{"task_id": "T/0", "completion": "  return x", "sample": %s}' % sample])
    with pytest.raises(UserError, match=r"c\.jsonl:2: field 'sample'"):
        results.read_completions(path, [PROBLEM])
    with pytest.raises(UserError, match=r"c\.jsonl:2: field 'sample'"):
        results.read_completions(path, [dict(PROBLEM, kind="check")], solutions=True)


@pytest.mark.parametrize("line,match", [("{not json", r"c\.jsonl:1: not JSON"), ("[1, 2]", r"c\.jsonl:1: a JSON list"),
                                        ('{"task_id": "T/0", "completion": 5}', r"c\.jsonl:1: field 'completion'")])
def test_bad_completion_lines_name_the_line(tmp_path, line, match):
    from proxylm.tasks import results

    with pytest.raises(UserError, match=match):
        results.read_completions(_jsonl(tmp_path / "c.jsonl", [line]), [PROBLEM])


def test_problem_fields_must_be_strings(tmp_path):
    from proxylm.tasks import datasets

    path = _jsonl(tmp_path / "p.jsonl", [PROBLEM, dict(PROBLEM, task_id="T/1", prompt=["def f(x):"])])
    with pytest.raises(UserError, match=r"p\.jsonl:2: field 'prompt' must be a string"):
        datasets.load_problems(path)


def test_jsonl_lines_are_capped(tmp_path, monkeypatch):
    from proxylm.core import records
    from proxylm.tasks import results

    monkeypatch.setattr(records, "MAX_LINE_BYTES", 1000)
    path = _jsonl(tmp_path / "c.jsonl", [{"task_id": "T/0", "completion": "x" * 5000}])
    with pytest.raises(UserError, match=r"c\.jsonl:1: a line over 1000 bytes"):
        results.read_completions(path, [PROBLEM])
    lines = [ln for ln in records.capped_lines(open(_jsonl(tmp_path / "d.jsonl", ["a" * 3000, "{}"]), "rb"), 1000)]
    assert lines == [(1, None), (2, b"{}\n")]


def test_corpus_jsonl_lines_are_capped(tmp_path, monkeypatch):
    from proxylm.core import records
    from proxylm.data.readers import Unit, _jsonl_records

    monkeypatch.setattr(records, "MAX_LINE_BYTES", 1000)
    path = _jsonl(tmp_path / "c.jsonl", [{"text": "y" * 5000}, {"text": "ok"}])
    seen = []
    out = list(_jsonl_records(Unit(key="c.jsonl", reader="jsonl", path=str(path), name="c.jsonl", ftype=".jsonl"),
                              "text", lambda kind, where, msg: seen.append((kind, where))))
    assert out[0] is None and out[1][0] == "c.jsonl:2" and seen == [("line_too_long", f"{path}:1")]
