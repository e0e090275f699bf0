"""Differential tests for the held-out benchmarks: more inputs per problem, expected outputs from its reference.

MBPP's three asserts (and some of HumanEval's) are weak: ``if x == y: return True`` passes "is the triangle
isosceles". As EvalPlus builds its "plus" tests, but offline and without a model, each problem gets new inputs
by type-aware mutation of the literal inputs of its own asserts, and the expected output of each comes from its
reference solution, run in the judge's sandbox. ``data build`` stores the result as test code in the record's
``meta["diff_tests"]`` (the same form as ``tests``: it runs after ``prompt + completion``); the judge runs it on
every sample that passes the benchmark's own tests (``eval.scoring``).

Inputs: every call of the entry point (or of ``candidate``, HumanEval's name for it) inside an ``assert`` whose
positional arguments are all literals. Mutations keep each argument's type: ints +-1, *2, 0, negation; floats
halved, doubled, scaled by 1.1, negated, +1; strings with a character dropped, inserted (from the characters
the argument's strings use), swapped or re-cased; lists, sets and dicts with an element dropped, duplicated,
shuffled or mutated recursively; bools flipped; any number or string may also be swapped for another value of
its type from the problem's asserts (so ``check_isosceles(6, 8, 12)`` can become ``(6, 8, 6)``). To stay
inside what the problem promises, a mutated argument must look like the originals at its position: no
negative number, zero, or empty string or container unless one appears there; magnitudes and lengths at most
twice the largest there (plus one); a tuple changes length only if tuples of several lengths appear at its
depth there; rows stay of one length where every original's are (a matrix). Relations between arguments that
hold in every original are kept: an int minus a sequence's length, or two sequences' lengths, that differ by
the same amount in all (``f(arr, n)`` with ``n == len(arr)``).
At most ``max_inputs`` new inputs per problem, chosen with a random generator seeded by the seed and the
problem id: the same records and seed give the same tests.

An input is dropped when the reference raises, exceeds ``LINE_EVENTS_PER_INPUT`` traced Python events (a
deterministic stand-in for "too slow", so builds stay byte-identical) or times out, or when its output is not a
literal (``ascii`` then ``ast.literal_eval`` gives back a value of the same types) or has a text longer than
``OUTPUT_CHARS``. The outputs come back through the judge's verdict detail (300 characters per program), as
the message of an exception, compressed (zlib, base64). Inputs are kept in the order they were made while the
reference's events stay within ``LINE_EVENTS_PER_PROBLEM`` in all (so a correct sample runs them well within
the judge's time limit).

Stability: the reference is then judged against its own differential tests, as a sample would be, in fresh
worker processes (another hash seed, another state of ``random``) under the judge's default time limit. A
problem whose reference fails them (an output that differs, floats beyond the tolerance, or too slow) gets no
differential tests and is listed as unstable. Outputs compare as ``==`` does, but floats within rel 1e-6 /
abs 1e-9, recursively in lists, tuples and dicts (``SAME_SOURCE``, the code of the tests).
"""

from __future__ import annotations

import ast
import base64
import binascii
import math
import random
import zlib
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Any

from codenas.data.proof import PROOF_MEMORY_MB
from codenas.eval.execution import ExecResult, check_isolation, iter_programs
from codenas.eval.scoring import DIFF_TESTS
from codenas.progress import progress
from codenas.records import Record, program
from codenas.settings import JudgeSettings

MAX_INPUTS = 30
CANDIDATE_FACTOR = 1.25  # inputs made per input wanted: some are dropped (the reference raises, ...)
LINE_EVENTS_PER_INPUT = 100_000
LINE_EVENTS_PER_PROBLEM = 500_000
OUTPUT_CHARS = 400  # longest output text kept (with its event count)
PAYLOAD_CHARS = 280  # what one program reports at most: the judge's 300 characters of detail, less the name of
# the exception that carries it
RUN_TIMEOUT_S = 20.0  # CPU seconds of one reference program (it traces every Python event it runs)
_OUT = "_CodenasOut"
_REASONS = {"E": "raised", "S": "too_slow", "N": "not_literal", "L": "too_long", "T": "timeout"}

