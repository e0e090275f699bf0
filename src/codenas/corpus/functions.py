"""Function-level records from one source file: every function with a docstring, cut HumanEval's way (the
imports and small constants it needs, its signature and docstring = the prompt; its body = the solution), or the
name of the rule that drops it.

The rules, in the order they are tried (the first that applies is the one counted):

``test_code``          a test: named ``test*``, or in a class named ``Test*``
``no_docstring``       no docstring
``nested``             defined inside another function (it needs the enclosing function's closure)
``uses_instance``      a method (not a staticmethod) whose body uses ``self``/``cls`` or ``super()``
``method``             any other method but a staticmethod (its signature belongs to its class)
``private``            a ``_name`` (a helper; dunders too), or in a ``_Class``
``decorated``          a decorator other than ``staticmethod`` (it may change what the function does)
``async``/``generator`` ``async def``, or a body that yields (not the shape of a benchmark problem)
``stub``               a body that is only ``pass``, ``...``, a bare ``raise`` or ``return`` of nothing
``body_length``        a body outside ``min_body_lines..max_body_lines`` code lines
``docstring_length``   a docstring outside ``min_docstring_chars..max_docstring_chars``
``docstring_quality``  a docstring that is not English prose: fewer than 3 words, mostly non-ASCII letters, or a
                       placeholder (TODO, FIXME, XXX, "deprecated", "not implemented")
``layout``             a source layout that cannot be cut at the docstring (one-liners, bodies not indented by 4
                       spaces, multi-line strings in the body of an indented staticmethod)
``needs_context``      it uses a name the prompt cannot give it: a module-level function or class, a large or
                       computed constant, a relative import, a module that is not installed here, an unknown name

Two rules drop whole files (counted as files): ``test_file`` (in a ``test``/``tests``/``testing`` folder, or a
``test_*.py``, ``*_test.py`` or ``conftest.py`` file) and ``syntax_error`` (it does not parse).

The names a function needs from its module are found with ``symtable`` (every global it, or a comprehension or
lambda inside it, reads); each becomes an import line as the module has it, a small constant copied, or (in a
module with an import name: stdlib, site-packages) an import of the name from the module itself.
"""

from __future__ import annotations

import ast
import builtins
import functools
import hashlib
import importlib.util
import symtable
import warnings
from collections import Counter
from dataclasses import dataclass

from codenas.records import Record

FILE_RULES = ("test_file", "syntax_error")
FUNCTION_RULES = ("test_code", "no_docstring", "nested", "uses_instance", "method", "private", "decorated", "async",
                  "generator", "stub", "body_length", "docstring_length", "docstring_quality", "layout",
                  "needs_context")
MINED_SOURCE = "mined"
TEST_DIRS = {"test", "tests", "testing", "idle_test"}
PLACEHOLDERS = ("todo", "fixme", "xxx", "deprecated", "not implemented", "docstring", "placeholder")
_BUILTINS = {n for n in dir(builtins) if not n.startswith("__")} | {"__import__", "__build_class__", "__debug__",
                                                                   "__name__"}

DOCTEST_CHECK = '''
def _codenas_doctest():
    import doctest

    examples = {doc!r}
    test = doctest.DocTestParser().get_doctest(examples, dict(globals()), {name!r}, None, 0)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    failed, attempted = runner.run(test)
    assert attempted and not failed, f"{{failed}} of {{attempted}} doctest examples failed"


_codenas_doctest()'''
CALLABLE_CHECK = "assert callable({name}), {message!r}"


@dataclass(frozen=True)
class Limits:
    """The thresholds of the rules (``codenas.settings.MineSettings`` holds them for the CLI and the run)."""

    min_body_lines: int = 1
    max_body_lines: int = 12
    min_docstring_chars: int = 20
    max_docstring_chars: int = 1500
    max_constant_chars: int = 200
    keep_private: bool = False
    keep_generators: bool = False


def doctest_check(docstring: str, name: str) -> str:
    """Test code that runs the ``>>>`` examples of ``docstring`` against the program's globals (the function
    ``name`` among them) and raises unless at least one ran and none failed."""
    return DOCTEST_CHECK.format(doc=docstring, name=name).lstrip("\n")


def callable_check(name: str) -> str:
    """The test of a record without doctests: its entry point is defined and callable."""
    return CALLABLE_CHECK.format(name=name, message=f"{name} is not defined")


def record_id(source_file: str, qualname: str) -> str:
    return "mined_" + hashlib.sha1(f"{source_file}:{qualname}".encode("utf-8", "surrogatepass")).hexdigest()[:12]


