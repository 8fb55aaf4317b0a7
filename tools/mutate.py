"""``make mutate``: mutation testing of the core modules, one module at a time.

mutmut 3 copies the source it mutates into ``mutants/`` (beside its config) and knows only
``./``, ``src/`` and ``source/`` as source roots: run from the repository root it would name
the modules ``pipeline.invsync.…`` while the tests import ``invsync.…``. So this runs mutmut
from ``pipeline/``, the source root, with ``source_paths = ["invsync"]``: module names come
out as imported, the tests are reached through ``mutants/tests``, a link to ``tests/``
(mutmut selects tests by node id, relative to ``mutants/``), and no tree is copied by
hand. mutmut reads its config from the folder it runs in, so ``pipeline/setup.cfg`` holds
it while a module runs (written here, removed after). ``process_isolation = forkserver``:
mutmut's default (fork) deadlocks with polars' thread pool.

Equivalent mutants are listed in tests/mutation-equivalents.md by the change they make
(a ``diff`` block: ``@@ function`` then the removed and added lines), matched against each
surviving mutant's diff, never by its number. A survivor that matches no entry, or only an
entry under "Accepted survivors", counts against the score.

Usage: ``python tools/mutate.py [MODULE ...]`` (default: every core module): prints each
module's score, killed / (mutants - equivalent), and the diff of every survivor, and
rewrites the table in docs/development.md.
``python tools/mutate.py --diffs MODULE`` prints every mutant's diff (no tests run).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCE_ROOT = ROOT / "pipeline"
EQUIVALENTS = ROOT / "tests" / "mutation-equivalents.md"
DOC = ROOT / "docs" / "development.md"
SCORES = ROOT / ".mutate-scores.json"

# module (under pipeline/invsync/) -> its fast unit tests (and pytest options)
MODULES: dict[str, list[str]] = {
    "run/brakes": ["tests/test_brakes.py"],
    "state/journal": ["tests/test_unit_journal.py", "tests/test_per_batch_cost.py"],
    "state/snapshot": ["tests/test_unit_snapshot.py"],
    "stages/diff": ["tests/test_unit_diff.py"],
    "stages/submit": ["tests/test_submit_client.py", "tests/test_unit_submit.py"],
    # The property tests (hypothesis) reach every function: each mutant would run them.
    "stages/validate": ["tests/test_unit_validate.py", "tests/test_validate.py",
                        "-m", "not property"],
    "rules/stock": ["tests/test_validate.py", "tests/test_unit_schema.py"],
}

SETUP_CFG = """\
# Written by tools/mutate.py while mutmut runs (removed after): see its docstring.
[mutmut]
source_paths = invsync
only_mutate = invsync/{module}.py
pytest_add_cli_args_test_selection =
{tests}
pytest_add_cli_args =
    -p
    no:cacheprovider
    -q