SAME_SOURCE = '''\
def _codenas_same(got, want):
    """``got == want``, but numbers within rel 1e-6 / abs 1e-9 when either is a float, recursively in lists,
    tuples and dicts."""
    import math
    if isinstance(want, float) or isinstance(got, float):
        if isinstance(got, (int, float)) and isinstance(want, (int, float)):
            return got == want or math.isclose(got, want, rel_tol=1e-06, abs_tol=1e-09)
        return got == want
    if isinstance(want, (list, tuple)):
        return (isinstance(got, (list, tuple)) and isinstance(got, list) == isinstance(want, list)
                and len(got) == len(want) and all(_codenas_same(g, w) for g, w in zip(got, want)))
    if isinstance(want, dict):
        return (isinstance(got, dict) and got.keys() == want.keys()
                and all(_codenas_same(got[k], want[k]) for k in want))
    return got == want
'''
HEADER = ("# Differential tests (codenas data build): inputs mutated from this problem's asserts, expected outputs\n"
          "# from its reference solution; floats compare within rel 1e-6 / abs 1e-9.\n")

_RUNNER = '''
class _CodenasOut(BaseException):
    pass


class _CodenasSlow(BaseException):
    pass


def _codenas_exact(a, b):
    if type(a) is not type(b):
        return False
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_codenas_exact(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return list(a) == list(b) and all(_codenas_exact(a[k], b[k]) for k in a)
    return a == b


def _codenas_pack(items):
    import binascii
    import zlib
    return binascii.b2a_base64(zlib.compress(ascii(items).encode(), 9), newline=False).decode()


def _codenas_outputs(function, inputs):
    import sys
    items = []
    for args in inputs:
        count = [0]

        def tracer(frame, event, arg):
            count[0] += 1
            if count[0] > __LIMIT__:
                raise _CodenasSlow
            return tracer

        try:
            sys.settrace(tracer)
            try:
                value = function(*args)
            finally:
                sys.settrace(None)
            if isinstance(value, dict) and type(value) is not dict:
                value = dict(value)  # a Counter, defaultdict or OrderedDict equals the dict of its items
        except BaseException:
            item = "S" if count[0] > __LIMIT__ else "E"
        else:
            item = "S"
            if count[0] <= __LIMIT__:
                try:
                    text = ascii(value)
                    # the text must give back the value, types and all (``ast.literal_eval`` in the caller then
                    # checks that it is a literal: importing ``ast`` here would cost each program milliseconds)
                    again = eval(text, {"__builtins__": {}, "set": set})
                    item = "%d %s" % (count[0], text) if _codenas_exact(again, value) else "N"
                except BaseException:
                    item = "N"
                if len(ascii(item)) > __ITEM__:
                    item = "L"
        if len(_codenas_pack(items + [item])) <= __PAYLOAD__:
            items.append(item)
        elif items:
            break
        else:
            items.append("L")
    raise _CodenasOut(_codenas_pack(items))
'''


@dataclass
class DiffResult:
    """What ``add_diff_tests`` made: the records (those with tests carry ``meta["diff_tests"]``) and counts."""

    records: list[Record]
    inputs: dict[str, int] = field(default_factory=dict)  # id -> differential inputs kept
    no_literal_inputs: list[str] = field(default_factory=list)  # asserts call the function with no literal input
    none_kept: list[str] = field(default_factory=list)  # every new input was dropped (or none could be made)
    unstable: list[str] = field(default_factory=list)  # the reference failed its own tests in a fresh process
    dropped_inputs: dict[str, int] = field(default_factory=dict)  # reason -> inputs dropped (see _REASONS)

    def counts(self, ids: list[str]) -> dict[str, Any]:
        """The manifest's entry for the problems ``ids`` (a benchmark file)."""
        mine = [i for i in ids if i in self.inputs]
        total = sum(self.inputs[i] for i in mine)
        return {"problems": len(ids), "with_diff_tests": len(mine), "inputs": total,
                "mean_inputs": round(total / len(mine), 2) if mine else 0.0,
                "no_literal_inputs": sorted(i for i in ids if i in self.no_literal_inputs),
                "none_kept": sorted(i for i in ids if i in self.none_kept),
                "unstable": sorted(i for i in ids if i in self.unstable)}


