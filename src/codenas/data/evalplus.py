"""HumanEval+ and MBPP+ (EvalPlus's extended test sets): their release files and records judged as EvalPlus does.

The release files (``HumanEvalPlus.jsonl.gz`` v0.1.10, ``MbppPlus.jsonl.gz`` v0.2.0 from EvalPlus's GitHub
releases, one JSON object per problem: ``task_id``, ``prompt``, ``entry_point``, ``canonical_solution``,
``contract``, ``base_input``, ``plus_input``, ``atol``) are not in any package: ``download_evalplus`` fetches
them into the cache (sha256 checked), or the user points ``$CODENAS_HUMANEVAL_PLUS`` / ``$CODENAS_MBPP_PLUS``
at a copy (``.jsonl`` or ``.jsonl.gz``).

Each problem becomes a record whose tests are a self-contained check program, run by the judge after
``prompt + completion`` like any other tests. As in EvalPlus: the expected output of every input is the
reference solution's (run with the problem's contract, so an input outside it is a broken file, not a verdict),
outputs are compared exactly or, for floats, with the problem's ``atol`` (``1e-6`` when it is 0 and the
expected output is a float, ``rtol`` 1e-7 as ``numpy.allclose``), EvalPlus's special oracles apply, and each
input may take max(1 s, 4 x the reference's time) - measured here in CPU seconds, in the same process, so the
limit does not depend on the machine's speed. The record's ``tests`` run the plus inputs and
``meta["base_tests"]`` the base inputs; a sample is correct on the plus set when it passes both, as EvalPlus
counts it. MBPP+ prompts are converted to codenas's MBPP prompt form (signature and docstring, completion =
body) with the same converter as MBPP.
"""

from __future__ import annotations

import base64
import gzip
import json
import os
import pickle
from pathlib import Path

from codenas import paths
from codenas.benchmarks import BENCHMARKS
from codenas.data.mbpp import UnconvertibleTask, fetch_verified, mbpp_record
from codenas.io import CodenasError
from codenas.progress import say
from codenas.records import Record, canonical_id

RELEASES = {
    "humaneval+": {
        "url": "https://github.com/evalplus/humanevalplus_release/releases/download/v0.1.10/HumanEvalPlus.jsonl.gz",
        "file": "HumanEvalPlus-v0.1.10.jsonl.gz",
        "sha256": "272720b90ac375502c8ed23cd791c2a93dfb22a911641a494da74a426c09f101",
        "env": "CODENAS_HUMANEVAL_PLUS",
    },
    "mbpp+": {
        "url": "https://github.com/evalplus/mbppplus_release/releases/download/v0.2.0/MbppPlus.jsonl.gz",
        "file": "MbppPlus-v0.2.0.jsonl.gz",
        "sha256": "af43697e8791c4c149bdfd6b489d8b5412507551ac20e28a439f650b8225db63",
        "env": "CODENAS_MBPP_PLUS",
    },
}
REQUIRED = ("task_id", "prompt", "entry_point", "canonical_solution", "contract", "base_input", "plus_input",
            "atol")
MIN_TIME_LIMIT = 1.0  # EvalPlus's defaults: each input gets max(1 s, 4 x the reference's time)
TIME_LIMIT_FACTOR = 4.0
TASK_TIME_LIMIT = 60.0  # EvalPlus's cap on one check (all inputs of one set)

# MBPP+ special oracles (EvalPlus's), by entry point.
MBPP_OUTPUT_NOT_NONE = ("check_str", "text_match_three", "text_starta_endb")
MBPP_OUTPUT_SET_EQ = ("similar_elements", "find_char_long", "common_in_nested_lists", "extract_singly",
                      "larg_nnum", "intersection_array", "find_dissimilar", "Diff")

# MBPP+ stores tuples, sets and complex numbers as JSON lists and strings; these task ids get them back.
_TUPLE_ARGS = {2, 116, 132, 143, 222, 261, 273, 394, 399, 421, 424, 429, 470, 560, 579, 596, 616, 630, 726, 740,
               744, 809}
_TUPLES_IN_LIST_ARGS = {63, 64, 70, 94, 120, 237, 272, 299, 400, 409, 417, 438, 473, 614, 780}
_TUPLES_IN_FIRST_ARG = {75, 413, 444, 753}
_TUPLE_FIRST_ARG = {250, 405, 446, 617, 720, 763, 808}
_NESTED_TUPLES = {259, 401, 445}
_ALL_TUPLES = {580, 615, 791}


