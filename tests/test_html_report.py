"""The human reports: report.html (self-contained, escaped) and summary.md."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from browser import HEADLESS, find_chromium

from invsync.errors import ExitCode
from invsync.html.report_page import (
    MAX_REJECTED_ROWS,
    TOP_MOVES,
    render_html,
    render_markdown,
    write_human_reports,
)

SCRIPT_SKU = "<script>alert(1)</script>"
TITLE_SCRIPT = "<script>document.title='pwned'</script>"
IMG_ONERROR = '<img src=x onerror="document.title=\'pwned\'">'
FORMULA = '=HYPERLINK("http://evil.example/","click me")'
EXPECTED_TITLE = "invsync run 20261127T103512Z-4f9a1c — partial"

PLAN_SCHEMA = {"location_id": pl.Int64, "identifier": pl.String, "item": pl.String,
               "old": pl.Int64, "new": pl.Int64, "delta": pl.Int64, "row": pl.Int64,
               "status": pl.String}


# --------------------------------------------------------------------------- fixtures


def hostile_rejected() -> list[dict[str, Any]]:
    return [
        {"row": 2, "column": "sku", "value": SCRIPT_SKU, "reason": "quantity_not_whole",
         "message": f"quantity '{SCRIPT_SKU}' is not a whole number"},
        {"row": 3, "column": "quantity", "value": TITLE_SCRIPT, "reason": "quantity_not_whole",
         "message": "quantity is not a whole number"},
        {"row": 4, "column": "sku", "value": IMG_ONERROR, "reason": "duplicate_item",
         "message": "the same item at the same location is in rows 4, 5; keep one row"},
        {"row": 5, "column": "sku", "value": FORMULA, "reason": "duplicate_item",
         "message": "the same item at the same location is in rows 4, 5; keep one row"},
        {"row": 6, "column": "quantity", "value": None, "reason": "missing_quantity",
         "message": "quantity is empty"},
        {"row": 7, "column": "location_id", "value": "3", "reason": "disabled_location",
         "message": "location '3' is disabled in the store and accepts no stock changes"},
        {"row": None, "column": "sku", "value": "GONE-1", "reason": "refused_by_store",
         "message": "the store refused this item: </td></tr></table><h1>x</h1>"},
    ]


def hostile_report() -> dict[str, Any]:
    rejected = hostile_rejected()
    txids = [f"tx-{i:02d}-{'a' * 8}" for i in range(8)]
    return {
        "run_id": "20261127T103512Z-4f9a1c",
        "status": "partial",
        "started_at": "2026-11-27T10:35:12Z",
        "finished_at": "2026-11-27T10:35:19Z",
        "command": "sync",
        "input": {"path": "/data/<b>stock</b>.csv", "sha256": "ab" * 32, "format": "csv",
                  "rows": 40, "blank_rows": 1, "sheet": None, "encoding": "utf-8",
                  "delimiter": ",", "columns": {"sku": "SKU<i>", "quantity": "qty"}},
        "store": {"store_hash": "abc123", "api_url": "https://api.bigcommerce.com"},
        "options": {"dry_run": False, "batch_size": 2000, "brakes": {"allow_empty": False}},
        "counts": {"rows": 40, "blank": 1, "valid": 34, "invalid": 6, "merged": 0,
                   "unchanged": 4, "changed": 30, "submitted": 30, "accepted": 27,
                   "refused": 1, "unconfirmed": 2, "not_sent": 0, "zeroed_missing": 0,
                   "rejected": 7},
        "rejected_by_reason": {"quantity_not_whole": 2, "duplicate_item": 2,
                               "missing_quantity": 1, "disabled_location": 1,
                               "refused_by_store": 1},
        "batches": [
            {"index": i, "location_id": 1 + i % 2, "items": 10 - i,
             "status": ["accepted", "partial", "failed", "accepted"][i],
             "transaction_id": txids[2 * i], "transaction_ids": txids[2 * i: 2 * i + 2],
             "attempts": 1 + (i == 2), "requests": 1, "accepted": 9, "refused": int(i == 1),
             "error": "HTTP 502 <html>bad gateway</html>" if i == 2 else None,
             "seconds": 0.1}
            for i in range(4)
        ],
        "transaction_ids": txids,
        "rejected": rejected,
        "timings": {"ingest": 0.01, "total": 7.25},
        "requests": {"sent": 5, "http_429": 1},
        "notes": ["header cell 'SKU<i>' mapped to sku | note with pipe",
                  "- a note that starts like a list\nand spans two lines"],
        "brakes": [],
        "resumed_from": None,
        "error": None,
        "exit_code": 1,
        "report_dir": "/state/runs/20261127T103512Z-4f9a1c",
        "version": 1,
    }


def hostile_plan() -> pl.DataFrame:
    rows: list[dict[str, Any]] = []
    # 30 drops with distinct deltas -1 .. -30, at two locations.
    for i in range(1, 31):
        rows.append({"location_id": 1 + i % 2, "identifier": "sku", "item": f"DROP-{i:02d}",
                     "old": 100 + i, "new": 100, "delta": -i, "row": 10 + i,
                     "status": "accepted"})
    # 25 rises +1 .. +25.
    for i in range(1, 26):
        rows.append({"location_id": 1, "identifier": "sku", "item": f"RISE-{i:02d}",
                     "old": 5, "new": 5 + i, "delta": i, "row": 100 + i, "status": "refused"})
    # The biggest drop of all is the hostile SKU, going to zero.
    rows.append({"location_id": 2, "identifier": "sku", "item": SCRIPT_SKU, "old": 1000,
                 "new": 0, "delta": -1000, "row": 2, "status": "unconfirmed"})
    # New items (no old level) are never ranked, however big.
    rows.append({"location_id": 1, "identifier": "sku", "item": "NEW-BIG", "old": None,
                 "new": 99999, "delta": 99999, "row": 200, "status": "accepted"})
    rows.append({"location_id": 3, "identifier": "product_id", "item": "77", "old": None,
                 "new": 0, "delta": 0, "row": None, "status": "not_sent"})
    return pl.DataFrame(rows, schema=PLAN_SCHEMA)


class Tables(HTMLParser):
    """Collects the text of every cell of every table with an id, and the <title>."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tables: dict[str, list[list[str]]] = {}
        self.title = ""
        self.tags: list[str] = []
        self.attrs: list[tuple[str, str, str]] = []
        self._table: str | None = None
        self._row: list[str] | None = None
        self._cell: list[str] | None = None
        self._in_title = False
        self._in_thead = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attrs += [(tag, k, v or "") for k, v in attrs]
        a = dict(attrs)
        if tag == "table" and a.get("id"):
            self._table = a["id"]
            self.tables[self._table] = []
        elif tag == "thead":
            self._in_thead = True
        elif tag == "tr" and self._table and not self._in_thead:
            self._row = []
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []
        elif tag == "title":
            self._in_title = True
        elif tag == "br" and self._cell is not None:
            self._cell.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self._table = None
        elif tag == "thead":
            self._in_thead = False
        elif tag in ("td", "th") and self._cell is not None and self._row is not None:
            self._row.append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "tr" and self._row is not None and self._table:
            self.tables[self._table].append(self._row)
            self._row = None
        elif tag == "title":
            self._in_title = False

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)
        if self._in_title:
            self.title += data