def module_name(relative_path: str) -> str | None:
    """The import name of a ``.py`` file at ``relative_path`` under an import root (``json/decoder.py`` ->
    ``json.decoder``), or None when it has none."""
    if not relative_path.endswith(".py"):
        return None
    parts = relative_path[:-3].split("/")
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts) if parts and all(p.isidentifier() for p in parts) else None


def is_test_file(path: str) -> bool:
    parts = path.replace("\\", "/").split("/")
    name = parts[-1].split("#")[0]
    return bool(TEST_DIRS & set(parts[:-1])) or name.startswith("test_") or name.endswith("_test.py") \
        or name == "conftest.py"


@functools.cache
def is_installed(module: str) -> bool:
    """Whether the top-level package of ``module`` can be imported here (found without importing it)."""
    with warnings.catch_warnings():  # finding some packages imports a hook that warns (setuptools' distutils)
        warnings.simplefilter("ignore")
        try:
            return importlib.util.find_spec(module.split(".")[0]) is not None
        except (ImportError, ValueError):
            return False


def extract(text: str, source_file: str, limits: Limits = Limits(), module: str | None = None
            ) -> tuple[list[Record], Counter, str | None]:
    """The records of one file: (records, function drops by rule, the file's own rule or None).

    ``source_file`` names the file in ids and ``meta`` (``SOURCE/relative/path.py``); ``module`` is its import
    name when the file belongs to an importable package (stdlib, site-packages): then a name the function reads
    from its module that cannot be copied into the prompt is imported from there (``from json.decoder import
    scanstring``)."""
    if is_test_file(source_file):
        return [], Counter(), "test_file"
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return [], Counter(), "syntax_error"
    found = list(_functions(tree))
    table = None
    if any(ast.get_docstring(node, clean=False) is not None for node, _ in found):
        try:
            table = symtable.symtable(text, source_file, "exec")
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            return [], Counter(), "syntax_error"
    module_ = _Module(tree, text, limits, module, source_file.endswith("__init__.py"))
    tables = _function_tables(table) if table is not None else {}
    records: list[Record] = []
    drops: Counter = Counter()
    seen: Counter = Counter()
    for node, owners in found:
        qualname = ".".join([o.name for o in owners] + [node.name])
        seen[qualname] += 1
        if seen[qualname] > 1:
            qualname += f"#{seen[qualname]}"
        result = _cut(node, owners, module_, tables.get((node.name, node.lineno)), limits)
        if isinstance(result, str):
            drops[result] += 1
            continue
        prompt, solution, docstring, body_lines = result
        has_doctest = ">>>" in docstring
        records.append(Record(
            id=record_id(source_file, qualname), source=MINED_SOURCE, prompt=prompt, solution=solution,
            tests=doctest_check(docstring, node.name) if has_doctest else callable_check(node.name),
            entry_point=node.name,
            meta={"source_file": source_file, "qualname": qualname, "lines": [node.lineno, node.end_lineno],
                  "body_lines": body_lines, "has_doctest": has_doctest}))
    return records, drops, None


def _functions(tree: ast.Module):
    """(function node, enclosing class/function nodes) for every function, in source order."""
    stack: list[tuple[ast.stmt, list[ast.stmt]]] = [(child, []) for child in reversed(tree.body)]
    while stack:
        node, owners = stack.pop()
        inner = owners
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            yield node, owners
            inner = owners + [node]
        elif isinstance(node, ast.ClassDef):
            inner = owners + [node]
        children = [c for c in ast.iter_child_nodes(node) if isinstance(c, ast.stmt)]
        stack.extend((c, inner) for c in reversed(children))


def _function_tables(table: symtable.SymbolTable) -> dict[tuple[str, int], symtable.Function]:
    found: dict[tuple[str, int], symtable.Function] = {}
    stack = [table]
    while stack:
        t = stack.pop()
        if isinstance(t, symtable.Function):
            found.setdefault((t.get_name(), t.get_lineno()), t)
        stack.extend(t.get_children())
    return found


