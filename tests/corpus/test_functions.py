"""Cutting one file into records: the prompt's context (imports, constants, imports from the module itself), and
the rules that drop functions."""

from __future__ import annotations

from codenas.corpus.functions import Limits, extract, is_prose, module_name

MODULE = '''from __future__ import annotations

import os.path
import re as regex
from collections import OrderedDict, deque
from .sibling import helper

PATTERN = regex.compile("a+")
LIMIT = 10
NAMES = ("a", "b", LIMIT)


def _private_table():
    return {}


def uses_constants(path: str) -> OrderedDict:
    """Join the path with every name, up to the limit given above."""
    return OrderedDict((n, os.path.join(path, str(n))) for n in NAMES[:LIMIT])


def uses_module_helpers(text):
    """Find every run of letters a in the text, with the table."""
    return PATTERN.findall(text), _private_table()


def uses_relative(x):
    """Hand the value over to the sibling module's helper."""
    return helper(x)


def stub(x):
    """This function does nothing yet, it is a stub."""
    raise NotImplementedError


def gen(x):
    """Yield the value back once, then stop for good."""
    yield x


def long_body(x):
    """A body of three lines, more than the limit allows."""
    a = x
    b = a
    return b


def bad_doc(x):
    """TODO: write this docstring some day."""
    return x


def outer(x):
    """The outer function that holds an inner function."""
    def inner(y):
        """The inner function needs the closure of outer."""
        return x + y
    return inner
'''


def _cut(module: str | None, limits: Limits = Limits(max_body_lines=2)):
    """The records of MODULE (as the module `module`: its top-level package must be importable here)."""
    records, drops, file_rule = extract(MODULE, "src/pkg/mod.py", limits, module)
    assert file_rule is None
    return {r.entry_point: r for r in records}, drops


def test_prompt_holds_the_imports_and_small_constants_it_reads():
    records, drops = _cut(None)
    prompt = records["uses_constants"].prompt
    assert prompt.startswith("from __future__ import annotations\nimport os.path\nfrom collections import "
                             "OrderedDict\n\nLIMIT = 10\nNAMES = (\"a\", \"b\", LIMIT)\n\n\ndef uses_constants(")
    assert "deque" not in prompt and "regex" not in prompt
    # without an import name, a module-level function and a computed constant cannot be given: dropped
    assert "uses_module_helpers" not in records and "uses_relative" not in records
    assert drops["needs_context"] == 2


def test_a_module_with_an_import_name_imports_what_it_cannot_copy():
    records, _ = _cut("json.mod")
    prompt = records["uses_module_helpers"].prompt
    assert "from json.mod import PATTERN" in prompt and "regex" not in prompt  # the computed constant is imported
    assert "from json.mod import _private_table" in prompt
    assert records["uses_relative"].prompt.startswith("from __future__ import annotations\nfrom json.sibling import "
                                                      "helper\n\n\ndef uses_relative(x):")


def test_rules_drop_and_count():
    records, drops = _cut("json.mod")
    assert set(records) == {"uses_constants", "uses_module_helpers", "uses_relative"}
    assert (drops["stub"], drops["generator"], drops["body_length"], drops["docstring_quality"], drops["nested"],
            drops["no_docstring"]) == (1, 1, 2, 1, 1, 1)  # outer is 4 lines long
    assert extract(MODULE, "src/tests/test_mod.py", Limits())[2] == "test_file"
    assert extract("def broken(:\n", "src/x.py", Limits())[2] == "syntax_error"
    kept, _ = _cut("json.mod", Limits(max_body_lines=3, keep_generators=True))
    assert {"gen", "long_body"} <= set(kept)


def test_helpers():
    assert module_name("json/decoder.py") == "json.decoder" and module_name("json/__init__.py") == "json"
    assert module_name("my-pkg/x.py") is None
    assert is_prose("Return the sum of the two numbers.") and not is_prose("TODO: document")
    assert not is_prose("x -> y") and not is_prose("Вернуть сумму двух чисел.")