def parse(page: str) -> Tables:
    parser = Tables()
    parser.feed(page)
    parser.close()
    return parser


def text(value: Any) -> str:
    return " ".join(str(value).split())


# --------------------------------------------------------------------------- HTML


def test_hostile_cell_text_is_escaped_everywhere() -> None:
    report = hostile_report()
    page = render_html(report, hostile_plan(), report["rejected"])
    assert SCRIPT_SKU not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    # No element the file or store could have injected: not one script, img or stray h1.
    lowered = page.lower()
    assert "<script" not in lowered
    assert "<img" not in lowered
    assert "<h1>x</h1>" not in lowered
    assert "<b>stock</b>" not in page and "&lt;b&gt;stock&lt;/b&gt;" in page
    assert "<html>bad gateway" not in page
    # The formula is shown as the text it is.
    assert "=HYPERLINK(&#34;http://evil.example/&#34;,&#34;click me&#34;)" in page
    tables = parse(page)
    assert tables.tags.count("h1") == 1
    assert tables.title == EXPECTED_TITLE
    # The hostile SKU is in the plan's biggest drops as text.
    assert tables.tables["plan-drops"][0][2] == SCRIPT_SKU


def test_page_is_self_contained() -> None:
    report = hostile_report()
    page = render_html(report, hostile_plan(), report["rejected"])
    tree = parse(page)
    assert not {"link", "script", "img", "iframe", "object", "embed"} & set(tree.tags)
    assert not [a for a in tree.attrs if a[1] in ("src", "srcset", "action") or
                a[1].startswith("on")]
    style = page.split("<style>")[1].split("</style>")[0]
    assert "@import" not in style and "url(" not in style
    csp = [v for tag, k, v in tree.attrs if k == "content" and "default-src" in v]
    assert csp and "default-src 'none'" in csp[0] and "script" not in csp[0]
    # Every link is relative: the sibling files of the run folder.
    hrefs = {v for _, k, v in tree.attrs if k == "href"}
    assert hrefs == {"report.json", "rejected.csv", "plan.csv", "summary.md"}