# --- comparing and writing values -------------------------------------------------------------------------------------


def _same_function():
    scope: dict[str, Any] = {}
    exec(SAME_SOURCE, scope)  # the tests' own comparison, for callers that compare outputs as the tests do
    return scope["_codenas_same"]


same = _same_function()


def literal(value: Any, *, sort_dicts: bool = False) -> str:
    """Python source for ``value`` (ASCII, set elements sorted, with ``sort_dicts`` dict items too): the same
    value gives the same text in every process, whatever its hash seed."""
    def text(v: Any) -> str:
        return literal(v, sort_dicts=sort_dicts)

    if isinstance(value, list):
        return "[" + ", ".join(text(v) for v in value) + "]"
    if isinstance(value, tuple):
        inner = ", ".join(text(v) for v in value)
        return f"({inner},)" if len(value) == 1 else f"({inner})"
    if isinstance(value, dict):
        items = [f"{text(k)}: {text(v)}" for k, v in value.items()]
        return "{" + ", ".join(sorted(items) if sort_dicts else items) + "}"
    if isinstance(value, set):
        return "{" + ", ".join(sorted(text(v) for v in value)) + "}" if value else "set()"
    return ascii(value)


def _exact(a: Any, b: Any) -> bool:
    """Equal, with the same types all the way down (1 is not 1.0 nor True)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(_exact(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return list(a) == list(b) and all(_exact(a[k], b[k]) for k in a)
    return a == b


def _round_trips(value: Any) -> bool:
    try:
        return _exact(ast.literal_eval(literal(value)), value)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return False


# --- the inputs of a problem's asserts ------------------------------------------------------------------------------


def call_inputs(record: Record) -> list[tuple]:
    """The argument tuples of every call of the entry point (or ``candidate``) inside the asserts of
    ``record.tests`` whose arguments are all literals, in source order, without repeats."""
    try:
        tree = ast.parse(record.tests)
    except SyntaxError:
        return []
    names = {record.entry_point, "candidate"}
    found: dict[str, tuple] = {}
    for node in ast.walk(tree):
        if not isinstance(node, ast.Assert):
            continue
        for call in ast.walk(node.test):
            if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id in names) \
                    or call.keywords or any(isinstance(a, ast.Starred) for a in call.args):
                continue
            try:
                args = tuple(ast.literal_eval(a) for a in call.args)
            except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
                continue
            if args and _round_trips(args):
                found.setdefault(literal(args), args)
    return list(found.values())


# --- type-aware mutation ----------------------------------------------------------------------------------------------


_SKIP = object()  # "this mutation does not apply"


_SIZED = (str, list, tuple, set, dict)


@dataclass
class _Profile:
    """What the original values at one argument position look like, anywhere inside them; ``depth`` counts the
    containers around a value (0: the argument itself)."""

    negative: bool = False
    zero: bool = False
    empty: bool = False
    max_abs: float = 0.0
    max_len: int = 0
    tuple_lengths: dict[int, set[int]] = field(default_factory=dict)  # depth -> lengths of the tuples there
    # depth -> whether every list or tuple there whose elements are all sequences has them all of one length
    # (the rows of a matrix); absent where there is none
    uniform: dict[int, bool] = field(default_factory=dict)
    alphabet: list[str] = field(default_factory=list)

    def add(self, value: Any, depth: int = 0) -> None:
        if isinstance(value, bool) or value is None:
            return
        if isinstance(value, int | float):
            self.negative |= value < 0
            self.zero |= value == 0
            self.max_abs = max(self.max_abs, abs(value))
            return
        if isinstance(value, _SIZED):
            self.empty |= not value
            self.max_len = max(self.max_len, len(value))
        if isinstance(value, str):
            self.alphabet = sorted(set(self.alphabet) | set(value))
        elif isinstance(value, tuple):
            self.tuple_lengths.setdefault(depth, set()).add(len(value))
        if isinstance(value, list | tuple) and (rows := _row_lengths(value)) is not None:
            self.uniform[depth] = self.uniform.get(depth, True) and len(rows) == 1
        if isinstance(value, dict):
            for k, v in value.items():
                self.add(k, depth + 1)
                self.add(v, depth + 1)
        elif isinstance(value, list | tuple | set):
            for v in _ordered(value):
                self.add(v, depth + 1)

    def fits(self, value: Any, depth: int = 0) -> bool:
        """Whether ``value`` stays inside what the originals at this position show (see the module doc)."""
        if isinstance(value, bool) or value is None:
            return True
        if isinstance(value, float) and not math.isfinite(value):
            return False
        if isinstance(value, int | float):
            return ((value >= 0 or self.negative) and (value != 0 or self.zero)
                    and abs(value) <= 2 * self.max_abs + 1)
        if isinstance(value, _SIZED):
            if (not value and not self.empty) or len(value) > 2 * self.max_len + 1:
                return False
        if isinstance(value, list | tuple) and self.uniform.get(depth):
            rows = _row_lengths(value)
            if rows is not None and len(rows) > 1:
                return False
        if isinstance(value, dict):
            return all(self.fits(k, depth + 1) and self.fits(v, depth + 1) for k, v in value.items())
        if isinstance(value, list | tuple | set):
            return all(self.fits(v, depth + 1) for v in value)
        return True

    def resizable(self, seq: list | tuple, depth: int) -> bool:
        """Lists may change length; a tuple only where the originals hold tuples of several lengths at its depth."""
        return isinstance(seq, list) or len(self.tuple_lengths.get(depth, ())) > 1


def _row_lengths(seq: list | tuple) -> set[int] | None:
    """The lengths of the elements of ``seq`` when they are all lists, tuples or strings; else None."""
    if not seq or not all(isinstance(v, list | tuple | str) for v in seq):
        return None
    return {len(v) for v in seq}


def _size(value: Any) -> int | None:
    """An int itself, a sequence's (or set's, dict's) length; None for anything else."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return len(value) if isinstance(value, _SIZED) else None