def _tuples(value):
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


def mbpp_plus_inputs(task_number: int, inputs: list) -> list:
    """MBPP+ inputs as the functions take them (EvalPlus's deserialisation of its JSON)."""
    n = task_number
    if n in _TUPLE_ARGS:
        return [[tuple(arg) for arg in inp] for inp in inputs]
    if n in _TUPLES_IN_LIST_ARGS:
        return [[[tuple(x) for x in arg] for arg in inp] for inp in inputs]
    if n in _TUPLES_IN_FIRST_ARG:
        return [[[tuple(x) for x in inp[0]]] + [inp[1]] for inp in inputs]
    if n in (106, 750):
        return [[inp[0]] + [tuple(inp[1])] for inp in inputs]
    if n == 115:
        return [[[set(x) if isinstance(x, list) and len(x) else {} for x in inp[0]]] for inp in inputs]
    if n == 124:
        return [(float(inp[0]), complex(inp[1])) for inp in inputs]
    if n in _TUPLE_FIRST_ARG:
        return [[tuple(inp[0])] + [inp[1]] for inp in inputs]
    if n in _NESTED_TUPLES:
        return [[tuple(tuple(x) for x in arg) for arg in inp] for inp in inputs]
    if n == 278:
        return [[tuple(tuple(x) if isinstance(x, list) else x for x in inp[0])] for inp in inputs]
    if n == 307:
        return [[tuple(inp[0])] + [inp[1], inp[2]] for inp in inputs]
    if n == 722:
        return [[{k: tuple(v) for k, v in inp[0].items()}] + inp[1:] for inp in inputs]
    if n == 252:
        return [[complex(inp[0])] for inp in inputs]
    if n in _ALL_TUPLES:
        return [_tuples(inp) for inp in inputs]
    return inputs


# The check program, run in the sandbox after prompt + completion. It is a fixed text: the problem's data is
# passed in as literals by the call that follows it.
CHECK = '''
def _evalplus_check(candidate, dataset, entry_point, reference_code, inputs_b64, atol, label):
    import base64, copy, math, pickle, time

    def is_floats(x):
        if isinstance(x, float):
            return True
        if isinstance(x, (list, tuple)) and x:
            return all(isinstance(i, float) for i in x)
        return False

    def allclose(out, exp):  # numpy.allclose(out, exp, rtol=1e-07, atol=atol) for numbers and sequences of them
        if isinstance(out, (list, tuple)) or isinstance(exp, (list, tuple)):
            return (isinstance(out, (list, tuple)) and isinstance(exp, (list, tuple)) and len(out) == len(exp)
                    and all(allclose(o, e) for o, e in zip(out, exp)))
        out, exp = float(out), float(exp)
        if math.isinf(out) or math.isinf(exp):
            return out == exp
        return abs(out - exp) <= atol + 1e-07 * abs(exp)

    def poly(xs, x):
        return sum(coeff * math.pow(x, i) for i, coeff in enumerate(xs))

    def surface_area(base_edge, height):
        slant_height = math.sqrt((base_edge / 2) ** 2 + height ** 2)
        return round(base_edge ** 2 + 4 * (base_edge * slant_height) / 2)

    def digit_distance(num1, num2):
        a, b = str(num1), str(num2)
        width = max(len(a), len(b))
        return sum(abs(int(x) - int(y)) for x, y in zip(a.zfill(width), b.zfill(width)))

    inputs = pickle.loads(base64.b64decode(inputs_b64))
    namespace = {}
    exec(reference_code, namespace)
    reference = namespace[entry_point]
    for i, inp in enumerate(inputs):
        start = time.process_time()
        try:
            exp = reference(*copy.deepcopy(inp))
        except AssertionError:
            raise RuntimeError(f"{label} input {i} is outside the problem's contract (a broken problem file)")
        limit = max(MIN_TIME_LIMIT, TIME_LIMIT_FACTOR * (time.process_time() - start))
        if dataset == "mbpp" and entry_point in MBPP_OUTPUT_NOT_NONE:
            exp = exp is not None
        start = time.process_time()
        out = candidate(*inp)
        if time.process_time() - start > limit:
            raise AssertionError(f"{label} input {i} took over its time limit of {limit:.2f} CPU seconds")
        exact_match = out == exp
        if dataset == "mbpp":
            if entry_point == "are_equivalent":
                exact_match = True
            elif entry_point == "sum_div":
                exact_match = exact_match or out == 0
            elif entry_point == "surface_Area":
                exact_match = exact_match or abs(out - surface_area(*inp)) <= atol
            elif entry_point == "digit_distance_nums":
                exact_match = exact_match or out == digit_distance(*inp)
            elif entry_point in MBPP_OUTPUT_SET_EQ:
                exact_match = set(out) == set(exp)
            elif entry_point in MBPP_OUTPUT_NOT_NONE:
                exact_match = out == exp if isinstance(out, bool) else exp == (out is not None)
        if dataset == "humaneval" and entry_point == "find_zero":
            assert abs(poly(*inp, out)) <= atol, f"{label} input {i}: not a zero of the polynomial"
            continue
        if atol == 0 and is_floats(exp):
            atol = 1e-6
        if not exact_match and atol != 0:
            assert type(out) == type(exp), f"{label} input {i}: wrong output type"
            if isinstance(exp, (list, tuple)):
                assert len(out) == len(exp), f"{label} input {i}: wrong output length"
            assert allclose(out, exp), f"{label} input {i}: wrong output"
        else:
            assert exact_match, f"{label} input {i}: wrong output"
'''