def test_every_rejected_row_is_listed() -> None:
    report = hostile_report()
    rows = parse(render_html(report, None, report["rejected"])).tables["rejected-rows"]
    assert len(rows) == len(report["rejected"])
    for cells, rec in zip(rows, report["rejected"], strict=True):
        assert cells[0] == ("—" if rec["row"] is None else str(rec["row"]))
        assert cells[1] == rec["column"]
        assert cells[2] == ("(empty)" if rec["value"] is None else text(rec["value"]))
        assert cells[3] == rec["reason"]
        assert cells[4] == text(rec["message"])


def test_very_many_rejected_rows_are_capped_but_totals_are_not() -> None:
    report = hostile_report()
    total = MAX_REJECTED_ROWS + 1234
    report["rejected"] = [{"row": i + 2, "column": "quantity", "value": f"v{i}",
                           "reason": "quantity_not_whole", "message": f"bad {i}"}
                          for i in range(total)]
    report["counts"] = {**report["counts"], "rows": total, "valid": 0, "invalid": total,
                        "rejected": total}
    report["rejected_by_reason"] = {"quantity_not_whole": total}
    page = render_html(report, None, report["rejected"])
    tables = parse(page)
    rows = tables.tables["rejected-rows"]
    assert len(rows) == MAX_REJECTED_ROWS
    assert rows[-1][4] == f"bad {MAX_REJECTED_ROWS - 1}"
    assert (f"Showing the first {MAX_REJECTED_ROWS:,} of {total:,} rejected rows; 1,234 more "
            f"are in") in page
    assert ["quantity_not_whole", f"{total:,}", "100%", "row 2: bad 0",
            "A quantity that is not a whole number"] in tables.tables["rejected-by-reason"]
    assert counts_of(tables)["rejected"] == f"{total:,}"


def counts_of(tables: Tables) -> dict[str, str]:
    labels = {"rows read": "rows", "invalid rows": "invalid", "accepted": "accepted",
              "refused by the store": "refused", "unconfirmed": "unconfirmed",
              "rejected rows (invalid + refused)": "rejected", "changed items": "changed",
              "not sent": "not_sent", "submitted": "submitted", "valid rows": "valid"}
    found = {}
    for name, rows in tables.tables.items():
        if name.startswith("counts-"):
            for label, value in rows:
                if label in labels:
                    found[labels[label]] = value
    return found


def test_counts_reasons_and_transaction_ids_are_shown() -> None:
    report = hostile_report()
    tables = parse(render_html(report, None, report["rejected"]))
    assert counts_of(tables) == {"rows": "40", "valid": "34", "invalid": "6", "changed": "30",
                                 "submitted": "30", "accepted": "27", "refused": "1",
                                 "unconfirmed": "2", "not_sent": "0", "rejected": "7"}
    reasons = tables.tables["rejected-by-reason"]
    assert [r[:2] for r in reasons] == [[k, str(v)] for k, v in
                                        report["rejected_by_reason"].items()] + [["total", "7"]]
    batches = tables.tables["batches"]
    assert [r[:5] for r in batches] == [["0", "1", "10", "accepted", "1"],
                                       ["1", "2", "9", "partial", "1"],
                                       ["2", "1", "8", "failed", "2"],
                                       ["3", "2", "7", "accepted", "1"]]
    shown = " ".join(r[7] for r in batches)
    for txid in report["transaction_ids"]:
        assert txid in shown
    assert batches[2][8] == "HTTP 502 <html>bad gateway</html>"


def test_header_shows_the_run() -> None:
    report = hostile_report()
    report.update(status="failed", exit_code=3, error="safety brake: <boom>",
                  brakes=[{"name": "mass_zeroing", "message": "40 of 50 items would go to 0"}])
    page = render_html(report, None, report["rejected"])
    for expected in ("20261127T103512Z-4f9a1c", 'class="badge bad">failed<', "ab" * 32,
                     "abc123", "2026-11-27T10:35:12Z", "2026-11-27T10:35:19Z",
                     "SAFETY_BRAKE", "safety brake: &lt;boom&gt;", "mass_zeroing",
                     "40 of 50 items would go to 0", "header cell &#39;SKU&lt;i&gt;&#39;",
                     "/data/&lt;b&gt;stock&lt;/b&gt;.csv", ">CSV"):
        assert expected in page, expected


