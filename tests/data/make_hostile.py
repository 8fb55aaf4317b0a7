"""Write the small hostile and odd input files of ``tests/data/hostile/`` (run it again to
remake them: ``.venv/bin/python tests/data/make_hostile.py``).

Each file is made here, with the programs people's files come from (openpyxl, xlsxwriter)
or byte by byte where no program would write it (a looping OLE sector chain); none is
copied from elsewhere. ``tests/test_hostile_files.py`` runs every one through the CLI under
a memory and time bound.
"""

from __future__ import annotations

import io
import struct
import sys
import zipfile
from pathlib import Path

OUT = Path(__file__).resolve().parent / "hostile"

END, FREE, FATSECT, NOSTREAM = 0xFFFFFFFE, 0xFFFFFFFF, 0xFFFFFFFD, 0xFFFFFFFF
BIFF8_BOF = struct.pack("<HHHHII", 0x0809, 16, 0x0600, 0x0005, 0, 0)


def _dir_entry(name: str, kind: int, start: int, size: int, child: int = NOSTREAM) -> bytes:
    raw = name.encode("utf-16-le") + b"\0\0"
    return (raw.ljust(64, b"\0") + struct.pack("<HBB", len(raw), kind, 1)
            + struct.pack("<III", NOSTREAM, NOSTREAM, child) + b"\0" * 16
            + struct.pack("<I", 0) + b"\0" * 16 + struct.pack("<IQ", start, size))