process_isolation = forkserver
"""


# ---- the equivalents file ---------------------------------------------------------------------

@dataclass
class Entry:
    """One listed mutant change: in ``function``, these lines removed and these added."""

    module: str
    function: str
    removed: list[str]
    added: list[str]
    accepted: bool
    """Listed under "Accepted survivors": not provably equivalent, counts against."""
    why: str = ""

    def matches(self, function: str, diff: str) -> bool:
        removed, added = changed_lines(diff)
        return (self.function, self.removed, self.added) == (function, removed, added)


def _norm(line: str) -> str:
    return " ".join(line.split())


def changed_lines(diff: str) -> tuple[list[str], list[str]]:
    """The removed and added lines of a unified diff, whitespace-normalised."""
    lines = [ln for ln in diff.splitlines() if not ln.startswith(("---", "+++"))]
    return ([_norm(ln[1:]) for ln in lines if ln.startswith("-")],
            [_norm(ln[1:]) for ln in lines if ln.startswith("+")])


_BLOCK = re.compile(r"^( *)```diff\n *@@ (\S+)\n(.*?)^ *```", re.S | re.M)


def read_entries(text: str) -> list[Entry]:
    """Every ``diff`` block of the equivalents file, with its module (the ``##`` heading
    above it) and whether it is an accepted survivor (a ``###`` heading saying so)."""
    entries: list[Entry] = []
    module, accepted = "", False
    for part in re.split(r"^(#{2,3} .*)$", text, flags=re.M):
        if part.startswith("## "):
            module, accepted = part[3:].strip().strip("`"), False
            continue
        if part.startswith("### "):
            accepted = "accepted" in part.lower()
            continue
        for bullet in re.split(r"^- ", part, flags=re.M):
            why = bullet.split("```", 1)[0].strip()
            for m in _BLOCK.finditer(bullet):
                indent = len(m.group(1))
                body = "\n".join(ln[indent:] for ln in m.group(3).splitlines())
                removed, added = changed_lines(body)
                entries.append(Entry(module, m.group(2), removed, added, accepted, why))
    return entries


# ---- mutants and their diffs, computed without running anything ------------------------------

def function_of(name: str) -> str:
    """``Journal._append`` for ``invsync.state.journal.xǁJournalǁ_append__mutmut_16``."""
    from mutmut.utils.format_utils import orig_function_and_class_names_from_key

    func, cls = orig_function_and_class_names_from_key(name)
    return f"{cls}.{func}" if cls else func


def _mutmut_config() -> None:
    """Load mutmut's configuration as it would be in ``pipeline/`` (defaults, source root
    ``invsync``): its mutation code reads it."""
    import os

    from mutmut import configuration

    if configuration._config is not None:
        return
    here = os.getcwd()
    os.chdir(SOURCE_ROOT)
    try:
        configuration._guess_source_paths = lambda: ["invsync"]
        configuration.config()
    finally:
        os.chdir(here)


def mutant_diffs(module: str) -> dict[str, str]:
    """Each mutant of ``module`` (mutmut's full name) and its diff, as ``mutmut show``."""
    _mutmut_config()
    from difflib import unified_diff

    import libcst as cst
    from mutmut.mutation.diff_apply import read_mutant_function, read_original_function
    from mutmut.mutation.file_mutation import mutate_file_contents
    from mutmut.utils.format_utils import get_mutant_name

    relative = Path("invsync") / f"{module}.py"
    code = (SOURCE_ROOT / relative).read_text(encoding="utf-8")
    mutated = mutate_file_contents(str(relative), code)
    tree = cst.parse_module(mutated.code)  # once: mutmut's own helper parses it per mutant
    out = {}
    for local in mutated.mutant_names:
        name = get_mutant_name(relative, local)
        orig, mutant = (cst.Module([f]).code.strip().split("\n") for f in (
            read_original_function(tree, name), read_mutant_function(tree, name)))
        out[name] = "\n".join(unified_diff(orig, mutant, fromfile=str(relative),
                                            tofile=str(relative), lineterm=""))
    return out


# ---- running mutmut ---------------------------------------------------------------------------

@dataclass
class Score:
    module: str
    mutants: int = 0
    killed: int = 0
    equivalent: int = 0
    survivors: dict[str, str] = field(default_factory=dict)
    """Survivors that count against the score: name -> diff."""
    accepted: list[str] = field(default_factory=list)
    minutes: float = 0.0
    error: str = ""

    @property
    def score(self) -> float:
        judged = self.mutants - self.equivalent
        return 100.0 * self.killed / judged if judged else 0.0


def run(module: str) -> Score:
    """Run mutmut on one module (from ``pipeline/``); its score."""
    tests = MODULES[module]
    mutants = SOURCE_ROOT / "mutants"
    shutil.rmtree(mutants, ignore_errors=True)
    # mutmut runs the tests from mutants/ and selects them by node id, which only names a
    # test below that folder: a link to the real tests/ (not a copy) puts them there.
    mutants.mkdir()
    (mutants / "tests").symlink_to(ROOT / "tests", target_is_directory=True)
    cfg = SOURCE_ROOT / "setup.cfg"
    cfg.write_text(SETUP_CFG.format(module=module,
                                    tests="\n".join(f"    {t}" for t in tests)))
    mutmut = str(Path(sys.executable).parent / "mutmut")
    started = time.monotonic()
    log = ROOT / f".mutate-{module.replace('/', '-')}.log"
    try:
        with log.open("w") as out:
            subprocess.run([mutmut, "run"], cwd=SOURCE_ROOT, stdout=out,
                           stderr=subprocess.STDOUT, check=False)
        results = subprocess.run([mutmut, "results", "--all", "true"], cwd=SOURCE_ROOT,
                                 capture_output=True, text=True, check=False).stdout
    finally:
        cfg.unlink(missing_ok=True)
    try:
        return judge(module, results, time.monotonic() - started, log)
    finally:  # nothing is left in pipeline/: the survivors' diffs are printed instead
        shutil.rmtree(mutants, ignore_errors=True)


def judge(module: str, results: str, seconds: float, log: Path) -> Score:
    """The score of ``module`` from ``mutmut results --all true``."""
    dotted = "invsync." + module.replace("/", ".") + "."
    status = {m.group(1): m.group(2) for m in re.finditer(
        r"^\s*(\S+__mutmut_\d+): ([a-z ]+?)\s*$", results, re.M) if m.group(1).startswith(dotted)}
    score = Score(module, minutes=round(seconds / 60, 1))
    if not status:
        score.error = f"mutmut gave no results: see {log}"
        return score
    diffs = mutant_diffs(module)
    entries = [e for e in read_entries(EQUIVALENTS.read_text(encoding="utf-8"))
               if e.module == module]
    score.mutants = len([s for s in status.values() if s != "skipped"])
    timeouts = sum(s == "timeout" for s in status.values())
    if timeouts > score.mutants / 2:  # tests that never ran, not mutants they caught
        score.error = f"{timeouts} of {score.mutants} mutants timed out: see {log}"
        return score
    for name, state in status.items():
        if state in ("killed", "timeout", "caught by type check"):
            score.killed += 1
        elif state in ("survived", "no tests", "suspicious"):
            diff = diffs.get(name, "")
            match = next((e for e in entries if e.matches(function_of(name), diff)), None)
            if match is not None and not match.accepted:
                score.equivalent += 1
            else:
                score.survivors[name] = diff
                if match is not None:
                    score.accepted.append(name)
    return score


# ---- the table in docs/development.md ---------------------------------------------------------

_TABLE = re.compile(r"(<!-- mutation-scores: begin -->\n)(.*?)(<!-- mutation-scores: end -->)",
                    re.S)


def update_doc(scores: list[Score]) -> None:
    """Rewrite the rows of the modules just measured in docs/development.md's table."""
    text = DOC.read_text(encoding="utf-8")
    found = _TABLE.search(text)
    if found is None:
        return
    rows = {m.group(1): m.group(0) for m in re.finditer(r"^\| `([\w/]+)` \|.*$",
                                                         found.group(2), re.M)}
    for s in scores:
        if not s.error:
            rows[s.module] = (f"| `{s.module}` | {s.mutants} | {s.killed} | {s.equivalent} | "
                              f"{len(s.survivors)} | {s.score:.1f}% |")
    header = ("| module | mutants | killed | equivalent (listed) | survivors | score |\n"
              "|---|---:|---:|---:|---:|---:|\n")
    body = "".join(rows.get(m, f"| `{m}` | | | | | not measured yet |") + "\n" for m in MODULES)
    DOC.write_text(text[:found.start(2)] + header + body + text[found.end(2):],
                   encoding="utf-8")


def main(argv: list[str]) -> int:
    """Check each module named (default: all), print its score, update the doc's table."""
    if argv[:1] == ["--diffs"]:
        for module in argv[1:]:
            for name, diff in mutant_diffs(module).items():
                print(f"# {name} ({function_of(name)})\n{diff}\n")
        return 0
    modules = argv or list(MODULES)
    unknown = [m for m in modules if m not in MODULES]
    if unknown:
        print(f"unknown module(s) {unknown}; known: {list(MODULES)}")
        return 2
    scores = []
    for module in modules:
        s = run(module)
        scores.append(s)
        if s.error:
            print(f"{module:16} {s.error}", flush=True)
            continue
        print(f"{module:16} {s.score:5.1f}%  killed {s.killed} of {s.mutants} mutants "
              f"({s.equivalent} equivalent listed, {len(s.survivors)} survivors), "
              f"{s.minutes} min", flush=True)
        for name, diff in s.survivors.items():
            tag = "accepted survivor" if name in s.accepted else "survived"
            print(f"    {tag}: {name}\n" + "\n".join(f"      {ln}" for ln in diff.splitlines()))
    SCORES.write_text(json.dumps([s.__dict__ for s in scores], indent=2, default=str))
    update_doc(scores)
    return 0 if all(not s.error and s.score >= 90 for s in scores) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