def _relations(originals: list[tuple]) -> list[tuple[int, int, int]]:
    """``(i, j, d)``: in every original, ``size(args[i]) - len(args[j]) == d``, where the size of an int is the
    int itself and of a sequence its length (``f(arr, n)`` with ``n == len(arr)``; two lists of one length).
    Mutants keep these."""
    found = []
    width = max(len(args) for args in originals)
    for i in range(width):
        for j in range(width):
            if i == j:
                continue
            gaps = {size - len(args[j]) if len(args) > max(i, j) and (size := _size(args[i])) is not None
                    and isinstance(args[j], _SIZED) else None for args in originals}
            if len(gaps) == 1 and (gap := gaps.pop()) is not None:
                found.append((i, j, gap))
    return found


def _ordered(values) -> list:
    """A set's elements in a fixed order (their literal text); a list's or tuple's as they are."""
    return sorted(values, key=literal) if isinstance(values, set) else list(values)


def _ingredients(inputs: list[tuple]) -> dict[type, list]:
    """Every int, float and str anywhere in the inputs, by type, in a fixed order."""
    found: dict[type, dict[str, Any]] = {int: {}, float: {}, str: {}}

    def walk(value: Any) -> None:
        if type(value) in found:
            found[type(value)].setdefault(literal(value), value)
        elif isinstance(value, dict):
            for k, v in value.items():
                walk(k)
                walk(v)
        elif isinstance(value, list | tuple | set):
            for v in _ordered(value):
                walk(v)

    for args in inputs:
        for arg in args:
            walk(arg)
    return {kind: [values[k] for k in sorted(values)] for kind, values in found.items()}