def check_program(dataset: str, entry_point: str, reference_code: str, inputs: list, atol: float,
                  label: str) -> str:
    """The tests text that checks ``entry_point`` on ``inputs`` against ``reference_code`` (see the module doc)."""
    data = base64.b64encode(pickle.dumps(inputs, protocol=4)).decode()
    constants = (f"MIN_TIME_LIMIT = {MIN_TIME_LIMIT!r}\nTIME_LIMIT_FACTOR = {TIME_LIMIT_FACTOR!r}\n"
                 f"MBPP_OUTPUT_NOT_NONE = {MBPP_OUTPUT_NOT_NONE!r}\nMBPP_OUTPUT_SET_EQ = {MBPP_OUTPUT_SET_EQ!r}\n")
    call = (f"_evalplus_check({entry_point}, {dataset!r}, {entry_point!r}, {reference_code!r}, {data!r}, "
            f"{atol!r}, {label!r})\n")
    return constants + CHECK + "\n" + call


def time_limit(n_inputs: int) -> float:
    """CPU seconds one check program may take: EvalPlus's min(60, sum of per-input limits) + 1, with each
    input's limit at its floor, plus as much again for running the reference alongside."""
    return min(TASK_TIME_LIMIT, MIN_TIME_LIMIT * max(n_inputs, 1)) * 2 + 1


def _with_contract(entry_point: str, code: str, contract: str, prompt_has_def: bool) -> str:
    """The reference with its input contract (EvalPlus places it right after the function's header)."""
    if not contract.strip():
        return code
    if prompt_has_def:  # HumanEval+: the prompt ends inside the function, the solution is its body
        return contract + code
    lines = code.split("\n")
    at = next((i for i, line in enumerate(lines) if line.startswith(f"def {entry_point}")), None)
    if at is None:
        return code
    return "\n".join(lines[:at + 1] + [contract] + lines[at + 1:])


def evalplus_records(name: str, rows: list[dict]) -> list[Record]:
    """Records for the rows of a HumanEval+ (``name="humaneval+"``) or MBPP+ (``"mbpp+"``) release file."""
    dataset = BENCHMARKS[name].prompt_style  # HumanEval's prompts as they are, MBPP's converted
    records, unconvertible = [], 0
    for row in rows:
        task_id, entry = row["task_id"], row["entry_point"]
        if dataset == "humaneval":
            prompt, solution = row["prompt"], row["canonical_solution"]
            reference = row["prompt"] + _with_contract(entry, row["canonical_solution"], row["contract"], True)
            base, plus = row["base_input"], row["plus_input"]
        else:
            number = int(str(task_id).rsplit("/", 1)[-1])
            text, asserts = _mbpp_prompt_parts(row["prompt"])
            try:
                converted = mbpp_record({"task_id": number, "text": text, "code": row["canonical_solution"],
                                         "test_list": asserts or [f"assert {entry}()"], "test_setup_code": "",
                                         "challenge_test_list": []})
            except UnconvertibleTask:
                unconvertible += 1
                continue
            prompt, solution = converted.prompt, converted.solution
            reference = _with_contract(entry, row["canonical_solution"], row["contract"], False)
            base, plus = mbpp_plus_inputs(number, row["base_input"]), mbpp_plus_inputs(number, row["plus_input"])
        atol = row["atol"] or 0
        records.append(Record(
            id=canonical_id(task_id), source=name, prompt=prompt, solution=solution,
            tests=check_program(dataset, entry, reference, plus, atol, "plus"), entry_point=entry,
            meta={"task_id": task_id, "timeout": time_limit(len(plus)),
                  "base_tests": check_program(dataset, entry, reference, base, atol, "base"),
                  "base_timeout": time_limit(len(base))}))
    if unconvertible:
        say(f"{name}: {unconvertible} problems whose reference cannot be split into prompt and body are left out")
    return records