def _cut(node: ast.FunctionDef | ast.AsyncFunctionDef, owners: list[ast.AST], module: _Module,
         table: symtable.Function | None, limits: Limits) -> tuple[str, str, str, int] | str:
    """(prompt, solution, raw docstring, body code lines) of a function, or the rule that drops it."""
    classes = [o for o in owners if isinstance(o, ast.ClassDef)]
    if node.name.startswith("test") or any(c.name.startswith("Test") for c in classes):
        return "test_code"
    docstring = ast.get_docstring(node, clean=False)
    if docstring is None:
        return "no_docstring"
    if any(isinstance(o, ast.FunctionDef | ast.AsyncFunctionDef) for o in owners):
        return "nested"
    decorators = [ast.unparse(d) for d in node.decorator_list]
    in_class = bool(owners)
    if in_class and "staticmethod" not in decorators:
        return "uses_instance" if _uses_instance(node, table) else "method"
    if not limits.keep_private and (node.name.startswith("_") or any(c.name.startswith("_") for c in classes)):
        return "private"
    if any(d != "staticmethod" for d in decorators):
        return "decorated"
    if isinstance(node, ast.AsyncFunctionDef) and not limits.keep_generators:
        return "async"
    if _yields(node) and not limits.keep_generators:
        return "generator"
    body = node.body[1:]
    if not body or _is_stub(body):
        return "stub"
    code_lines = _code_lines(module.lines[body[0].lineno - 1:node.end_lineno])
    if not limits.min_body_lines <= code_lines <= limits.max_body_lines:
        return "body_length"
    cleaned = ast.get_docstring(node, clean=True) or ""
    if not limits.min_docstring_chars <= len(cleaned) <= limits.max_docstring_chars:
        return "docstring_length"
    if not is_prose(cleaned):
        return "docstring_quality"
    cut = _layout(node, module)
    if cut is None:
        return "layout"
    header = module.context(node, table)
    if header is None:
        return "needs_context"
    signature, solution = cut
    prompt = (header + "\n\n\n" if header else "") + signature
    try:
        compile(prompt + solution, "<mined>", "exec", dont_inherit=True)
    except (SyntaxError, ValueError):
        return "layout"
    return prompt, solution, docstring, code_lines


def _uses_instance(node: ast.FunctionDef | ast.AsyncFunctionDef, table: symtable.Function | None) -> bool:
    """Whether a method reads its first parameter (``self``/``cls``) or its class (``super()``, ``__class__``)."""
    params = node.args.posonlyargs + node.args.args
    first = params[0].arg if params else None
    for sub in ast.walk(node):
        if isinstance(sub, ast.Name) and (sub.id == first or sub.id in ("super", "__class__")):
            return True
    return table is not None and "__class__" in table.get_frees()


def _yields(node: ast.AST) -> bool:
    """Whether the function itself (not a function or lambda nested in it) yields."""
    stack = list(ast.iter_child_nodes(node))
    while stack:
        sub = stack.pop()
        if isinstance(sub, ast.Yield | ast.YieldFrom):
            return True
        if not isinstance(sub, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda | ast.ClassDef):
            stack.extend(ast.iter_child_nodes(sub))
    return False


def _is_stub(body: list[ast.stmt]) -> bool:
    if len(body) != 1:
        return False
    stmt = body[0]
    if isinstance(stmt, ast.Pass) or (isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant)):
        return True
    if isinstance(stmt, ast.Raise):
        return True
    return isinstance(stmt, ast.Return) and (stmt.value is None or isinstance(stmt.value, ast.Constant)
                                             and stmt.value.value is None)


def _code_lines(lines: list[str]) -> int:
    return sum(1 for line in lines if line.strip() and not line.strip().startswith("#"))


def is_prose(docstring: str) -> bool:
    """An English sentence or more: at least 3 words of letters, mostly ASCII letters, no placeholder first line."""
    first = docstring.strip().splitlines()[0].strip().lower() if docstring.strip() else ""
    if first.startswith(PLACEHOLDERS) or "deprecated" in first or "not implemented" in first:
        return False
    words = [w for w in docstring.split() if w.isalpha()]
    if len(words) < 3:
        return False
    letters = [c for c in docstring if c.isalpha()]
    return sum(c.isascii() for c in letters) >= 0.9 * len(letters)