def test_unknown_status_never_reaches_an_attribute() -> None:
    report = hostile_report()
    report["status"] = 'x" onmouseover="alert(1)'
    page = render_html(report, None, [])
    assert 'onmouseover="alert' not in page
    assert 'class="badge muted">x&#34; onmouseover=&#34;alert(1)<' in page


def test_plan_biggest_drops_and_rises_are_ordered() -> None:
    report = hostile_report()
    tables = parse(render_html(report, hostile_plan(), report["rejected"])).tables
    drops = tables["plan-drops"]
    assert len(drops) == TOP_MOVES
    assert [r[2] for r in drops] == [SCRIPT_SKU] + [f"DROP-{i:02d}" for i in range(30, 11, -1)]
    assert drops[0][3:6] == ["1,000", "0", "-1,000"]
    assert drops[1][3:7] == ["130", "100", "-30", "40"]
    rises = tables["plan-rises"]
    assert [r[2] for r in rises] == [f"RISE-{i:02d}" for i in range(25, 5, -1)]
    assert rises[0][5] == "+25"
    assert all("NEW" not in r[2] for r in drops + rises)
    per_location = {r[0]: r[1:7] for r in tables["plan-locations"]}
    # location: items, new, changed, to 0, units up, units down
    assert per_location["1"] == ["41", "1", "40", "0", "+325", "-240"]
    assert per_location["2"] == ["16", "0", "16", "1", "+0", "-1,225"]
    assert per_location["3"] == ["1", "1", "0", "0", "+0", "+0"]
    assert per_location["all"] == ["58", "2", "56", "1", "+325", "-1,465"]


def test_plan_read_back_from_csv_and_missing_plan(tmp_path: Path) -> None:
    path = tmp_path / "plan.csv"
    hostile_plan().drop("delta").write_csv(path)
    report = hostile_report()
    from_csv = parse(render_html(report, pl.read_csv(path), [])).tables
    assert from_csv["plan-drops"][1][2] == "DROP-30"
    page = render_html(report, None, [])
    assert "No plan for this run" in page and "plan-drops" not in page
    empty = render_html(report, hostile_plan().clear(), [])
    assert "No changes" in empty and 'href="plan.csv"' in empty


# --------------------------------------------------------------------------- Markdown


def md_tables(markdown: str) -> list[list[str]]:
    """Each block of consecutive lines that start with a pipe."""
    blocks: list[list[str]] = []
    current: list[str] = []
    for line in markdown.splitlines():
        if line.startswith("|"):
            current.append(line)
        elif current:
            blocks.append(current)
            current = []
    if current:
        blocks.append(current)
    return blocks


def cells(line: str) -> list[str]:
    # Split on pipes that are not escaped.
    parts, cell, escaped = [], "", False
    for ch in line.strip()[1:-1]:
        if ch == "|" and not escaped:
            parts.append(cell.strip())
            cell = ""
        else:
            cell += ch
        escaped = ch == "\\" and not escaped
    parts.append(cell.strip())
    return parts


def test_markdown_summary_shape_and_content() -> None:
    report = hostile_report()
    report["rejected_by_reason"]["weird|reason"] = 1
    md = render_markdown(report, hostile_plan())
    lines = md.splitlines()
    assert lines[0] == "## invsync run `20261127T103512Z-4f9a1c`: **partial** (exit code 1)"
    tables = md_tables(md)
    assert len(tables) == 2
    for table in tables:
        width = len(cells(table[0]))
        assert width == 2
        assert all(len(cells(line)) == width for line in table)
        assert cells(table[1])[0] == "---" and cells(table[1])[1] == "---:"
    counts = {cells(line)[0]: cells(line)[1] for line in tables[0][2:]}
    assert counts["rows read"] == "40" and counts["accepted"] == "27"
    assert counts["rejected rows"] == "7" and counts["unconfirmed"] == "2"
    reasons = {cells(line)[0]: cells(line)[1] for line in tables[1][2:]}
    assert reasons["`quantity_not_whole`"] == "2"
    assert reasons["`weird\\|reason`"] == "1"
    # The first few transaction ids and the total.
    assert "**Transaction ids (8):** `tx-00-aaaaaaaa`" in md
    assert "`tx-04-aaaaaaaa`, … and 3 more (all in report.json)" in md
    assert "tx-05-aaaaaaaa" not in md
    assert "**Plan:** 58 item(s) at 3 location(s): 2 new, 56 changed, 1 to 0" in md
    # Notes are escaped and on one line each; the folder is the last line.
    assert "- header cell 'SKU\\<i\\>' mapped to sku \\| note with pipe" in lines
    assert "- \\- a note that starts like a list and spans two lines" in lines
    assert lines[-1] == "Report folder: `/state/runs/20261127T103512Z-4f9a1c`"
    # File text outside code spans is escaped; inside one it is shown literally.
    assert "- Input: `/data/<b>stock</b>.csv` (csv, sha256 `abababababab`…)" in lines