class _Mutator:
    def __init__(self, originals: list[tuple], rng: random.Random):
        self.rng = rng
        self.ingredients = _ingredients(originals)
        self.profiles = [_Profile() for _ in range(max(len(a) for a in originals))]
        for args in originals:
            for i, arg in enumerate(args):
                self.profiles[i].add(arg)
        self.relations = _relations(originals)

    def fits(self, args: tuple) -> bool:
        """Whether a mutant keeps every argument's profile and the relations between arguments."""
        if not all(self.profiles[i].fits(a) for i, a in enumerate(args)):
            return False
        return all(len(args) <= max(i, j) or _gap(args[i], args[j]) == gap for i, j, gap in self.relations)

    def value(self, v: Any, profile: _Profile, depth: int = 0) -> Any:
        """A mutant of ``v`` of the same type, or ``_SKIP``."""
        rng = self.rng
        if isinstance(v, bool):
            return not v
        if isinstance(v, int | float):
            kind = type(v)
            if kind is int:
                options = [v + 1, v - 1, v * 2, 0, -v]
            else:
                options = [v * 0.5, v * 2, round(v * 1.1, 6), -v, v + 1.0]
            options += self.ingredients[kind]
            return kind(rng.choice(options))
        if isinstance(v, str):
            return self._string(v, profile)
        if isinstance(v, list | tuple):
            return self._sequence(v, profile, depth)
        if isinstance(v, set):
            return self._set(v, profile, depth)
        if isinstance(v, dict):
            return self._dict(v, profile, depth)
        return _SKIP

    def _string(self, s: str, profile: _Profile) -> Any:
        rng, op = self.rng, self.rng.randrange(5)
        if op == 0 and s:
            i = rng.randrange(len(s))
            return s[:i] + s[i + 1:]
        if op == 1:
            i = rng.randrange(len(s) + 1)
            return s[:i] + rng.choice(profile.alphabet or ["a"]) + s[i:]
        if op == 2 and len(s) >= 2:
            i = rng.randrange(len(s) - 1)
            return s[:i] + s[i + 1] + s[i] + s[i + 2:]
        if op == 3 and any(c.isalpha() for c in s):
            letters = [i for i, c in enumerate(s) if c.isalpha()]
            if rng.random() < 0.5:
                return rng.choice([s.upper(), s.lower(), s.swapcase()])
            i = rng.choice(letters)
            return s[:i] + s[i].swapcase() + s[i + 1:]
        if op == 4 and self.ingredients[str]:
            return rng.choice(self.ingredients[str])
        return _SKIP

    def _sequence(self, seq: list | tuple, profile: _Profile, depth: int) -> Any:
        rng, items = self.rng, list(seq)
        resizable = profile.resizable(seq, depth)
        op = rng.randrange(4)
        if op == 0 and resizable and items:
            del items[rng.randrange(len(items))]
        elif op == 1 and resizable and items:
            items.insert(rng.randrange(len(items) + 1), rng.choice(items))
        elif op == 2 and len(items) >= 2 and (resizable or len({type(x) for x in items}) == 1):
            rng.shuffle(items)
        elif op == 3 and items:
            i = rng.randrange(len(items))
            new = self.value(items[i], profile, depth + 1)
            if new is _SKIP:
                return _SKIP
            items[i] = new
        else:
            return _SKIP
        return items if isinstance(seq, list) else tuple(items)

    def _set(self, s: set, profile: _Profile, depth: int) -> Any:
        rng, items = self.rng, _ordered(s)
        op = rng.randrange(3)
        if op == 0 and items:
            del items[rng.randrange(len(items))]
            return set(items)
        if items:
            new = self.value(rng.choice(items), profile, depth + 1)
            if new is _SKIP:
                return _SKIP
            if op == 2:
                items.remove(items[rng.randrange(len(items))])
            try:
                return set(items) | {new}
            except TypeError:  # an unhashable mutant
                return _SKIP
        return _SKIP

    def _dict(self, d: dict, profile: _Profile, depth: int) -> Any:
        rng, items = self.rng, list(d.items())
        if not items:
            return _SKIP
        op, i = rng.randrange(3), rng.randrange(len(items))
        if op == 0:
            del items[i]
        elif op == 1:
            new = self.value(items[i][1], profile, depth + 1)
            if new is _SKIP:
                return _SKIP
            items[i] = (items[i][0], new)
        else:
            key = self.value(items[i][0], profile, depth + 1)
            if key is _SKIP or key in d:
                return _SKIP
            try:
                items[i] = (key, items[i][1])
            except TypeError:
                return _SKIP
        try:
            return dict(items)
        except TypeError:
            return _SKIP

    def inputs(self, originals: list[tuple], n: int) -> list[tuple]:
        """Up to ``n`` new argument tuples, none equal to an original or to each other."""
        seen = {literal(a) for a in originals}
        made: list[tuple] = []
        attempts = 0
        while len(made) < n and attempts < 30 * n:
            attempts += 1
            base = list(self.rng.choice(originals) if not made or self.rng.random() < 0.6 else self.rng.choice(made))
            k = 2 if len(base) > 1 and self.rng.random() < 0.3 else 1
            for i in self.rng.sample(range(len(base)), k):
                base[i] = self.value(base[i], self.profiles[i])
            if any(a is _SKIP for a in base):
                continue
            args = tuple(base)
            key = literal(args)
            if key in seen or not self.fits(args) or not _round_trips(args):
                continue
            seen.add(key)
            made.append(args)
        return made


