"""extract_completion on realistic raw model outputs (text generated after a HumanEval-style prompt)."""

from codenas.eval.postprocess import extract_completion, truncate_at_stop

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


def test_windows_newlines_and_trailing_blank_lines():
    assert extract_completion(BODY.replace("\n", "\r\n") + "\r\n\r\n\r\n") == BODY


def test_truncate_at_stop_picks_the_earliest():
    assert truncate_at_stop("a\n#x\ndef y") == "a"
