"""The fault-injection suite: every step refuses every corrupted input in one line, leaving
nothing behind.

For each case of `cases.all_cases` (step x input x corruption), the real `mlm` command runs in
this process (`mlm.cli.main`, so hundreds of cases cost seconds, not a TensorFlow start each) with
stderr captured at the file-descriptor level, so TensorFlow's C++ logging would show. A case
passes when:
- the exit status is 2 and stderr is exactly one line `mlm STEP: error: ...` naming the input
  (its path or flag), after at most the step's progress reports (`PROGRESS`), or, for a fault
  the step may do without (`Case.may_pass`), status 0;
- there is no traceback;
- nothing changed where the output goes: the output location and its folder are as before (no
  half-written output, no temporary sibling), the inputs are untouched;
- no scratch is left in the temporary directory;
- it ends within `CASE_TIMEOUT` seconds (a hang fails the case).
The read-only and disk-full cases run on real small filesystems (tmpfs). Signals are tried with
real processes in test_signals.py. Each step's cases run in one test, which lists every failed
case with its stderr; the session prints the counts (`fault suite: ...`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import signal
import tempfile
import time
from pathlib import Path

import pytest

from mlm.cli import main
from tests.faults.cases import INPUTS, SOURCES, Case, as_argv, cases_for, good_argv, groups
from tests.faults.conftest import DURATIONS, TALLY, small_filesystem

CASE_TIMEOUT = 120
# Progress reports (`mlm.monitoring.ProgressPrinter`), which may precede the error line of a
# fault found midway (a disk that fills up while shards are written).
PROGRESS = re.compile(r"^\w+: .* \| eta \d+:\d\d:\d\d$")


class Hang(BaseException):
    """A case ran past CASE_TIMEOUT (a BaseException, so no `except Exception` swallows it)."""


@dataclasses.dataclass
class Result:
    status: int | None
    stderr: str
    problems: list[str]


def snapshot(*roots: Path) -> dict[str, str]:
    """Every path under `roots` with its type and content hash."""
    state: dict[str, str] = {}
    for root in roots:
        if not root.exists():
            continue
        for path in [root, *root.rglob("*")]:
            if path.is_symlink():
                state[str(path)] = "link"
            elif path.is_dir():
                state[str(path)] = "dir"
            else:
                state[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return state


def _source(case: Case, inputs) -> str:
    kind = INPUTS[case.step].get(case.flag, "")
    return getattr(inputs, SOURCES[kind][0]) if kind in SOURCES else ""


def run_case(case: Case, inputs, work: Path, capfd) -> Result:
    work.mkdir(parents=True)
    scratch = work / "tmp"
    scratch.mkdir()
    with _mounted(case, work):
        flags = good_argv(case.step, inputs, work)
        flags.update(case.corrupt(work, _source(case, inputs)))
        output = Path(flags["--output"])
        watched = [work, Path(inputs.corpus).parent, output.parent]
        before = snapshot(*watched)
        capfd.readouterr()
        status = _run_main(as_argv(case.step, flags), scratch)
        stderr = capfd.readouterr().err
        problems = _problems(case, status, stderr, flags)
        if (status != 0 or not case.may_pass) and snapshot(*watched) != before:
            problems.append("partial output: files changed where the output goes")
        leftover = sorted(p.name for p in scratch.iterdir())
        if leftover:
            problems.append(f"scratch left behind: {leftover}")
    return Result(status, stderr, problems)


def _run_main(argv: list[str], scratch: Path) -> int | None:
    def timeout(signum, frame):
        raise Hang()

    previous_handler = signal.signal(signal.SIGALRM, timeout)
    previous_tempdir = tempfile.tempdir
    tempfile.tempdir = str(scratch)
    signal.alarm(CASE_TIMEOUT)
    try:
        return main(argv)
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else 2
    except Hang:
        return None
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous_handler)
        tempfile.tempdir = previous_tempdir


def _problems(case: Case, status: int | None, stderr: str, flags: dict[str, str]) -> list[str]:
    if status is None:
        return [f"hang: still running after {CASE_TIMEOUT} s"]
    problems = []
    if "Traceback" in stderr:
        problems.append("traceback")
    if status == 0 and case.may_pass:
        return problems
    lines = [line for line in stderr.splitlines() if line.strip() and not PROGRESS.match(line)]
    if status != 2:
        problems.append(f"exit status {status}, not 2")
    if len(lines) != 1:
        problems.append(f"{len(lines)} lines on stderr, not 1")
    elif not lines[0].startswith(f"mlm {case.step}: error: "):
        problems.append("the line is not `mlm STEP: error: ...`")
    named = case.names or flags.get(case.flag, case.flag)
    if named not in stderr and Path(named).name not in stderr:
        problems.append(f"the line does not name {named!r}")
    return problems


class _mounted:
    """The case's small filesystem, mounted at work/ro or work/full for the case."""

    def __init__(self, case: Case, work: Path) -> None:
        self.context = small_filesystem(work / case.mount, case.mount) if case.mount else None

    def __enter__(self):
        return self.context.__enter__() if self.context else None

    def __exit__(self, *exc):
        return self.context.__exit__(*exc) if self.context else None


def _category(problem: str) -> str:
    for prefix, category in (
        ("traceback", "tracebacks"),
        ("partial output", "partial outputs"),
        ("scratch", "scratch leaks"),
        ("hang", "hangs"),
    ):
        if problem.startswith(prefix):
            return category
    return "wrong exits or lines"


@pytest.mark.parametrize(("step", "group"), groups(), ids=[f"{s}{g}" for s, g in groups()])
def test_every_fault_is_one_line_and_leaves_nothing(step, group, inputs, tmp_path, capfd):
    cases = cases_for(step, group, inputs)
    failed = []
    for index, case in enumerate(cases):
        started = time.perf_counter()
        result = run_case(case, inputs, tmp_path / f"case-{index}", capfd)
        DURATIONS.append((time.perf_counter() - started, case.id))
        TALLY["cases"] += 1
        for problem in result.problems:
            TALLY[_category(problem)] += 1
        if result.problems:
            failed.append(f"{case.id}: {'; '.join(result.problems)}\n    {result.stderr[-600:]}")
    TALLY["failed cases"] += len(failed)
    assert not failed, f"{len(failed)} of {len(cases)} cases failed:\n" + "\n".join(failed)


@pytest.mark.parametrize("step", list(INPUTS))
def test_the_good_command_line_of_each_step_succeeds(step, inputs, tmp_path, capfd):
    """The cases' base: without a fault, each step succeeds, writes its output and leaves no
    scratch (so a refused case was refused for its fault)."""
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    flags = good_argv(step, inputs, tmp_path)
    status = _run_main(as_argv(step, flags), scratch)
    assert status == 0, capfd.readouterr().err
    assert any(Path(flags["--output"]).iterdir())
    assert not list(scratch.iterdir())


def test_the_readme_states_how_many_cases_the_suite_generates(inputs):
    total = sum(len(cases_for(step, group, inputs)) for step, group in groups())
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    assert f"({total} generated cases:" in readme
    assert total > 150