def _gap(a: Any, b: Any) -> int | None:
    """``size(a) - len(b)`` (see ``_relations``); None when ``a`` has no size."""
    size = _size(a)
    return None if size is None else size - len(b)


def mutated_inputs(record: Record, n: int, seed: int) -> tuple[list[tuple], list[tuple]]:
    """(the literal inputs of the record's asserts, up to ``n`` new inputs mutated from them)."""
    originals = call_inputs(record)
    if not originals or n <= 0:
        return originals, []
    rng = random.Random(f"codenas-diff:{seed}:{record.id}")
    return originals, _Mutator(originals, rng).inputs(originals, n)


# --- running the reference in the sandbox -------------------------------------------------------------------------


def _reference_program(record: Record, inputs: list[tuple]) -> str:
    runner = (_RUNNER.replace("__LIMIT__", str(LINE_EVENTS_PER_INPUT)).replace("__ITEM__", str(OUTPUT_CHARS))
              .replace("__PAYLOAD__", str(PAYLOAD_CHARS)))
    calls = ", ".join(literal(args) for args in inputs)
    return record.prompt + record.solution + "\n" + runner + f"\n_codenas_outputs({record.entry_point}, [{calls}])\n"


def _items(result: ExecResult) -> list[str] | None:
    """The items a reference program reported, or None when it did not finish and report."""
    prefix = f"{_OUT}: "
    if result.status != "error" or not result.detail.startswith(prefix):
        return None
    try:
        packed = base64.b64decode(result.detail[len(prefix):], validate=True)
        items = ast.literal_eval(zlib.decompressobj().decompress(packed, 1 << 20).decode("ascii"))
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError, zlib.error, binascii.Error):
        return None
    return items if isinstance(items, list) and all(isinstance(i, str) for i in items) else None


def run_reference(tasks: dict[str, tuple[Record, list[tuple]]], *, desc: str,
                  workers: int | None = None) -> dict[str, list[str]]:
    """Each problem's reference on each of its inputs, in the sandbox: id -> one item per input, ``"<line
    events> <output literal>"`` or a one-letter reason it cannot be used (``_REASONS``).

    A program runs a slice of a problem's inputs and reports as many outputs as fit in the judge's detail. The
    first round runs one program per problem on all its inputs; the rest of a slice goes to the next round, cut
    into slices of as many inputs as the last report held (outputs of one problem are alike in length). A
    program that does not report (a timeout, a crash) has its inputs run one by one in the next round; an input
    that fails alone is ``T``. Every round starts fresh worker processes."""
    out = {pid: [""] * len(inputs) for pid, (_, inputs) in tasks.items()}
    pending = [(pid, 0, len(inputs)) for pid, (_, inputs) in tasks.items()]
    with progress(total=sum(len(v) for v in out.values()), desc=desc, unit="input") as bar:
        while pending:
            programs = [(_reference_program(tasks[pid][0], tasks[pid][1][s:e]), RUN_TIMEOUT_S)
                        for pid, s, e in pending]
            results: dict[int, ExecResult] = {}
            for j, result in iter_programs(programs, timeout=RUN_TIMEOUT_S, memory_mb=PROOF_MEMORY_MB,
                                           workers=workers, isolation_checked=True):
                results[j] = result
            following = []
            for j, (pid, s, e) in enumerate(pending):
                items = _items(results[j])
                if items is None:
                    if e - s > 1:
                        following += [(pid, i, i + 1) for i in range(s, e)]
                    else:
                        out[pid][s] = "T"
                        bar.update()
                    continue
                items = items[: e - s] or ["L"]  # a report always moves on by at least one input
                out[pid][s:s + len(items)] = items
                bar.update(len(items))
                step = len(items)
                following += [(pid, start, min(start + step, e)) for start in range(s + step, e, step)]
            pending = following
    return out


