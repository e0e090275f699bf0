"""extract_completion on realistic raw model outputs (text generated after a HumanEval-style prompt)."""

from codenas.eval.postprocess import STOP_SEQUENCES, extract_completion, extract_with_reason

BODY = "    total = 0\n    for x in numbers:\n        total += x\n    return total\n"


def test_plain_body_is_kept_whole():
    assert extract_completion(BODY) == BODY


def test_cut_at_next_function_and_end_of_text():
    raw = BODY + "\n\ndef main():\n    print(add([1, 2]))\n<|endoftext|>junk"
    assert extract_completion(raw, "add") == BODY
    assert extract_completion(BODY + "<|endoftext|>def x(): pass") == BODY


def test_trailing_tests_prints_and_main_guard_are_dropped():
    for tail in ("\n\nassert add([1]) == 1\n", "\nprint(add([1, 2]))\n", "\nif __name__ == '__main__':\n    x()\n",
                 "\n# Test cases\nadd([])\n", "\nclass Foo:\n    pass\n", "\n>>> add([1])\n1\n"):
        assert extract_completion(BODY + tail, "add") == BODY


def test_nested_helper_inside_the_function_is_kept():
    body = "    def helper(x):\n        return x * 2\n\n    return [helper(x) for x in numbers]\n"
    assert extract_completion(body + "\ndef helper2():\n    pass\n", "f") == body


def test_markdown_fence_closing_the_body():
    assert extract_completion(BODY + "```\n\nThis function sums the list.", "add") == BODY


def test_markdown_block_with_the_whole_function_and_imports():
    raw = ("```python\nimport math\nfrom typing import List\n\n\ndef add(numbers: List[int]) -> int:\n"
           "    \"\"\"Sum.\"\"\"\n" + BODY + "\n\nprint(add([1, 2, 3]))\n```\nExplanation: loops.")
    got = extract_completion(raw, "add")
    assert got == "    import math\n    from typing import List\n    \"\"\"Sum.\"\"\"\n" + BODY


def test_rewritten_function_picks_the_entry_point_not_a_helper():
    raw = ("def helper(x):\n    return x\n\n"
           "def add(numbers,\n        start=0):\n" + BODY + "\n\ndef other():\n    pass\n")
    assert extract_completion(raw, "add") == BODY


def test_empty_and_unindented_output_gives_empty_completion():
    assert extract_completion("") == ""
    assert extract_completion("<|endoftext|>") == ""
    assert extract_completion("Sure! Here is the answer.") == ""


def test_what_is_cut_to_nothing_says_why_and_only_no_text_is_empty():
    assert extract_with_reason("") == ("", None)
    assert extract_with_reason("  \n<|endoftext|>def f():\n    return 1\n") == ("", None)  # nothing before the end
    unindented = "total = 0\nfor x in numbers:\n    total += x\nreturn_value = total\n"
    completion, reason = extract_with_reason(unindented, "sum_all")
    assert completion == "" and reason.startswith("unindented code with no def sum_all: the function's body must")
    completion, reason = extract_with_reason("Sure! Here is the answer.", "f")
    assert completion == "" and reason.startswith("unindented text that does not parse as Python")
    assert extract_with_reason("```python\n```\n")[1] == "nothing inside the markdown code block, or only text " \
                                                         "before it"
    assert extract_with_reason("    return (\n")[1] == ("the indented text that should be the function's body does "
                                                        "not parse as Python")
    assert extract_with_reason(BODY) == (BODY, None)


def test_windows_newlines_and_trailing_blank_lines():
    assert extract_completion(BODY.replace("\n", "\r\n") + "\r\n\r\n\r\n") == BODY


def test_stopping_sampling_at_a_stop_sequence_loses_nothing_the_completion_keeps():
    helper = "\n\ndef _helper(x):\n    return x\n"
    raw = "    return _helper(a)\n" + helper
    assert not any(stop in raw for stop in STOP_SEQUENCES)
    kept = extract_completion(raw, "f")
    assert "def _helper" in kept  # helpers may follow the function, so no stop sequence cuts them off
    for stop in STOP_SEQUENCES:
        assert extract_completion(raw + stop + "(1)\n", "f") == kept


# Top-level helpers the entry function needs are kept, transitively and in the order written; the rest is not.

def test_a_helper_defined_after_the_function_is_kept():
    raw = "    return _impl(a, b)\n\n\ndef _impl(a, b):\n    return a + b\n\n\nprint(add(1, 2))\n"
    assert extract_completion(raw, "add") == "    return _impl(a, b)\n\ndef _impl(a, b):\n    return a + b\n"


