"""Measures of a reference solution and of code text: line count, cyclomatic complexity, code tokens.

The simplicity filter (``solution_lines``, ``cyclomatic_complexity``), the ``mini`` difficulty ranking
(``code_tokens`` of the canonical solution) and decontamination (``code_tokens`` with boilerplate marks) all
read code through these functions, so each measure is defined once.
"""

from __future__ import annotations

import ast
import io
import re
import tokenize

# Token types that carry layout or commentary, not code; they are not counted and never form n-grams.
_SKIPPED_TOKENS = {tokenize.NEWLINE, tokenize.NL, tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER,
                   tokenize.COMMENT}
_FALLBACK_TOKEN = re.compile(r"\w+|[^\w\s]")


def solution_lines(solution: str) -> int:
    """Non-blank lines of the body the model must write."""
    return sum(1 for line in solution.splitlines() if line.strip())


def _decision_points(node: ast.AST) -> int:
    if isinstance(node, ast.If | ast.For | ast.AsyncFor | ast.While | ast.IfExp | ast.ExceptHandler
                  | ast.match_case):
        return 1
    if isinstance(node, ast.BoolOp):
        return len(node.values) - 1
    if isinstance(node, ast.comprehension):
        return 1 + len(node.ifs)
    return 0


def cyclomatic_complexity(program: str, function: str) -> int:
    """McCabe complexity of the last top-level ``def function`` in ``program``: 1 + its decision points.

    Decision points: ``if``/``elif``, ``for``, ``while``, conditional expressions, ``except`` clauses, ``case``
    clauses, each extra operand of ``and``/``or``, and each ``for``/``if`` of a comprehension (nested functions
    count towards their parent). Raises ``ValueError`` if the program does not parse or lacks the function.
    """
    try:
        tree = ast.parse(program)
    except SyntaxError as e:
        raise ValueError(f"does not parse: {e.msg}") from None
    defs = [n for n in tree.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef) and n.name == function]
    if not defs:
        raise ValueError(f"no top-level function {function!r}")
    return 1 + sum(_decision_points(n) for n in ast.walk(defs[-1]))


def code_tokens(text: str) -> list[tuple[str, bool]]:
    """Python tokens of ``text`` as ``(token, is_boilerplate)``; layout tokens and comments are left out.

    Boilerplate tokens are those of import statements (logical lines starting with ``import`` or ``from``).
    Text that ``tokenize`` rejects falls back to words and single punctuation characters, none boilerplate.
    """
    tokens: list[tuple[str, bool]] = []
    try:
        line: list[str] = []
        for tok in tokenize.generate_tokens(io.StringIO(text).readline):
            if tok.type == tokenize.NEWLINE or tok.type == tokenize.ENDMARKER:
                boiler = bool(line) and line[0] in ("import", "from")
                tokens.extend((t, boiler) for t in line)
                line = []
            elif tok.type not in _SKIPPED_TOKENS:
                line.append(tok.string)
        tokens.extend((t, False) for t in line)
    except (tokenize.TokenError, SyntaxError):
        return [(t, False) for t in _FALLBACK_TOKEN.findall(text)]
    return tokens