def ole_file(fat: list[int], stream_start: int, stream_size: int, sectors: int) -> bytes:
    """An OLE compound file (512-byte sectors): sector 0 the FAT, 1 the directory (a
    ``Workbook`` stream from ``stream_start``), then ``sectors`` data sectors."""
    header = bytearray(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\0" * 16)
    header += struct.pack("<HHHHH", 0x3E, 3, 0xFFFE, 9, 6) + b"\0" * 6
    header += struct.pack("<IIIIIIIII", 0, 1, 1, 0, 4096, END, 0, END, 0)
    header += struct.pack("<I", 0) + struct.pack("<I", FREE) * 108
    assert len(header) == 512
    table = (fat + [FREE] * 128)[:128]
    directory = (_dir_entry("Root Entry", 5, END, 0, child=1)
                 + _dir_entry("Workbook", 2, stream_start, stream_size)).ljust(512, b"\0")
    data = (BIFF8_BOF * 32)[:512]
    return bytes(header) + struct.pack("<128I", *table) + directory + data * sectors


def looping_ole() -> bytes:
    """A 2 KB .xls whose Workbook stream's sector chain points back on itself (2 -> 3 -> 2)
    and claims to be 2 GB: a reader that follows the chain never ends."""
    return ole_file([FATSECT, END, 3, 2], 2, (1 << 31) - 1, 2)


def xlsx_bytes(build: object) -> bytes:
    import openpyxl

    wb = openpyxl.Workbook()
    build(wb)  # type: ignore[operator]
    out = io.BytesIO()
    wb.save(out)
    return out.getvalue()


def rewrite_zip(data: bytes, change: dict[str, bytes | None]) -> bytes:
    """``data`` (a zip) with members replaced (or dropped, for None)."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            if info.filename in change:
                if change[info.filename] is not None:
                    dst.writestr(info, change[info.filename])  # type: ignore[arg-type]
            else:
                dst.writestr(info, src.read(info))
    return out.getvalue()


def no_sheets() -> bytes:
    """A workbook whose sheet list is empty."""
    def build(wb: object) -> None:
        wb.active.append(["sku", "quantity"])  # type: ignore[attr-defined]

    data = xlsx_bytes(build)
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        workbook = zf.read("xl/workbook.xml").decode()
    start, end = workbook.index("<sheets>"), workbook.index("</sheets>") + len("</sheets>")
    return rewrite_zip(data, {"xl/workbook.xml": (workbook[:start] + "<sheets/>"
                                                  + workbook[end:]).encode()})


def error_cells() -> bytes:
    """Error cells as Excel stores them (``t="e"`` with the shown text), and booleans."""
    import xlsxwriter

    out = io.BytesIO()
    wb = xlsxwriter.Workbook(out, {"in_memory": True})
    ws = wb.add_worksheet("Stock")
    ws.write_row(0, 0, ["sku", "quantity", "active"])
    ws.write_row(1, 0, ["OK-1", 5])
    ws.write_boolean(1, 2, True)
    ws.write(2, 0, "NA-1")
    ws.write_formula(2, 1, "=NA()", None, "#N/A")
    ws.write_boolean(2, 2, False)
    ws.write_formula(3, 0, "=#REF!", None, "#REF!")
    ws.write(3, 1, 7)
    ws.write(4, 0, "DIV-1")
    ws.write_formula(4, 1, "=1/0", None, "#DIV/0!")
    ws.write(5, 0, "OK-2")
    ws.write(5, 1, 9)
    ws.write_formula(5, 2, "=1+", None, "#NAME?")  # an unused column: just empty
    wb.close()
    return out.getvalue()


def first_sheet_empty() -> bytes:
    def build(wb: object) -> None:
        wb.active.title = "Notes"  # type: ignore[attr-defined]
        other = wb.create_sheet("Stock")  # type: ignore[attr-defined]
        other.append(["sku", "quantity"])
        other.append(["A-1", 3])
        wb.create_sheet("Archive")  # type: ignore[attr-defined]

    return xlsx_bytes(build)


def truncated_xlsx() -> bytes:
    def build(wb: object) -> None:
        for i in range(200):
            wb.active.append([f"SKU-{i}", i, "x" * 40])  # type: ignore[attr-defined]

    data = xlsx_bytes(build)
    return data[: len(data) * 2 // 3]


def garbage_xlsx() -> bytes:
    """A zip that holds a workbook's parts, but the sheet is not XML."""
    def build(wb: object) -> None:
        wb.active.append(["sku", "quantity"])  # type: ignore[attr-defined]

    return rewrite_zip(xlsx_bytes(build), {"xl/worksheets/sheet1.xml": b"\x00\x01garbage<<<"})


_ODS_NS = ('xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0" '
           'xmlns:table="urn:oasis:names:tc:opendocument:xmlns:table:1.0" '
           'xmlns:text="urn:oasis:names:tc:opendocument:xmlns:text:1.0" '
           'xmlns:calcext="urn:org:documentfoundation:names:experimental:calc:xmlns:calcext:1.0" '
           'xmlns:of="urn:oasis:names:tc:opendocument:xmlns:of:1.2"')


def ods(rows: list[list[str]], *, mimetype: bool = True) -> bytes:
    """An OpenDocument spreadsheet as LibreOffice writes one (cells given as XML)."""
    body = "".join("<table:table-row>" + "".join(r) + "</table:table-row>" for r in rows)
    content = (f'<?xml version="1.0" encoding="UTF-8"?><office:document-content {_ODS_NS} '
               f'office:version="1.2"><office:body><office:spreadsheet><table:table '
               f'table:name="Stock">{body}</table:table></office:spreadsheet></office:body>'
               f'</office:document-content>')
    manifest = ('<?xml version="1.0" encoding="UTF-8"?><manifest:manifest xmlns:manifest='
                '"urn:oasis:names:tc:opendocument:xmlns:manifest:1.0" manifest:version="1.2">'
                '<manifest:file-entry manifest:full-path="/" manifest:media-type="application/'
                'vnd.oasis.opendocument.spreadsheet"/><manifest:file-entry manifest:full-path='
                '"content.xml" manifest:media-type="text/xml"/></manifest:manifest>')
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        if mimetype:
            zf.writestr(zipfile.ZipInfo("mimetype"),
                        "application/vnd.oasis.opendocument.spreadsheet")
        zf.writestr("META-INF/manifest.xml", manifest)
        zf.writestr("content.xml", content, compress_type=zipfile.ZIP_DEFLATED)
    return out.getvalue()


def encrypted_ods() -> bytes:
    """An OpenDocument spreadsheet saved with a password: its parts are encrypted and the
    manifest says how."""
    data = ods([[_s("sku"), _s("quantity")]])
    manifest = ('<?xml version="1.0" encoding="UTF-8"?><manifest:manifest xmlns:manifest='
                '"urn:oasis:names:tc:opendocument:xmlns:manifest:1.0" manifest:version="1.2">'
                '<manifest:file-entry manifest:full-path="/" manifest:media-type="application/'
                'vnd.oasis.opendocument.spreadsheet"/><manifest:file-entry manifest:full-path='
                '"content.xml" manifest:media-type="text/xml" manifest:size="900">'
                '<manifest:encryption-data manifest:checksum-type="SHA1/1K" manifest:checksum='
                '"AAAA"><manifest:algorithm manifest:algorithm-name="Blowfish CFB" '
                'manifest:initialisation-vector="AAAA"/></manifest:encryption-data>'
                '</manifest:file-entry></manifest:manifest>')
    return rewrite_zip(data, {"META-INF/manifest.xml": manifest.encode(),
                              "content.xml": bytes(range(256)) * 4})


def _s(text: str) -> str:
    return ('<table:table-cell office:value-type="string" calcext:value-type="string">'
            f"<text:p>{text}</text:p></table:table-cell>")


def _n(value: int) -> str:
    return (f'<table:table-cell office:value-type="float" office:value="{value}" '
            f'calcext:value-type="float"><text:p>{value}</text:p></table:table-cell>')


def _b(value: str) -> str:
    return (f'<table:table-cell office:value-type="boolean" office:boolean-value="{value}" '
            f'calcext:value-type="boolean"><text:p>{value.upper()}</text:p></table:table-cell>')


def _error(text: str) -> str:
    return ('<table:table-cell table:formula="of:=NA()" office:value-type="string" '
            'office:string-value="" calcext:value-type="error">'
            f"<text:p>{text}</text:p></table:table-cell>")


def _odd(text: str) -> str:
    """A cell of a value type the Excel reader does not know (it drops it)."""
    return f'<table:table-cell office:value-type="weird"><text:p>{text}</text:p></table:table-cell>'


ODS_ROWS = [[_s("sku"), _s("quantity"), _s("active")], [_s("A-1"), _n(5), _b("true")],
            [_s("A-2"), _error("#N/A"), _b("false")], [_odd("A-3"), _n(7)]]

FILES = {
    "odd-cells.ods": lambda: ods(ODS_ROWS),
    "no-mimetype.ods": lambda: ods(ODS_ROWS, mimetype=False),
    "password.ods": encrypted_ods,
    "unknown-types-only.ods": lambda: ods([[_odd("sku"), _odd("quantity")],
                                           [_odd("X-1"), _odd("4")]]),
    "looping-ole-chain.xls": looping_ole,
    "no-sheets.xlsx": no_sheets,
    "error-cells.xlsx": error_cells,
    "first-sheet-empty.xlsx": first_sheet_empty,
    "truncated.xlsx": truncated_xlsx,
    "garbage-sheet.xlsx": garbage_xlsx,
    "sylk-named.csv": lambda: b"ID;PWXL;N;E\r\nC;Y1;X1;K\"sku\"\r\nC;X2;K\"quantity\"\r\nE\r\n",
    "utf32.csv": lambda: "sku,quantity\nA-1,5\n".encode("utf-32"),
    "excel4.xls": lambda: struct.pack("<HHHH", 0x0409, 6, 0, 0x0010) + b"\0\0" + b"\0" * 64,
    "latin1-copyright.csv": lambda: b"sku,quantity,note\nA-1,5,Acme \xa9 2020\nA-2,7,plain\n",
    "shopify-products.csv": lambda: (
        b"Handle,Title,Option1 Name,Option1 Value,Variant SKU,Variant Grams,"
        b"Variant Inventory Tracker,Variant Inventory Qty,Variant Price,Image Src\n"
        b"shirt,Shirt,Size,S,SH-S,200,shopify,5,10.00,https://x/a.jpg\n"
        b"shirt,,Size,M,SH-M,200,shopify,7,10.00,\n"
        b",,,,,,,,,https://x/b.jpg\n"),
    "shopify-inventory-old.csv": lambda: (
        b"Handle,Title,Option1 Name,Option1 Value,Option2 Name,Option2 Value,Option3 Name,"
        b"Option3 Value,SKU,HS Code,COO,Shop location,Warehouse 2\n"
        b"shirt,Shirt,Size,S,,,,,SH-S,,,5,not stocked\n"),
    "headers-without-names.csv": lambda: b"Artikel,,Anzahl,\nA-1,x,5,\nA-2,y,7,\n",
}


def libreoffice_copies() -> None:
    """``error-cells.xlsx`` saved by LibreOffice as .xls and .ods (when it is installed:
    ``apt-get install libreoffice-calc-nogui``), the files people's exports look like."""
    import shutil
    import subprocess
    import tempfile

    soffice = shutil.which("soffice")
    if soffice is None:
        print("soffice not found: the LibreOffice copies are left as they are")
        return
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "error-cells-libreoffice.xlsx"
        source.write_bytes(error_cells())
        for fmt in ("xls", "ods"):
            subprocess.run([soffice, "--headless", "--norestore",
                            f"-env:UserInstallation=file://{tmp}/profile", "--convert-to", fmt,
                            "--outdir", str(OUT), str(source)], check=True, timeout=300,
                           capture_output=True)


def main() -> int:
    OUT.mkdir(exist_ok=True)
    for name, make in FILES.items():
        (OUT / name).write_bytes(make())  # type: ignore[no-untyped-call]
    libreoffice_copies()
    xls = OUT / "error-cells-libreoffice.xls"
    if xls.exists():
        # An OLE workbook that ends with a zip (Excel embeds themes so): still an .xls.
        theme = io.BytesIO()
        with zipfile.ZipFile(theme, "w") as zf:
            zf.writestr("[Content_Types].xml", "<Types/>")
            zf.writestr("theme/theme/theme1.xml", "<a:theme/>")
        (OUT / "xls-ending-with-a-zip.xls").write_bytes(xls.read_bytes() + theme.getvalue())
    print(f"wrote {len(FILES)} files to {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
