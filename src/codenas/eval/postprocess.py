"""Turn raw model text (the continuation after a prompt) into the function-body completion the judge runs.

Models run past the function: they close markdown fences, write tests, start other functions, or restart
with the whole function. ``extract_completion`` cuts the text at the stop sequences, keeps only the indented
body (nested helpers included) and, when the model rewrote the whole function, takes that function's body
(with its top-level imports moved inside it).
"""

from __future__ import annotations

import re

EOT = "<|endoftext|>"
STOP_SEQUENCES = ("\ndef ", "\nclass ", "\nif __name__", "\nprint(", "\n#")
_FENCE = "```"
_DEF = re.compile(r"^(?:async\s+)?def\s+(\w+)\s*\(")
_IMPORT = re.compile(r"^(?:import\s+\w|from\s+[\w.]+\s+import\s)")


def extract_completion(raw: str, entry_point: str | None = None) -> str:
    """Raw model text after the prompt -> the body completion (indented lines ending in a newline, or "")."""
    text = raw.split(EOT, 1)[0].replace("\r\n", "\n")
    text = _unfence(text)
    text = _rewritten_function_body(text, entry_point)
    return _indented_body(truncate_at_stop(text))


def truncate_at_stop(text: str, stops: tuple[str, ...] = STOP_SEQUENCES) -> str:
    """Cut ``text`` at the earliest stop sequence (and at end-of-text)."""
    cut = len(text)
    for stop in (*stops, EOT):
        i = text.find(stop)
        if i != -1:
            cut = min(cut, i)
    return text[:cut]


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


def _rewritten_function_body(text: str, entry_point: str | None) -> str:
    """If the model restarted at top level with ``def entry_point(...)``, return that function's body."""
    lines = text.split("\n")
    first = next((line for line in lines if line.strip()), "")
    if not first or first[0].isspace():
        return text
    imports: list[str] = []
    for i, line in enumerate(lines):
        if _IMPORT.match(line):
            imports.append("    " + line.strip())
        m = _DEF.match(line)
        if m and (entry_point is None or m.group(1) == entry_point):
            header_end = next((j for j in range(i, len(lines)) if lines[j].split("#", 1)[0].rstrip().endswith(":")),
                              None)
            if header_end is None:
                return ""
            return "\n".join(imports + lines[header_end + 1:])
    return text


def _indented_body(text: str) -> str:
    """Keep lines up to the first non-blank line that starts at column 0; drop trailing blank lines."""
    body: list[str] = []
    for line in text.split("\n"):
        if line.strip() and not line[0].isspace():
            break
        body.append(line)
    while body and not body[-1].strip():
        body.pop()
    return "\n".join(body) + "\n" if body else ""
