"""The verdict lives outside the candidate's process (issue 26): wrong solutions that attack the harness fail.

    .venv/bin/python -m pytest tests/test_verdict.py -q

Each attack below forged a pass when the tests ran in the candidate's own interpreter. Now the tests run in
a judge process that only receives the entry point's results as data (proxylm/tasks/sandbox/proxy.py).
"""

import pytest

from proxylm.tasks.sandbox import Limits, Program, Sandbox, wire
from proxylm.tasks.sandbox.wire import Opaque, WireError

FAST = Limits(timeout_s=3.0, memory_mb=256)
PROMPT = "def helper(x):\n    return x * 2\n\n\ndef double(x):\n    \"\"\"Twice x.\"\"\"\n"
TEST = ("import json, math\n\ndef check(candidate):\n    assert candidate(3) == 6\n    assert helper(2) == 4\n"
        "    assert abs(candidate(0.5) - 1.0) < 1e-9\n    assert type(candidate(5)) is int\n"
        "    assert json.dumps(candidate(7)) == '14'\n\ncheck(double)\n")
WRONG = "    return x + 1\n"   # every attack returns this wrong answer unless its trick works


@pytest.fixture(scope="module")
def box():
    return Sandbox(FAST)


SIMPLE_TEST = "def check(candidate):\n    assert candidate(3) == 6\n\ncheck(double)\n"
ABS_TEST = "def check(candidate):\n    assert abs(candidate(0.5) - 1.0) < 1e-9\n\ncheck(double)\n"
# the test each attack aims at (each forged a pass with the tests in the candidate's process; TEST by default)
AIMS = {"getframe": SIMPLE_TEST, "test_file": SIMPLE_TEST, "metaclass": SIMPLE_TEST, "fake_modules": SIMPLE_TEST,
        "builtins_swap": ABS_TEST}


def verdict(box, completion: str, test: str = TEST) -> str:
    return box.run(Program(PROMPT + completion, test, "double", context=PROMPT)).status


def test_right_and_wrong(box):
    assert verdict(box, "    return helper(x)\n") == "passed"
    assert verdict(box, WRONG) == "failed"


ATTACKS = {
    # the dummy-`builtins` swap: "builtins put back" restored the dummy; abs/type/exec patched in the real one
    "builtins_swap": WRONG + (
        "import sys, types, builtins as _b\n"
        "_real = sys.modules['builtins']\nsys.modules['builtins'] = types.ModuleType('builtins')\n"
        "_real.abs = lambda x: 0\n"),
    # a fake numpy/collections in sys.modules: the plain-data check trusted their types
    "fake_modules": (
        "    import sys, types\n"
        "    class Yes(int):\n        dtype = None\n        def __eq__(self, o): return True\n        __hash__ = int.__hash__\n"
        "        def __sub__(self, o): return 0\n"
        "    fake = types.ModuleType('numpy'); fake.ndarray = Yes; fake.generic = int\n"
        "    sys.modules['numpy'] = fake\n"
        "    col = types.ModuleType('collections'); col.Counter = Yes; col.OrderedDict = Yes\n"
        "    col.defaultdict = Yes; col.deque = Yes; sys.modules['collections'] = col\n"
        "    return Yes(0)\n"),
    # json.dumps patched to write "passed" for the harness (and to make the test's own json.dumps agree)
    "patched_json": WRONG + (
        "import json\n_d = json.dumps\n"
        "def dumps(obj, *a, **k):\n"
        "    if isinstance(obj, dict) and 'status' in obj:\n        obj = dict(obj, status='passed', message='')\n"
        "    return '14' if obj == 8 else _d(obj, *a, **k)\n"
        "json.dumps = dumps\n"),
    # a metaclass whose __eq__/__hash__ pass for int's: type(r) == int and r == anything
    "metaclass": (
        "    class Meta(type):\n        def __eq__(cls, other): return True\n        def __hash__(cls): return hash(int)\n"
        "    class R(int, metaclass=Meta):\n        def __eq__(self, o): return True\n"
        "        __hash__ = int.__hash__\n        def __sub__(self, o): return 0\n"
        "    return R(0)\n"),
    # reading the caller's frames for the expected value (the constant after x in the test's code)
    "getframe": (
        "    import sys\n    f = sys._getframe(1)\n"
        "    while f is not None:\n        consts = list(f.f_code.co_consts)\n"
        "        if x in consts and consts.index(x) + 1 < len(consts):\n"
        "            return consts[consts.index(x) + 1]\n        f = f.f_back\n"
        "    return x + 1\n"),
    # reading the test file in the working directory (or any sandbox dir under the temp root)
    "test_file": (
        "    import os, re, glob\n"
        "    texts = []\n"
        "    for p in glob.glob('*') + glob.glob(os.path.join(os.path.dirname(os.getcwd()), 'proxylm-sbx-*', '*')):\n"
        "        try:\n            texts.append(open(p).read())\n        except OSError:\n            pass\n"
        "    for t in texts:\n"
        "        m = re.search(r'candidate\\(%r\\) == (\\d+)' % x, t)\n        if m:\n            return int(m.group(1))\n"
        "    return x + 1\n"),
    # a forged record on every descriptor, then a clean exit
    "every_fd": WRONG + (
        "import os, json\nfor fd in range(3, 256):\n    try:\n"
        "        os.write(fd, json.dumps({'status': 'passed', 'message': ''}).encode() + b'\\n')\n"
        "    except OSError:\n        pass\n"),
    # garbage on the reply channel, built by hand (the judge parses strictly)
    "raw_reply": (
        "    import os, struct\n    for fd in range(3, 64):\n        try:\n"
        "            os.write(fd, struct.pack('!Q', 9) + b'{\"ok\":6}')\n        except OSError:\n            pass\n"
        "    return x + 1\n"),
}


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_attacks_are_counted_failed(box, attack):
    status = verdict(box, ATTACKS[attack], AIMS.get(attack, TEST))
    assert status in ("failed", "error") and status != "passed"


