"""``make mutate``: mutation testing of the core modules, one module at a time.

mutmut 3 mutates a copy of the source tree under ``mutants/`` and puts it first on
``sys.path``; it cannot follow setuptools' editable-install finder nor the package-dir
mapping (``pipeline/`` installs as ``invsync``). So each module is checked in a scratch
tree, ``.mutate/<module>/``, laid out as the installed package (``invsync/`` copied from
``pipeline/`` with ``schemas/`` inside it, plus ``tests/``) with its own ``pyproject.toml``
naming the one file to mutate and its fast unit tests. ``process_isolation = forkserver``:
mutmut's default (fork) deadlocks with polars' thread pool.

Usage: ``python tools/mutate.py [MODULE ...]`` (default: every core module); prints each
module's score: killed / (mutants - equivalent ones listed in tests/mutation-equivalents.md).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / ".mutate"
EQUIVALENTS = ROOT / "tests" / "mutation-equivalents.md"

# module (as installed under invsync/) -> its fast unit tests
MODULES: dict[str, list[str]] = {
    "run/brakes": ["tests/test_brakes.py"],
    "state/journal": ["tests/test_unit_journal.py", "tests/test_per_batch_cost.py"],
    "state/snapshot": ["tests/test_unit_snapshot.py"],
    "stages/diff": ["tests/test_unit_diff.py"],
    "stages/submit": ["tests/test_submit_client.py", "tests/test_unit_submit.py"],
    # The property tests (hypothesis) reach every function: each mutant would run them.
    "stages/validate": ["tests/test_unit_validate.py", "tests/test_validate.py",
                        "-k", "not property"],
    "rules/stock": ["tests/test_validate.py", "tests/test_unit_schema.py"],
}

PYPROJECT = """\
[tool.mutmut]
source_paths = ["invsync"]
only_mutate = [{only!r}]
pytest_add_cli_args_test_selection = {tests!r}
pytest_add_cli_args = ["-p", "no:cacheprovider", "-q"]
process_isolation = "forkserver"

[tool.pytest.ini_options]
timeout = 300
markers = ["integration: runs the real CLI against a sandbox process"]
"""


def equivalents(module: str) -> set[str]:
    """Mutant names listed as equivalent for ``module`` (lines ``- `invsync...__mutmut_N```)."""
    if not EQUIVALENTS.exists():
        return set()
    dotted = "invsync." + module.replace("/", ".")
    names = re.findall(r"`(invsync\.[\w.]+__mutmut_\d+)`", EQUIVALENTS.read_text())
    return {n for n in names if n.startswith(dotted + ".")}


def prepare(module: str) -> Path:
    """A fresh scratch tree for ``module``."""
    work = WORK / module.replace("/", "-")
    shutil.rmtree(work, ignore_errors=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(ROOT / "pipeline" / "invsync", work / "invsync", ignore=ignore)
    shutil.copytree(ROOT / "tests", work / "tests", ignore=ignore)
    tests = [t for t in MODULES[module] if not t.startswith("tests/") or (ROOT / t).exists()]
    (work / "pyproject.toml").write_text(
        PYPROJECT.format(only=f"invsync/{module}.py", tests=tests))
    return work


def run(module: str) -> dict[str, object]:
    """Run mutmut on one module; its counts and score."""
    work = prepare(module)
    mutmut = Path(sys.executable).parent / "mutmut"
    started = time.monotonic()
    log = work / "mutmut.log"
    with log.open("w") as out:
        subprocess.run([str(mutmut), "run"], cwd=work, stdout=out, stderr=subprocess.STDOUT,
                       check=False)
        subprocess.run([str(mutmut), "export-cicd-stats"], cwd=work, stdout=out,
                       stderr=subprocess.STDOUT, check=False)
    stats_file = work / "mutants" / "mutmut-cicd-stats.json"
    if not stats_file.exists():
        return {"module": module, "error": f"mutmut failed: see {log}"}
    stats = json.loads(stats_file.read_text())
    survivors = subprocess.run([str(mutmut), "results"], cwd=work, capture_output=True,
                               text=True, check=False).stdout
    alive = {m.group(1) for m in re.finditer(r"^\s*(\S+__mutmut_\d+): (survived|no tests)",
                                             survivors, re.M)}
    equiv = equivalents(module) & alive
    killed = int(stats.get("killed", 0)) + int(stats.get("timeout", 0))
    total = int(stats.get("total", 0)) - int(stats.get("skipped", 0))
    judged = total - len(equiv)
    return {"module": module, "mutants": total, "killed": killed, "equivalent": len(equiv),
            "survivors": sorted(alive - equiv),
            "score": 100.0 * killed / judged if judged else 0.0,
            "minutes": round((time.monotonic() - started) / 60, 1)}


def main(argv: list[str]) -> int:
    """Check each module named (default: all) and print its score."""
    modules = argv or list(MODULES)
    unknown = [m for m in modules if m not in MODULES]
    if unknown:
        print(f"unknown module(s) {unknown}; known: {list(MODULES)}")
        return 2
    results = []
    for module in modules:
        res = run(module)
        results.append(res)
        if "error" in res:
            print(f"{module:16} {res['error']}", flush=True)
            continue
        print(f"{module:16} {res['score']:5.1f}%  killed {res['killed']} of "
              f"{res['mutants']} mutants ({res['equivalent']} equivalent listed), "
              f"{res['minutes']} min", flush=True)
        for name in res["survivors"]:  # type: ignore[attr-defined]
            print(f"    survived: {name}")
    (WORK / "scores.json").write_text(json.dumps(results, indent=2))
    return 0 if all(r.get("score", 0) >= 90 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