def test_markdown_of_a_failed_run_without_plan() -> None:
    report = hostile_report()
    report.update(status="failed", error="safety brake: a | b", transaction_ids=[], batches=[],
                  brakes=[{"name": "shrunken_file", "message": "the file has 3 rows"}])
    md = render_markdown(report, None)
    assert md.startswith("## invsync run `20261127T103512Z-4f9a1c`: **failed**")
    assert "**Error:** safety brake: a \\| b" in md
    assert "- `shrunken_file`: the file has 3 rows" in md
    assert "Transaction ids" not in md and "**Plan:**" not in md


# --------------------------------------------------------------------------- files


def test_write_human_reports_replaces_files_atomically(tmp_path: Path) -> None:
    folder = tmp_path / "run"
    report = hostile_report()
    report["report_dir"] = ""
    folder.mkdir()
    (folder / "report.html").write_text("old")
    write_human_reports(folder, report, hostile_plan())
    page = (folder / "report.html").read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    summary = (folder / "summary.md").read_text(encoding="utf-8")
    assert summary.splitlines()[-1] == f"Report folder: `{folder}`"
    assert sorted(p.name for p in folder.iterdir()) == ["report.html", "summary.md"]
    assert report["report_dir"] == ""  # the caller's dict is left alone


def test_a_real_dry_run_renders(tmp_path: Path) -> None:
    from invsync.run.config import Settings
    from invsync.run.sync import sync_file

    csv = tmp_path / "stock.csv"
    csv.write_text("sku,location_id,quantity\n"
                   "A-1,1,5\n"
                   f"\"{SCRIPT_SKU}\",1,7\n"
                   "B-2,1,lots\n"
                   "\"=HYPERLINK(\"\"http://x\"\",\"\"y\"\")\",1,-3\n"
                   ",1,4\n", encoding="utf-8")
    settings = Settings(dry_run=True, store_hash="t", state_dir=tmp_path,
                        report_dir=tmp_path / "r")
    report = sync_file(csv, settings)
    folder = Path(report.report_dir)
    data = json.loads((folder / "report.json").read_text())
    assert data["counts"]["rejected"] == len(data["rejected"]) == 3
    plan_path = folder / "plan.csv"
    plan = pl.read_csv(plan_path) if plan_path.exists() else None
    page = render_html(data, plan, data["rejected"])
    rows = parse(page).tables["rejected-rows"]
    assert [r[0] for r in rows] == [str(rec["row"]) for rec in data["rejected"]]
    assert 'class="badge info">dry run<' in page
    assert SCRIPT_SKU not in page
    md = render_markdown(data, plan)
    assert "**dry run**" in md.splitlines()[0]
    assert f"| not sent (dry run) | {data['counts']['not_sent']} |" in md


# --------------------------------------------------------------------------- browser


def chromium_args(binary: str, profile: Path) -> list[str]:
    return [binary, *HEADLESS, "--disable-quic", f"--user-data-dir={profile}"]


