"""A clean package (issue 12): ``pip install .`` into a fresh venv gives a working
``invsync``, ``python -m invsync`` and ``import invsync``, claims no generic top-level
name (``pipeline``, ``schemas``), carries the page templates and static files, and
requires only what running needs.

The wheel is built from a copy of the sources (no build files land in the repository) and
installed with ``--no-deps`` into a venv without pip; the runtime dependencies come from
the test's own environment through a ``.pth`` line (no index needed). About 15 s.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
from conftest import ROOT

RUNTIME = {"polars", "pandera", "pydantic", "httpx", "openpyxl", "fastexcel", "click", "rich",
           "jinja2", "charset-normalizer"}
WEB_EXTRA = {"starlette", "uvicorn", "python-multipart"}
"""`invsync serve` and the sandbox store: the extra `invsync[web]`."""
DEV_TOOLS = {"pytest", "pytest-timeout", "hypothesis", "ruff", "mypy", "xlsxwriter", "psutil",
             "import-linter", "jsonschema", "pyyaml", "selenium", "mutmut", "pytest-xdist",
             # the source tests' servers, and the dev extra's own source extras
             "asyncssh", "pyftpdlib", "moto", "trustme", "pyopenssl", "invsync"}
SOURCE_EXTRAS = {"sftp": {"fsspec", "paramiko"}, "ftp": {"fsspec"}, "s3": {"fsspec", "s3fs"},
                 "gcs": {"fsspec", "gcsfs"}, "azure": {"fsspec", "adlfs"}}
"""The optional backends of sources (docs/sources.md), one extra per URL scheme."""


def _name(requirement: str) -> str:
    import re

    return re.split(r"[\s\[<>=!~;(]", requirement.strip(), maxsplit=1)[0].lower()


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = tmp_path_factory.mktemp("src")
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("pipeline", "schemas", "docs"):
        shutil.copytree(ROOT / name, src / name, ignore=ignore)
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, src / name)
    dist = tmp_path_factory.mktemp("dist")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist),
                    str(src)], check=True, capture_output=True, timeout=600)
    (found,) = dist.glob("invsync-*.whl")
    return found


def test_wheel_holds_one_package_with_its_data_and_runtime_requirements(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        metadata = zf.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
        top_level = zf.read(next(n for n in names if n.endswith("top_level.txt"))).decode()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"invsync"}, tops
    assert top_level.split() == ["invsync"]
    for data in ("invsync/html/templates/report.html", "invsync/html/templates/upload.html",
                 "invsync/html/static/invsync.css", "invsync/html/static/invsync.js",
                 "invsync/rules/stock.py", "invsync/__main__.py", "invsync/py.typed",
                 "invsync/contracts/__init__.py", "invsync/sandbox/catalog.csv",
                 "invsync/docs/operations.md", "invsync/docs/cli.md"):
        assert data in names, data
    sources = {p.relative_to(ROOT / "pipeline").as_posix()
               for p in (ROOT / "pipeline").rglob("*.py")}
    assert sources <= set(names)
    required = [line.removeprefix("Requires-Dist:").strip()
                for line in metadata.splitlines() if line.startswith("Requires-Dist:")]
    always = {_name(r) for r in required if "extra ==" not in r}
    assert always == RUNTIME, always
    assert not always & DEV_TOOLS
    for extra, backends in SOURCE_EXTRAS.items():
        assert {_name(r) for r in required if f'extra == "{extra}"' in r} == backends, extra
    assert {_name(r) for r in required if 'extra == "web"' in r} == WEB_EXTRA
    extras = {_name(r) for r in required if "extra ==" in r and 'extra == "dev"' in r}
    assert extras <= DEV_TOOLS


def test_installed_into_a_fresh_venv_it_runs(wheel: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True,
                   timeout=120)
    python = venv / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q",
                    "--no-deps", "--no-index", str(wheel)], check=True, capture_output=True,
                   timeout=300)
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; "
                                "print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    installed = sorted(p.name for p in site.iterdir())
    assert not {"pipeline", "schemas"} & set(installed), installed
    # Runtime dependencies from this environment (appended: the wheel's invsync comes first,
    # and the editable install's import hook is not loaded from a plain path line).
    (site / "zz_runtime_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    env = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HOME": str(tmp_path)}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(list(args), cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=120)

    for cmd in ([str(venv / "bin" / "invsync"), "--help"], [str(python), "-m", "invsync",
                                                              "--help"]):
        result = run(*cmd)
        assert result.returncode == 0, result.stderr
        assert "revert" in result.stdout and "sync" in result.stdout
        # The docs ship with the package, and --help says where (issue 22).
        assert f"  {site / 'invsync' / 'docs'}\n" in result.stdout, result.stdout[:900]
    check = run(str(python), "-c", """
import importlib.resources, importlib.util, invsync
assert invsync.__file__.startswith(SITE), invsync.__file__
assert callable(invsync.sync_file) and invsync.Settings and invsync.RunReport
for name in ("pipeline", "schemas"):
    assert importlib.util.find_spec(name) is None, name
html = importlib.resources.files("invsync.html")
assert (html / "templates" / "report.html").is_file()
assert (html / "static" / "invsync.css").is_file()
from invsync.html.render import environment, stylesheet
environment().get_template("report.html")
assert stylesheet()
from invsync.contracts import load
assert load("upload-api.openapi.json")["openapi"].startswith("3.1")
print("ok")
""".replace("SITE", repr(str(site))))
    assert check.returncode == 0 and check.stdout.strip() == "ok", check.stderr
