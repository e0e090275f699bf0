"""Code measures (lines, complexity, tokens) and 13-gram decontamination with boilerplate ignored."""

from __future__ import annotations

import pytest

from codenas.data.decontam import decontaminate, ngrams
from codenas.data.metrics import code_tokens, cyclomatic_complexity, solution_lines
from codenas.records import Record


def rec(rid: str, prompt: str, solution: str = "    pass\n") -> Record:
    return Record(id=rid, source="test", prompt=prompt, solution=solution, tests="assert True", entry_point="f")


def test_solution_lines_ignores_blank_lines():
    assert solution_lines("    a = 1\n\n    return a\n   \n") == 2


def test_cyclomatic_complexity_counts_decision_points():
    program = (
        "def g():\n    if x: pass\n"
        "def f(xs):\n"
        "    total = 0\n"
        "    for x in xs:\n"                      # +1
        "        if x > 0 and x < 9 or x == 5:\n"  # +1 if, +1 or, +1 and
        "            total += x\n"
        "        elif x < 0:\n"                    # +1
        "            total -= 1\n"
        "    try:\n        pass\n    except ValueError:\n        pass\n"  # +1
        "    return [y for y in xs if y] if total else None\n"  # +1 IfExp, +1 for, +1 if
    )
    assert cyclomatic_complexity(program, "f") == 10
    assert cyclomatic_complexity(program, "g") == 2
    with pytest.raises(ValueError, match="no top-level function"):
        cyclomatic_complexity(program, "h")


def test_code_tokens_skip_layout_and_comments_and_mark_imports():
    tokens = code_tokens("import os  # why\nfrom a import (b,\n    c)\n\ndef f():\n    return os.sep\n")
    assert [t for t, _ in tokens] == ["import", "os", "from", "a", "import", "(", "b", ",", "c", ")",
                                      "def", "f", "(", ")", ":", "return", "os", ".", "sep"]
    assert [b for _, b in tokens] == [True] * 10 + [False] * 9


def test_code_tokens_fall_back_on_untokenizable_text():
    assert code_tokens('x = """never closed\n') == [("x", False), ("=", False), ('"', False), ('"', False),
                                                    ('"', False), ("never", False), ("closed", False)]


def test_shared_13_gram_is_caught_and_12_gram_is_not():
    bench = rec("mbpp_11", "x = [a1, a2, a3, a4, a5, a6]\n", "")
    twelve = rec("mbpp_700", "z = ([a1, a2, a3, a4, a5, a6 + 1])\n", "")  # shares `[ a1 , ... , a6` only
    copied = rec("mbpp_701", "z = [a1, a2, a3, a4, a5, a6]\n", "")  # shares `= [ a1 , ... , a6 ]`: 14 tokens
    clean, dropped = decontaminate([twelve, copied], [bench])
    assert [r.id for r in clean] == ["mbpp_700"]
    assert dropped == {"mbpp_701": "mbpp_11"}


def test_ngrams_made_only_of_imports_are_ignored():
    imports = "from typing import List, Tuple, Dict, Optional, Any, Union, Callable\n"
    assert len(code_tokens(imports)) >= 13 and ngrams(imports) == set()
    bench = rec("he_0", imports + "def f(x):\n", "    return x\n")
    candidate = rec("mbpp_600", imports + "def g(y):\n", "    return y * 2\n")
    clean, dropped = decontaminate([candidate], [bench])
    assert dropped == {} and clean == [candidate]
    body = "    return [x * k for k in range(10)]\n"
    clean, dropped = decontaminate([rec("mbpp_601", imports + "def f(x):\n", body)], [rec("he_1", "def f(x):\n", body)])
    assert clean == [] and dropped == {"mbpp_601": "he_1"}  # the code after the imports still counts


def test_a_repeated_solution_is_dropped_however_short():
    body = "    perimeter = 4 * a\n    return perimeter\n"  # mbpp_716's body is mbpp_17's: 9 code tokens
    bench = rec("mbpp_17", "def square_perimeter(a):\n", body)
    candidate = rec("mbpp_716", "def rombus_perimeter(a):\n", "    # the same formula\n" + body.replace("4 * a",
                                                                                                    "4*a"))
    other = rec("mbpp_717", "def f(a):\n", "    return 4 * a\n")
    clean, dropped = decontaminate([candidate, other], [bench])
    assert dropped == {"mbpp_716": "mbpp_17"} and [r.id for r in clean] == ["mbpp_717"]