def _parse(item: str) -> tuple[int, Any] | None:
    """(line events, output value) of a usable item, else None."""
    events, _, text = item.partition(" ")
    if not events.isdigit():
        return None
    try:
        return int(events), ast.literal_eval(text)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return None


def _stable(tasks: dict[str, tuple[Record, list[tuple]]], codes: dict[str, str],
            workers: int | None) -> set[str]:
    """The problems whose reference passes its differential tests when judged as a sample is, in fresh workers
    (they were made in others: another hash seed, another state of ``random``)."""
    ids = list(codes)
    programs = [program(tasks[pid][0].prompt, tasks[pid][0].solution, codes[pid]) for pid in ids]
    passed = set()
    with progress(total=len(ids), desc="differential tests: stability", unit="problem") as bar:
        for j, result in iter_programs(programs, timeout=JudgeSettings().timeout, memory_mb=PROOF_MEMORY_MB,
                                       workers=workers, isolation_checked=True):
            if result.passed:
                passed.add(ids[j])
            bar.update()
    return passed


def diff_test_code(entry_point: str, cases: list[tuple[tuple, Any]]) -> str:
    """The differential tests: the comparison function, then one assert per (input, expected output)."""
    lines = [HEADER + SAME_SOURCE]
    for args, expected in cases:
        call = f"{entry_point}({', '.join(literal(a) for a in args)})"
        message = call if len(call) <= 100 else call[:99] + "..."
        # an expected dict's order does not count (``==``), so its items are sorted for byte-identical builds
        lines.append(f"assert _codenas_same({call}, {literal(expected, sort_dicts=True)}), {message!r}")
    return "\n".join(lines) + "\n"


def add_diff_tests(records: list[Record], *, max_inputs: int = MAX_INPUTS, seed: int = 1234,
                   workers: int | None = None) -> DiffResult:
    """Give each record differential tests where it can (see the module doc); returns the records, in order,
    with ``meta["diff_tests"]`` set on those that got some, and what happened to the others."""
    result = DiffResult(records=list(records))
    if max_inputs <= 0 or not records:
        return result
    tasks: dict[str, tuple[Record, list[tuple]]] = {}
    for record in records:
        originals, new = mutated_inputs(record, math.ceil(CANDIDATE_FACTOR * max_inputs), seed)
        if not originals:
            result.no_literal_inputs.append(record.id)
        elif not new:
            result.none_kept.append(record.id)
        else:
            tasks[record.id] = (record, new)
    if not tasks:
        return result
    check_isolation()
    first = run_reference(tasks, desc="differential tests: reference outputs", workers=workers)
    chosen: dict[str, list[tuple[tuple, Any]]] = {}
    dropped: Counter = Counter()
    for pid, items in first.items():
        kept: list[tuple[tuple, Any]] = []
        events = 0
        for args, item in zip(tasks[pid][1], items, strict=True):
            parsed = _parse(item)
            if parsed is None:
                dropped[_REASONS.get(item, "not_literal")] += 1
            elif len(kept) < max_inputs and events + parsed[0] <= LINE_EVENTS_PER_PROBLEM:
                kept.append((args, parsed[1]))
                events += parsed[0]
        if kept:
            chosen[pid] = kept
        else:
            result.none_kept.append(pid)
    result.dropped_inputs = {reason: dropped[reason] for reason in _REASONS.values()}
    codes = {pid: diff_test_code(tasks[pid][0].entry_point, kept) for pid, kept in chosen.items()}
    stable = _stable(tasks, codes, workers)
    by_id = {}
    for pid, kept in chosen.items():
        if pid not in stable:
            result.unstable.append(pid)
            continue
        record = tasks[pid][0]
        by_id[pid] = replace(record, meta={**record.meta, DIFF_TESTS: codes[pid]})
        result.inputs[pid] = len(kept)
    result.records = [by_id.get(r.id, r) for r in records]
    for names in (result.no_literal_inputs, result.none_kept, result.unstable):
        names.sort()
    return result