def test_helpers_that_call_each_other_and_what_they_use():
    raw = ("    return is_even(n)\n\nimport math\nLIMIT = 10\n\ndef unused():\n    return 0\n\n"
           "def is_odd(n):\n    return n != 0 and is_even(n - 1)\n\n"
           "@functools.lru_cache\ndef is_even(n):\n    return n == 0 or (is_odd(n - 1) and n < LIMIT + math.inf)\n\n"
           "import functools\nassert is_even(4)\n")
    assert extract_completion(raw, "f") == (
        "    return is_even(n)\n\nimport math\n\nLIMIT = 10\n\ndef is_odd(n):\n    return n != 0 and is_even(n - 1)\n"
        "\n@functools.lru_cache\ndef is_even(n):\n    return n == 0 or (is_odd(n - 1) and n < LIMIT + math.inf)\n"
        "\nimport functools\n")


def test_a_helper_that_shadows_a_builtin_is_kept():
    raw = "    return sum(numbers)\n\ndef sum(xs):\n    return 42\n\ndef max(xs):\n    return 0\n"
    assert extract_completion(raw, "f") == "    return sum(numbers)\n\ndef sum(xs):\n    return 42\n"


def test_a_helper_before_an_unused_one():
    raw = ("    return helper(x)\n\ndef helper(x):\n    return x + 1\n\ndef unused(x):\n    return helper(x)\n\n"
           "class Unused:\n    pass\n")
    assert extract_completion(raw, "f") == "    return helper(x)\n\ndef helper(x):\n    return x + 1\n"


def test_code_that_stops_mid_line_keeps_its_longest_parsable_prefix():
    assert extract_completion(BODY + "\n\ndef unrelated(x):\n    return x +", "add") == BODY
    assert extract_completion(BODY + "\nprint(add([1, 2]", "add") == BODY
    assert extract_completion("    total = 0\n    return total +", "add") == "    total = 0\n"
    raw = "    return _impl(a)\n\ndef _impl(a):\n    return a\n\ndef _other(a):\n    return (a"
    assert extract_completion(raw, "f") == "    return _impl(a)\n\ndef _impl(a):\n    return a\n"


def test_a_rewritten_function_keeps_its_helpers_before_and_after():
    raw = ("from math import sqrt\n\ndef _norm(v):\n    return sqrt(sum(x * x for x in v))\n\n"
           "def length(v):\n    return _norm(v)\n\nprint(length([3, 4]))\n")
    assert extract_completion(raw, "length") == (
        "    from math import sqrt\n    return _norm(v)\n\nfrom math import sqrt\n\n"
        "def _norm(v):\n    return sqrt(sum(x * x for x in v))\n")


# Every HumanEval problem, solved by its canonical solution followed by what base models write next, or with
# the solution moved into a helper after the function: all must keep passing.
TAILS = ("\n\n\ndef check_it():\n    assert True\n\ncheck_it()\n", "\n\nif __name__ == '__main__':\n"
         "    import doctest\n    doctest.testmod()\n", "\n\nprint('done')\n", "\n```\n\nThis solves the task.",
         "\n\ndef unrelated(x):\n    return x * 2\n", "\n\nclass Solution:\n    def run(self):\n        return 1\n",
         "\n\nassert True\nfor i in range(3):\n    print(i)\n")


def _entry(record):
    import ast

    return next(node for node in ast.walk(ast.parse(record.prompt))
                if isinstance(node, ast.FunctionDef) and node.name == record.entry_point)


def as_helper(record) -> str:
    """The canonical body moved into ``_impl`` after the function, which becomes ``return _impl(...)``; imports
    the prompt makes inside the function (HumanEval/115) move along."""
    import ast

    entry = _entry(record)
    args = entry.args
    imports = "".join(f"    {ast.unparse(node)}\n" for node in entry.body if isinstance(node, ast.Import))
    call = [a.arg for a in args.posonlyargs + args.args]
    call += [f"*{args.vararg.arg}"] if args.vararg else []
    call += [f"{a.arg}={a.arg}" for a in args.kwonlyargs]
    call += [f"**{args.kwarg.arg}"] if args.kwarg else []
    return f"    return _impl({', '.join(call)})\n\n\ndef _impl({ast.unparse(args)}):\n{imports}{record.solution}"


def test_every_humaneval_variant_keeps_its_verdict(he_records):
    from codenas.eval.execution import run_programs

    for rec in he_records:
        plain = extract_completion(rec.solution, rec.entry_point)
        for tail in TAILS:
            assert extract_completion(rec.solution + tail, rec.entry_point) == plain, (rec.id, tail)
    programs = [rec.program(extract_completion(rec.solution + TAILS[0], rec.entry_point)) for rec in he_records]
    programs += [rec.program(extract_completion(as_helper(rec) + TAILS[1], rec.entry_point)) for rec in he_records]
    results = run_programs(programs)
    failed = [(rec.id, r.detail) for rec, r in zip(he_records * 2, results, strict=True) if not r.passed]
    assert failed == []


def test_a_sample_with_an_invalid_literal_warns_nobody(recwarn):
    from codenas.eval.postprocess import _parse_prefix

    tree, lines = _parse_prefix("x = 1\ny = 1if x else 2\n")
    assert tree is not None
    assert not [w for w in recwarn if issubclass(w.category, SyntaxWarning)]
