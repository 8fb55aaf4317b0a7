"""Files the page hands out: an upload's original, a run's report and its CSV/XLSX files."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import quote

from starlette.responses import FileResponse, HTMLResponse, Response

from invsync.html.render import csp_hash

MEDIA = {".html": "text/html; charset=utf-8", ".json": "application/json",
         ".csv": "text/csv; charset=utf-8", ".md": "text/markdown; charset=utf-8",
         ".xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"}


def download(path: Path, filename: str) -> Response:
    """``path`` as an attachment named ``filename`` (any characters, safely quoted)."""
    ascii_name = "".join(c if c.isalnum() or c in "._-" else "_" for c in filename)
    disposition = f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(filename)}"
    return FileResponse(path, media_type="application/octet-stream",
                        headers={"Content-Disposition": disposition})


def run_file(path: Path) -> Response:
    """A run's file; report.html gets a CSP allowing exactly its own inline style."""
    media = MEDIA.get(path.suffix, "application/octet-stream")
    if path.suffix == ".html":
        page = path.read_text(encoding="utf-8")
        styles = re.findall(r"<style>(.*?)</style>", page, flags=re.S)
        style_src = " ".join(csp_hash(s) for s in styles) or "'none'"
        return HTMLResponse(page, headers={
            "Content-Security-Policy": f"default-src 'none'; style-src {style_src}; "
                                       "img-src data:; base-uri 'none'; form-action 'none'; "
                                       "frame-ancestors 'none'"})
    headers = {}
    if path.suffix in (".csv", ".xlsx", ".md"):
        headers["Content-Disposition"] = f'attachment; filename="{path.name}"'
    return FileResponse(path, media_type=media, headers=headers)