def _layout(node: ast.FunctionDef | ast.AsyncFunctionDef, module: _Module) -> tuple[str, str] | None:
    """(signature + docstring, body) of the function as source text, dedented to column 0; None when the source
    cannot be cut there (see ``layout`` in the module docstring)."""
    lines = module.lines
    doc, first = node.body[0], node.body[1]
    indent = node.col_offset
    if doc.end_lineno is None or node.end_lineno is None:  # set on every node ast.parse makes
        return None
    if first.lineno <= doc.end_lineno or doc.lineno <= node.lineno or first.col_offset - indent != 4 \
            or doc.col_offset - indent != 4:
        return None
    if lines[first.lineno - 1][:first.col_offset].strip() or lines[doc.lineno - 1][:doc.col_offset].strip():
        return None
    span = lines[node.lineno - 1:node.end_lineno]
    if any(line.strip() and not line[:indent].isspace() and indent for line in span):
        return None
    if indent and any(isinstance(sub, ast.Constant) and isinstance(sub.value, str) and sub.lineno != sub.end_lineno
                      for stmt in node.body[1:] for sub in ast.walk(stmt)):
        return None
    cut = doc.end_lineno - node.lineno + 1
    dedented = [line[indent:] if line.strip() else "\n" for line in span]
    dedented = [line if line.endswith("\n") else line + "\n" for line in dedented]
    signature = "".join(dedented[:cut])
    body = dedented[cut:]
    while body and not body[0].strip():
        body.pop(0)
    while body and not body[-1].strip():
        body.pop()
    return signature, "".join(body)


class _Module:
    """A module's top-level bindings, to give a function the imports and constants it reads."""

    def __init__(self, tree: ast.Module, text: str, limits: Limits, name: str | None, package: bool):
        self.name = name if name and is_installed(name) else None
        self.package = package
        self.lines = text.splitlines(keepends=True)
        self.text = text
        self.limits = limits
        self.future_annotations = False
        self.bindings: dict[str, list[tuple[str, ast.stmt, str]]] = {}  # name -> [(kind, statement, line)]
        for stmt in self._top_level(tree.body):
            self._bind(stmt)

    @staticmethod
    def _top_level(body: list[ast.stmt]):
        for stmt in body:
            if isinstance(stmt, ast.If):
                yield from _Module._top_level(stmt.body)
                yield from _Module._top_level(stmt.orelse)
            elif isinstance(stmt, ast.Try):
                yield from _Module._top_level(stmt.body)
                for handler in stmt.handlers:
                    yield from _Module._top_level(handler.body)
                yield from _Module._top_level(stmt.orelse)
                yield from _Module._top_level(stmt.finalbody)
            else:
                yield stmt

    def _add(self, name: str, kind: str, stmt: ast.stmt, line: str = "") -> None:
        self.bindings.setdefault(name, []).append((kind, stmt, line))

    def _bind(self, stmt: ast.stmt) -> None:
        if isinstance(stmt, ast.ImportFrom) and stmt.module == "__future__":
            self.future_annotations |= any(a.name == "annotations" for a in stmt.names)
        elif isinstance(stmt, ast.Import):
            for a in stmt.names:
                line = f"import {a.name}" + (f" as {a.asname}" if a.asname else "")
                self._add(a.asname or a.name.split(".")[0], "import", stmt, line)
        elif isinstance(stmt, ast.ImportFrom):
            for a in stmt.names:
                if a.name == "*":
                    continue
                ok = stmt.level == 0 and stmt.module is not None
                line = f"from {_relative(stmt)} import {a.name}" + (f" as {a.asname}" if a.asname else "")
                self._add(a.asname or a.name, "import" if ok else "relative", stmt, line)
        elif isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
            self._add(stmt.targets[0].id, "constant", stmt)
        elif isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) and stmt.value is not None:
            self._add(stmt.target.id, "constant", stmt)
        elif isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            self._add(stmt.name, "definition", stmt)
        else:
            for sub in ast.walk(stmt):
                if isinstance(sub, ast.Name) and isinstance(sub.ctx, ast.Store):
                    self._add(sub.id, "other", stmt)

    def context(self, node: ast.FunctionDef | ast.AsyncFunctionDef, table: symtable.Function | None) -> str | None:
        """The import lines and constants the function needs, in module order ("" for none); None when one of
        them cannot be given."""
        if table is None or table.get_frees():
            return None
        needed: dict[str, bool] = {}  # name -> required (False: only an annotation reads it, unevaluated)
        for name in _globals_read(table):
            needed[name] = True
        for sub in _signature_nodes(node):
            for n in ast.walk(sub):
                if isinstance(n, ast.Name):
                    annotation_only = self.future_annotations and sub not in _default_nodes(node)
                    needed[n.id] = needed.get(n.id, False) or not annotation_only
        out: dict[int, list[str]] = {}
        visiting: set[str] = set()
        for name, required in needed.items():
            if name == node.name or name in _BUILTINS and name not in self.bindings:
                continue
            ok = self._resolve(name, out, visiting)
            if not ok and required:
                return None
        lines = [line for _, group in sorted(out.items()) for line in group]
        unique = list(dict.fromkeys(lines))
        if self.future_annotations:
            unique.insert(0, "from __future__ import annotations")
        imports = [line for line in unique if line.startswith(("import ", "from "))]
        constants = [line for line in unique if not line.startswith(("import ", "from "))]
        return "\n".join(imports + ([""] if imports and constants else []) + constants)

    def _resolve(self, name: str, out: dict[int, list[str]], visiting: set[str]) -> bool:
        """Add what binds ``name`` at module level to ``out`` (line number -> source lines); False if it cannot:
        an import line as the module has it, a small constant copied, else (for a module with an import name) an
        import of the name from the module itself."""
        found = self.bindings.get(name)
        if not found:
            return name in _BUILTINS
        kind, stmt, line = found[0]
        if kind == "import" and is_installed(line.split()[1]):
            out.setdefault(stmt.lineno, []).append(line)
            return True
        if kind == "relative" and self.name and isinstance(stmt, ast.ImportFrom):
            absolute = self._absolute(stmt)
            if absolute:
                out.setdefault(stmt.lineno, []).append(line.replace(f"from {_relative(stmt)} ", f"from {absolute} "))
                return True
        if kind == "constant" and isinstance(stmt, ast.Assign | ast.AnnAssign) and len(found) == 1 \
                and name not in visiting and self._constant(name, stmt, out, visiting):
            return True
        if self.name:
            out.setdefault(stmt.lineno, []).append(f"from {self.name} import {name}")
            return True
        return False

    def _constant(self, name: str, stmt: ast.Assign | ast.AnnAssign, out: dict[int, list[str]],
                  visiting: set[str]) -> bool:
        """Copy a small literal constant (and what it reads) into ``out``."""
        source = ast.get_source_segment(self.text, stmt) or ""
        value = stmt.value
        if value is None or not source or len(source) > self.limits.max_constant_chars \
                or ("\n" in source and stmt.col_offset):
            return False
        for sub in ast.walk(value):
            if isinstance(sub, ast.Lambda | ast.NamedExpr | ast.Await | ast.Yield):
                return False
            if isinstance(sub, ast.Call) and not (isinstance(sub.func, ast.Name) and sub.func.id in _LITERAL_CALLS):
                return False
        visiting.add(name)  # the constants being resolved: a cycle cannot be copied
        try:
            if not all(self._resolve(sub.id, out, visiting) for sub in ast.walk(value)
                       if isinstance(sub, ast.Name) and sub.id != name):
                return False
        finally:
            visiting.discard(name)
        out.setdefault(stmt.lineno, []).append(source)
        return True

    def _absolute(self, stmt: ast.ImportFrom) -> str | None:
        """The absolute module of a relative import in this module."""
        parts = self.name.split(".") if self.name else []
        base = parts if self.package else parts[:-1]
        if stmt.level - 1 > len(base) - 1 or not base:
            return None
        base = base[:len(base) - (stmt.level - 1)]
        return ".".join(base + ([stmt.module] if stmt.module else []))