def test_redefined_helper_and_builtins_change_nothing(box):
    assert verdict(box, "    return helper(x) + 1\n\n\ndef helper(x):\n    return x * 2 + 1\n") == "failed"
    ok_but_patched = "    return helper(x)\n\n\nimport builtins\nbuiltins.abs = lambda x: 0\n"
    assert verdict(box, ok_but_patched) == "passed"   # the candidate may break its own interpreter only


def test_candidate_exceptions_reach_the_tests_as_builtins(box):
    test = ("def check(candidate):\n    try:\n        candidate(-1)\n    except ValueError as e:\n"
            "        assert 'negative' in str(e)\n    else:\n        raise AssertionError('no ValueError')\n"
            "    assert candidate(2) == 4\n\ncheck(double)\n")
    good = "    if x < 0:\n        raise ValueError('negative')\n    return 2 * x\n"
    assert box.run(Program(PROMPT + good, test, "double", context=PROMPT)).passed
    odd = "    class Mine(ValueError):\n        pass\n    if x < 0:\n        raise Mine('negative')\n    return 2 * x\n"
    assert box.run(Program(PROMPT + odd, test, "double", context=PROMPT)).passed   # builtin by its name only
    exits = "    raise SystemExit(0)\n"
    assert box.run(Program(PROMPT + exits, test, "double", context=PROMPT)).status == "failed"


def test_a_candidate_that_dies_mid_call_is_reported_by_its_own_status(box):
    r = box.run(Program(PROMPT + "    return [0] * (10 ** 10)\n", TEST, "double", context=PROMPT))
    assert r.status == "memory"
    r = box.run(Program(PROMPT + "    import os\n    os._exit(0)\n", TEST, "double", context=PROMPT))
    assert r.status == "error"
    r = box.run(Program("def other():\n    pass\n", TEST, "double", context=PROMPT))
    assert r.status == "failed" and "double" in r.message


def test_opaque_results_only_where_allowed(box):
    test = "import re\nassert find('abc') is not None\nassert find('xyz') is None\n"
    sol = "import re\ndef find(s):\n    return re.search('b', s)\n"
    assert box.run(Program(sol, test, "find", opaque_results=True)).passed
    assert box.run(Program(sol, test, "find")).status == "failed"


def test_tests_that_pass_a_function_cannot_be_proxied(box):
    test = "assert apply(len, 'ab') == 2\n"
    r = box.run(Program("def apply(f, x):\n    return f(x)\n", test, "apply"))
    assert r.status == "error" and "call proxy" in r.message


# ---- the wire format itself (no process) ----

@pytest.mark.parametrize("value", [None, True, 0, -2 ** 70, 1.5, float("inf"), "é\x00", [1, [2]], (1, (2,)),
                                   {1, 2}, frozenset({3}), {"a": (1, 2), 3: None}, b"\x00\xff", bytearray(b"x"),
                                   1 + 2j, range(1, 9, 2)])
def test_wire_round_trip(value):
    back = wire.loads(wire.dumps(value))
    assert back == value and type(back) is type(value)


def test_wire_carries_ints_longer_than_python_prints():
    big = -(7 ** 20000)   # 16,900 decimal digits: str() refuses it, hex does not
    assert wire.loads(wire.dumps(big)) == big


def test_wire_is_strict():
    for bad in (b"not json", b'{"tuple": 1}', b'{"a": 1, "b": 2}', b'{"set": [[1]]}', b'{"fraction": [1, 0]}',
                b'{"bytes": "!!"}', b"[" * 100_000 + b"]" * 100_000, b'{"evil": []}'):
        with pytest.raises(WireError):
            wire.loads(bad)
    with pytest.raises(TypeError, match="plain data"):
        wire.loads(b'{"opaque": "re.Match"}')
    assert isinstance(wire.loads(b'{"opaque": "re.Match"}', opaque_ok=True), Opaque)
    nan = wire.loads(wire.dumps(float("nan")))
    assert nan != nan