def _mbpp_prompt_parts(prompt: str) -> tuple[str, list[str]]:
    """MBPP+'s prompt (a docstring: the task text, then one example assertion) -> (text, assertions)."""
    inner = prompt.strip().strip('"').strip()
    lines = inner.split("\n")
    asserts = [line.strip() for line in lines if line.strip().startswith("assert ")]
    text = " ".join(line.strip() for line in lines if line.strip() and not line.strip().startswith("assert "))
    return text, asserts


def downloaded_path(name: str) -> Path:
    return paths.cache_dir() / "evalplus" / RELEASES[name]["file"]


def resolve_evalplus_path(name: str) -> Path:
    """The release file for ``name``: ``$CODENAS_HUMANEVAL_PLUS`` / ``$CODENAS_MBPP_PLUS``, else the downloaded
    copy; an error saying where to get it when there is neither."""
    release = RELEASES[name]
    given = os.environ.get(release["env"])
    if given:
        if not Path(given).is_file():
            raise CodenasError(f"{name} file given by ${release['env']} does not exist", given)
        return Path(given)
    cached = downloaded_path(name)
    if cached.is_file():
        return cached
    raise CodenasError(f"{name} needs EvalPlus's release file {release['file']}: run `codenas data download "
                       f"--evalplus` (fetches {release['url']}), or download it on a machine with network and "
                       f"point ${release['env']} at it (.jsonl or .jsonl.gz)")


def available_release(name: str) -> Path | None:
    """The release file for ``name`` when the user has one (named by its variable, or downloaded), else None;
    a variable naming a missing file is an error."""
    if os.environ.get(RELEASES[name]["env"]) or downloaded_path(name).is_file():
        return resolve_evalplus_path(name)
    return None


def release_ids(name: str) -> set[str]:
    """The record ids of the problems in the available release file for ``name`` (none without one)."""
    path = available_release(name)
    return {canonical_id(row["task_id"]) for row in read_release(path)} if path else set()


def read_release(path: Path) -> list[dict]:
    """The rows of a release file (``.jsonl`` or ``.jsonl.gz``); errors name the file and line."""
    path = Path(path)
    try:
        data = path.read_bytes()
        text = (gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data).decode("utf-8")
    except (OSError, EOFError, UnicodeDecodeError) as e:
        raise CodenasError(f"cannot read EvalPlus release file: {e}", path) from None
    rows = []
    for line_no, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as e:
            raise CodenasError(f"not JSON: {e}", path, line_no) from None
        missing = [key for key in REQUIRED if key not in row]
        if missing:
            raise CodenasError(f"problem has no {', '.join(missing)} (not an EvalPlus release file?)", path, line_no)
        rows.append(row)
    if not rows:
        raise CodenasError("no problems in file", path)
    return rows


def load_evalplus(name: str, path: Path | None = None) -> list[Record]:
    """HumanEval+ (``"humaneval+"``) or MBPP+ (``"mbpp+"``) as records, from ``path`` or where
    ``resolve_evalplus_path`` finds the file."""
    return evalplus_records(name, read_release(path or resolve_evalplus_path(name)))


def download_evalplus(out_dir: Path | None = None) -> list[Path]:
    """Fetch both release files into ``out_dir`` (default: the cache), each checked against its sha256 and
    written atomically; a file already there with the right checksum is kept. Returns their paths."""
    saved = []
    for name, release in RELEASES.items():
        out = Path(out_dir) / release["file"] if out_dir is not None else downloaded_path(name)
        saved.append(fetch_verified(release["url"], out, release["sha256"], name=name, timeout=300,
                                    hint=f"Offline: download it elsewhere and set ${release['env']} to its path"))
    return saved