def run_chromium(binary: str, tmp_path: Path, *args: str, timeout: float = 90) -> str:
    """Run headless Chromium; on a hang (say, a script's alert) kill its whole group."""
    env = {**os.environ, "HOME": str(tmp_path)}
    proc = subprocess.Popen([*chromium_args(binary, tmp_path / "profile"), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail(f"chromium did not finish in {timeout}s (a script blocking on a dialog?)")
    assert proc.returncode == 0, stderr[-2000:]
    return stdout


def test_chromium_renders_the_page_and_runs_no_script(tmp_path: Path) -> None:
    binary = find_chromium()
    if binary is None:
        pytest.skip("chromium is not installed (apt-get install chromium); "
                    "set INVSYNC_CHROMIUM to use another Chromium binary")
    report = hostile_report()
    folder = tmp_path / "run"
    write_human_reports(folder, report, hostile_plan())
    stdout = run_chromium(binary, tmp_path, "--dump-dom", (folder / "report.html").as_uri())
    dom = parse(stdout)
    # Nothing ran: the injected scripts and handlers would have set the title.
    assert dom.title == EXPECTED_TITLE
    assert "pwned" not in dom.title
    assert "script" not in dom.tags and "img" not in dom.tags
    rows = dom.tables["rejected-rows"]
    expected = report["rejected"]
    assert len(rows) == len(expected)
    for cells_, rec in zip(rows, expected, strict=True):
        assert cells_[2] == ("(empty)" if rec["value"] is None else text(rec["value"]))
        assert cells_[4] == text(rec["message"])
    assert dom.tables["plan-drops"][0][2] == SCRIPT_SKU
    assert dom.tables["batches"][0][7] == "tx-00-aaaaaaaa tx-01-aaaaaaaa"


_RENDER_PROBE = """
import jinja2
compiled = []
original = jinja2.Environment.compile
def counting(self, *args, **kwargs):
    compiled.append(1)
    return original(self, *args, **kwargs)
jinja2.Environment.compile = counting
from invsync.html.report_page import render_html
page = render_html({"run_id": "r1", "status": "succeeded"}, None, [])
print(len(compiled), "invsync run r1" in page)
"""


def _render_in_fresh_process(tmp: Path) -> str:
    import sys

    env = {**os.environ, "TMPDIR": str(tmp)}
    return subprocess.run([sys.executable, "-c", _RENDER_PROBE], env=env, check=True,
                          capture_output=True, text=True, timeout=120).stdout.strip()


def test_the_compiled_templates_are_kept_for_the_next_run(tmp_path: Path) -> None:
    first = _render_in_fresh_process(tmp_path)
    assert first.split()[1] == "True" and int(first.split()[0]) > 0
    assert _render_in_fresh_process(tmp_path) == "0 True"  # nothing compiled again
    cache = tmp_path / f"_jinja2-cache-{os.getuid()}"
    assert cache.is_dir() and (cache.stat().st_mode & 0o777) == 0o700
    # A torn or foreign cache file is compiled over, never a failed report.
    for entry in cache.iterdir():
        entry.write_bytes(b"j2/\x00garbage")
    assert _render_in_fresh_process(tmp_path).split() == first.split()
    assert _render_in_fresh_process(tmp_path) == "0 True"


def test_a_temp_folder_that_is_not_safe_only_means_compiling(tmp_path: Path) -> None:
    # Where the cache folder should be, something else: the pages are compiled each time.
    (tmp_path / f"_jinja2-cache-{os.getuid()}").write_text("not a folder")
    assert _render_in_fresh_process(tmp_path).split()[1] == "True"
    assert int(_render_in_fresh_process(tmp_path).split()[0]) > 0


@pytest.mark.parametrize("code", list(ExitCode))
def test_every_exit_code_is_named_in_the_page_from_the_enum(code: ExitCode) -> None:
    # 130 and 143 (interrupted, terminated) had no name before: the names were a copy.
    report = {**hostile_report(), "exit_code": int(code)}
    page = render_html(report, None, [])
    assert f"{int(code)} <span class=\"muted\">{code.name}</span>" in page


def test_the_summary_is_a_template_and_keeps_its_escaping() -> None:
    from invsync.html.render import environment

    assert environment().get_template("summary.md") is not None
    md = render_markdown({**hostile_report(), "exit_code": 143, "status": "interrupted"}, None)
    assert md.startswith("## invsync run `") and "(exit code 143)" in md
    assert "<script>" not in md


def test_a_run_stopped_while_its_file_was_read_does_not_say_it_read_0_rows() -> None:
    # Interrupted before the file was read (report.json's input has no rows): "rows read 0"
    # would say the file was empty.
    report = hostile_report()
    report.update(status="interrupted", exit_code=130, rejected=[], rejected_by_reason={},
                  counts={k: 0 for k in report["counts"]})
    report["input"] = {"path": "stock.csv", "source": None}
    page, summary = render_html(report, None, []), render_markdown(report, None)
    for text in (page, summary):
        assert "none: the run stopped while reading the file" in text
    assert "| rows read | 0 |" not in summary
    report["input"]["rows"] = 0  # read, and empty: 0 it is
    page, summary = render_html(report, None, []), render_markdown(report, None)
    assert "stopped while reading" not in page + summary and "| rows read | 0 |" in summary