def _relative(stmt: ast.ImportFrom) -> str:
    return "." * stmt.level + (stmt.module or "")


_LITERAL_CALLS = ("frozenset", "set", "tuple", "dict", "list", "object")


def _globals_read(table: symtable.SymbolTable) -> list[str]:
    """Names read as globals by the function or any scope inside it (comprehensions, lambdas), in first-seen order."""
    names: dict[str, None] = {}
    stack = [table]
    while stack:
        t = stack.pop()
        for sym in t.get_symbols():
            if sym.is_referenced() and (sym.is_global() or sym.is_declared_global()):
                names.setdefault(sym.get_name())
        stack.extend(t.get_children())
    return list(names)


def _default_nodes(node: ast.FunctionDef | ast.AsyncFunctionDef) -> list[ast.AST]:
    return [d for d in node.args.defaults + node.args.kw_defaults if d is not None]


def _signature_nodes(node: ast.FunctionDef | ast.AsyncFunctionDef) -> list[ast.AST]:
    """What the ``def`` statement evaluates in the module: defaults, and annotations (unless postponed)."""
    args = node.args
    params = args.posonlyargs + args.args + args.kwonlyargs + [a for a in (args.vararg, args.kwarg) if a]
    annotations = [a.annotation for a in params if a.annotation is not None]
    return _default_nodes(node) + annotations + ([node.returns] if node.returns is not None else [])
