"""(Re)create invsync's sample data, deterministically.

    python sample_data/generate.py

writes, next to this script:

    catalog.csv    the sandbox store's catalog (sku, product_id, variant_id, tracking)
    night1.csv     a nightly warehouse export, locations 1 and 2, every row valid
    night2.csv     the next night: about 3% of the quantities changed, same row order
    merchant.xlsx  a hand-edited workbook with a dozen deliberate, documented mistakes
    README.md      what each file is, and each mistake with its Excel row number

Only the standard library and xlsxwriter are used. The seed is fixed and the workbook's
metadata dates are pinned, so running it twice gives byte-identical files.
"""

from __future__ import annotations

import csv
import datetime as dt
import itertools
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import xlsxwriter

SEED = 20241127
HERE = Path(__file__).resolve().parent

N_VARIANT_PRODUCTS = 400
N_PRODUCT_PRODUCTS = 500
LOCATIONS = (1, 2)
NIGHT2_CHANGED_SHARE = 0.03
FIRST_PRODUCT_ID = 100
FIRST_VARIANT_ID = 1000

# --------------------------------------------------------------------------------------
# Catalog vocabulary
# --------------------------------------------------------------------------------------

COLORS = [
    ("RED", "Red"),
    ("BLUE", "Blue"),
    ("NAVY", "Navy"),
    ("BLACK", "Black"),
    ("WHITE", "White"),
    ("GREY", "Grey"),
    ("GREEN", "Green"),
    ("OLIVE", "Olive"),
    ("PINK", "Pink"),
    ("YELLOW", "Yellow"),
    ("BURG", "Burgundy"),
    ("SAND", "Sand"),
]
SIZES = [("XS", "XS"), ("S", "S"), ("M", "M"), ("L", "L"), ("XL", "XL"), ("XXL", "XXL")]
SHOE_SIZES = [(str(n), f"EU {n}") for n in range(37, 47)]
WAISTS = [(str(n), f"W{n}") for n in range(28, 40, 2)]
PHONES = [
    ("IP13", "iPhone 13"),
    ("IP14", "iPhone 14"),
    ("IP15", "iPhone 15"),
    ("GS23", "Galaxy S23"),
    ("GS24", "Galaxy S24"),
    ("PX8", "Pixel 8"),
]
TOWEL_SIZES = [("HAND", "hand"), ("BATH", "bath"), ("SHEET", "bath sheet")]
BED_SIZES = [("SGL", "single"), ("DBL", "double"), ("KING", "king")]

# code, display name, option axes (each axis a list of (sku code, label))
VARIANT_CATEGORIES = [
    ("TSHIRT", "T-Shirt", [COLORS, SIZES]),
    ("HOODIE", "Hoodie", [COLORS, SIZES]),
    ("POLO", "Polo Shirt", [COLORS, SIZES]),
    ("DRESS", "Dress", [COLORS, SIZES]),
    ("JACKET", "Jacket", [COLORS, SIZES]),
    ("LEGGINGS", "Leggings", [COLORS, SIZES]),
    ("JEANS", "Jeans", [[("INDIGO", "Indigo"), ("BLACK", "Black"), ("STONE", "Stone")], WAISTS]),
    ("SNEAKER", "Sneaker", [COLORS, SHOE_SIZES]),
    ("SOCK", "Socks 3-pack", [COLORS, [("S", "S"), ("M", "M"), ("L", "L")]]),
    ("CAP", "Cap", [COLORS]),
    ("BEANIE", "Beanie", [COLORS]),
    ("CASE", "Phone Case", [PHONES, COLORS]),
    ("TOWEL", "Towel", [COLORS, TOWEL_SIZES]),
    ("SHEET", "Fitted Sheet", [COLORS, BED_SIZES]),
    ("BACKPACK", "Backpack", [COLORS]),
]
STYLE_WORDS = [
    "Classic",
    "Essential",
    "Organic",
    "Heavyweight",
    "Relaxed",
    "Slim",
    "Vintage",
    "Everyday",
    "Performance",
    "Recycled",
    "Premium",
    "Studio",
    "Trail",
    "Harbor",
    "Nordic",
]

# code, names; products tracked by product have one row each
PRODUCT_CATEGORIES = [
    ("MUG", ["Ceramic Mug 11oz", "Enamel Camp Mug", "Travel Mug 16oz", "Espresso Cup Set"]),
    ("BOTTLE", ["Steel Water Bottle 750ml", "Glass Bottle 1L", "Kids Bottle 350ml"]),
    ("CANDLE", ["Soy Candle Vanilla", "Soy Candle Cedar", "Tea Light Pack 24"]),
    ("NB", ["Notebook A5 Dotted", "Notebook A4 Ruled", "Pocket Notebook 3-pack"]),
    ("PEN", ["Gel Pen Black", "Fountain Pen", "Highlighter Set 6"]),
    ("POSTER", ["Poster 50x70 Mountains", "Poster 30x40 Botanical", "Art Print A3"]),
    ("TOTE", ["Canvas Tote Bag", "Jute Shopper", "Foldable Tote"]),
    ("UMB", ["Compact Umbrella", "Golf Umbrella"]),
    ("KEYR", ["Leather Keyring", "Bottle Opener Keyring"]),
    ("LAMP", ["Desk Lamp LED", "Clip Lamp", "Bedside Lamp Linen"]),
    ("PILLOW", ["Cushion Cover 45x45", "Memory Foam Pillow"]),
    ("BLKT", ["Wool Throw Blanket", "Fleece Blanket"]),
    ("TEA", ["Green Tea 20 bags", "Earl Grey Loose 100g", "Chamomile 20 bags"]),
    ("COF", ["Coffee Beans 250g", "Ground Coffee 500g", "Decaf Beans 250g"]),
    ("SOAP", ["Olive Soap Bar", "Hand Soap Refill 1L", "Shampoo Bar"]),
    ("GAME", ["Card Game", "Puzzle 1000pc", "Wooden Chess Set"]),
]
# Descriptions that stress CSV parsing: commas, quotes, non-ASCII. Used once each.
AWKWARD_NAMES = [
    ("MUG", "Mug, ceramic, 11oz"),
    ("TOTE", 'Tablet Sleeve 10"'),
    ("MUG", "Café au lait Bowl"),
    ("SOAP", "Crème Hand Cream 75ml"),
    ("POSTER", 'Poster "Sunset", 50x70'),
    ("NB", "Größe-Guide Notebook"),
    ("GAME", "Salt & Pepper Mill Set"),
    ("BOTTLE", "Kid's Lunch Box"),
    ("GAME", "Smørrebrød Board, oak"),
    ("LAMP", "Plant Pot Ø12cm"),
]
# Purely numeric / leading-zero SKUs (all tracked by product). "123" and "00123" are two
# different products on purpose: a reader that parses SKUs as numbers merges them.
SPECIAL_NUMERIC_SKUS = [
    ("00123", "Replacement Filter 3-pack"),
    ("123", "Filter Holder"),
    ("004711", "Eau de Cologne 100ml"),
    ("000987", "Cotton Buds 200"),
    ("0815", "Spare Batteries AA 4"),
    ("07734", "Shoe Polish Black"),
    ("00042", "Towel Hook Steel"),
]
N_EAN13 = 40
N_UPCA = 12

NONE_TRACKED = [
    ("GIFTCARD-DIGITAL", "Digital Gift Card"),
    ("EBOOK-CARE-GUIDE", "Garment Care Guide (e-book)"),
    ("SVC-GIFTWRAP", "Gift Wrapping"),
    ("SVC-ENGRAVING", "Engraving Service"),
    ("DONATION-5", "Donation 5 EUR"),
]


@dataclass(frozen=True)
class Item:
    sku: str
    product_id: int
    variant_id: int
    tracking: str  # "variant" | "product" | "none"
    name: str


def _gtin_check_digit(body: str) -> str:
    """GS1 check digit for a GTIN body (EAN-13 body of 12, UPC-A body of 11)."""
    total = sum(int(d) * (3 if i % 2 == 0 else 1) for i, d in enumerate(reversed(body)))
    return str((10 - total % 10) % 10)


def _variant_specs(rng: random.Random) -> list[tuple[str, list[tuple[str, str]]]]:
    """Products tracked by variant: 2-6 variants, skewed low so the catalog totals ~1,600."""
    specs: list[tuple[str, list[tuple[str, str]]]] = []
    used_styles: set[tuple[str, int]] = set()
    for _ in range(N_VARIANT_PRODUCTS):
        code, label, axes = rng.choice(VARIANT_CATEGORIES)
        while True:
            style = rng.randint(100, 999)
            if (code, style) not in used_styles:
                used_styles.add((code, style))
                break
        word = rng.choice(STYLE_WORDS)
        combos = list(itertools.product(*axes))
        n = rng.choices([2, 3, 4, 5, 6], weights=[55, 27, 10, 5, 3])[0]
        n = min(n, len(combos))
        picked = sorted(rng.sample(range(len(combos)), n))
        rows = []
        for idx in picked:
            combo = combos[idx]
            sku = "-".join([code, str(style), *(c for c, _ in combo)])
            name = f"{word} {label} - " + " / ".join(lbl for _, lbl in combo)
            rows.append((sku, name))
        specs.append(("variant", rows))
    return specs


def _product_rows(rng: random.Random) -> list[tuple[str, str]]:
    """Products tracked by product, one row each: special numeric SKUs, EAN-13, UPC-A, names."""
    product_rows: list[tuple[str, str]] = list(SPECIAL_NUMERIC_SKUS)
    for _ in range(N_EAN13):
        while True:
            body = rng.choice(["40", "50", "87", "76", "90"]) + "".join(
                str(rng.randint(0, 9)) for _ in range(10)
            )
            sku = body + _gtin_check_digit(body)
            if sku not in {s for s, _ in product_rows}:
                break
        _, names = rng.choice(PRODUCT_CATEGORIES)
        product_rows.append((sku, rng.choice(names)))
    for _ in range(N_UPCA):
        # UPC-A codes starting with 0: Excel and naive CSV readers eat that zero.
        body = "0" + "".join(str(rng.randint(0, 9)) for _ in range(10))
        _, names = rng.choice(PRODUCT_CATEGORIES)
        product_rows.append((body + _gtin_check_digit(body), rng.choice(names)))
    taken = {s for s, _ in product_rows}
    pending = list(AWKWARD_NAMES)  # hand these out first, then generic names
    while len(product_rows) < N_PRODUCT_PRODUCTS:
        if pending:
            code, name = pending.pop(0)
        else:
            code, names = rng.choice(PRODUCT_CATEGORIES)
            name = rng.choice(names)
        sku = f"{code}-{rng.randint(1, 9999):04d}"
        while sku in taken:
            sku = f"{code}-{rng.randint(1, 9999):04d}"
        taken.add(sku)
        product_rows.append((sku, name))
    return product_rows


def build_catalog(rng: random.Random) -> list[Item]:
    # Each product spec: (tracking, [ (sku, name), ... ])
    specs = _variant_specs(rng)
    specs += [("product", [(sku, name)]) for sku, name in _product_rows(rng)]
    specs += [("none", [(sku, name)]) for sku, name in NONE_TRACKED]

    # Interleave the three kinds, then hand out ids in that order (with occasional gaps,
    # as deleted products leave them in a real store).
    rng.shuffle(specs)
    items: list[Item] = []
    used_skus: set[str] = set()
    pid, vid = FIRST_PRODUCT_ID, FIRST_VARIANT_ID
    for tracking, rows in specs:
        for sku, name in rows:
            assert sku not in used_skus, sku
            used_skus.add(sku)
            items.append(Item(sku, pid, vid, tracking, name))
            vid += 1 + (rng.random() < 0.05) * rng.randint(1, 4)
        pid += 1 + (rng.random() < 0.05) * rng.randint(1, 3)
    return items


def write_catalog(items: list[Item], path: Path) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["sku", "product_id", "variant_id", "tracking"])
        for it in items:
            w.writerow([it.sku, it.product_id, it.variant_id, it.tracking])


# --------------------------------------------------------------------------------------
# Nightly exports
# --------------------------------------------------------------------------------------


def _quantity(rng: random.Random, location: int) -> int:
    r = rng.random()
    if r < 0.08:
        q = 0
    elif r < 0.72:
        q = rng.randint(1, 40)
    elif r < 0.94:
        q = rng.randint(41, 150)
    else:
        q = rng.randint(151, 500)
    if location == 2 and q > 0 and rng.random() < 0.5:  # the smaller warehouse
        q = max(1, q // 3)
    return q


def build_night1(rng: random.Random, items: list[Item]) -> list[list]:
    tracked = sorted((it for it in items if it.tracking != "none"), key=lambda it: it.sku)
    return [[it.sku, loc, _quantity(rng, loc), it.name] for loc in LOCATIONS for it in tracked]


def build_night2(rng: random.Random, night1: list[list]) -> tuple[list[list], dict[str, int]]:
    rows = [list(r) for r in night1]
    n_change = round(len(rows) * NIGHT2_CHANGED_SHARE)
    n_zero = n_change // 3
    order = list(range(len(rows)))
    rng.shuffle(order)
    zeroed = rises = 0
    for i in order:
        if zeroed + rises == n_change:
            break
        q = rows[i][2]
        if zeroed < n_zero and q > 0:
            rows[i][2] = 0
            zeroed += 1
        elif rises < n_change - n_zero and q < 500:
            rows[i][2] = min(500, q + rng.randint(5, 120))
            rises += 1
    return rows, {"changed": zeroed + rises, "to_zero": zeroed, "rises": rises}


def write_night(rows: list[list], path: Path) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["sku", "location_id", "quantity", "description"])
        w.writerows(rows)


# --------------------------------------------------------------------------------------
# Merchant workbook
# --------------------------------------------------------------------------------------

MISTAKES = {
    # Excel row -> mistake. Rows not listed here hold sane updates (row 1 is the header).
    6: "float_12",
    9: "q_12_5",
    13: "q_negative",
    17: "q_empty",
    20: "q_text",
    24: "unknown_sku",
    27: "dup_a",
    30: "blank",
    33: "no_sku",
    37: "leading_zero",
    41: "dup_b",
    45: "location_3",
}
N_SANE = 40
LEADING_ZERO_SKU = "00123"
UNKNOWN_SKU = "DISCONTINUED-9"
SANE_NOTES = ["recount Mon", "shelf B3", "from returns", "new delivery", "checked twice"]


@dataclass
class MerchantRow:
    excel_row: int
    kind: str  # "sane" or a MISTAKES value
    sku: str | None
    location: int | None
    quantity: int | float | str | None  # int/float: number cell, str: text cell, None: none
    note: str | None
    expect: str  # what invsync should do


def build_merchant(rng: random.Random, items: list[Item]) -> list[MerchantRow]:
    candidates = [
        it for it in items if it.tracking != "none" and it.sku not in (LEADING_ZERO_SKU, "123")
    ]
    # Sane rows, the 12.0 row and the duplicate pair each get their own distinct SKU.
    # One sane row is an EAN-13 (purely numeric) SKU, stored as text like every SKU.
    ean = rng.choice([it for it in candidates if len(it.sku) == 13 and it.sku.isdigit()])
    picked = rng.sample([it for it in candidates if it is not ean], N_SANE + 1)
    picked.insert(rng.randrange(N_SANE), ean)
    sane_items, float_item, dup_item = picked[:N_SANE], picked[N_SANE], picked[N_SANE + 1]
    dup_q = rng.randint(5, 60)
    bad_skus = iter(rng.sample([it.sku for it in candidates if it not in picked], 5))

    # Each mistake: (sku, location, quantity, note, what invsync should do); called only
    # for the rows that have it, in row order (next(bad_skus) draws in that order).
    mistakes: dict[str, Callable[[], tuple[Any, ...]]] = {
        "float_12": lambda: (float_item.sku, 1, 12.0, None,
                             "valid: quantity read as 12 (a whole number stored as a float)"),
        "q_12_5": lambda: (next(bad_skus), 1, 12.5, "half a box?",
                           "reject: quantity is not a whole number"),
        "q_negative": lambda: (next(bad_skus), 1, -3, "3 damaged",
                               "reject: quantity is negative"),
        "q_empty": lambda: (next(bad_skus), 1, None, "count later",
                            "reject: quantity missing (never read as 0)"),
        "q_text": lambda: (next(bad_skus), 1, "lots", None, "reject: quantity is not a number"),
        "unknown_sku": lambda: (UNKNOWN_SKU, 1, 4, "old line, still in stockroom",
                                "passes local checks; the store answers 422 (unknown SKU): "
                                "reject this row only, the rest of its batch is applied"),
        "dup_a": lambda: (dup_item.sku, 1, dup_q, None,
                          "reject: same SKU + location as row {other}, with a different "
                          "quantity; neither row is sent"),
        "dup_b": lambda: (dup_item.sku, 1, dup_q + 7, "recounted",
                          "reject: same SKU + location as row {other}; neither row is sent"),
        "blank": lambda: (None, None, None, None,
                          "skip silently: not a rejection, later rows keep their numbers"),
        "no_sku": lambda: (None, 1, 5, "label fell off", "reject: SKU missing"),
        "leading_zero": lambda: (LEADING_ZERO_SKU, 1, 30, None,
                                 f"valid: SKU stays the text {LEADING_ZERO_SKU!r} (catalog also "
                                 "has SKU '123', a different product)"),
        "location_3": lambda: (next(bad_skus), 3, 8, "shop floor",
                               "location 3 is disabled: rejected before sending (invsync reads "
                               "the store's locations once per run; the store would answer "
                               "422): reject this row only"),
    }

    def mistake(kind: str, row: int) -> MerchantRow:
        return MerchantRow(row, kind, *mistakes[kind]())

    rows: list[MerchantRow] = []
    sane_iter = iter(sane_items)
    last_row = 1 + N_SANE + len(MISTAKES)
    for excel_row in range(2, last_row + 1):
        kind = MISTAKES.get(excel_row)
        if kind:
            rows.append(mistake(kind, excel_row))
        else:
            it = next(sane_iter)
            note = rng.choice(SANE_NOTES) if rng.random() < 0.2 else None
            rows.append(
                MerchantRow(excel_row, "sane", it.sku, 1, rng.randint(0, 200), note, "valid")
            )
    dup_rows = {r.kind: r.excel_row for r in rows if r.kind in ("dup_a", "dup_b")}
    for r in rows:
        if r.kind == "dup_a":
            r.expect = r.expect.format(other=dup_rows["dup_b"])
        elif r.kind == "dup_b":
            r.expect = r.expect.format(other=dup_rows["dup_a"])
    return rows


def write_merchant(rows: list[MerchantRow], path: Path) -> None:
    wb = xlsxwriter.Workbook(str(path))
    # Pin the metadata date so the file is byte-identical from run to run.
    wb.set_properties({"author": "Shop owner", "created": dt.datetime(2024, 11, 25, 9, 30)})
    bold = wb.add_format({"bold": True, "bg_color": "#DDEBF7"})
    one_decimal = wb.add_format({"num_format": "0.0"})
    highlight = wb.add_format({"bg_color": "#FFF2CC"})

    ws = wb.add_worksheet("Stock")
    ws.write_row(0, 0, ["SKU", "Location ID", "Quantity", "Notes"], bold)
    ws.set_column(0, 0, 22)
    ws.set_column(1, 2, 12)
    ws.set_column(3, 3, 30)
    ws.freeze_panes(1, 0)
    for r in rows:
        i = r.excel_row - 1
        if r.kind == "blank":
            # A row whose contents were deleted but whose highlight was left behind.
            for col in range(4):
                ws.write_blank(i, col, None, highlight)
            continue
        if r.sku is not None:
            ws.write_string(i, 0, r.sku)  # text cells, so '00123' keeps its zeros
        if r.location is not None:
            ws.write_number(i, 1, r.location)
        if isinstance(r.quantity, str):
            ws.write_string(i, 2, r.quantity)
        elif isinstance(r.quantity, float):
            ws.write_number(i, 2, r.quantity, one_decimal if r.quantity.is_integer() else None)
        elif isinstance(r.quantity, int):
            ws.write_number(i, 2, r.quantity)
        if r.note is not None:
            ws.write_string(i, 3, r.note)

    notes = wb.add_worksheet("Notes")
    notes.set_column(0, 0, 70)
    for i, line in enumerate(
        [
            "Stock count, back room + shop floor, week 47",
            "Only location 1 (main warehouse) unless said otherwise.",
            "SKU, Location ID, Quantity  <- do not rename these columns",
            "Ask Sam about the DISCONTINUED line before Friday.",
        ]
    ):
        notes.write_string(i, 0, line)
    notes.write_string(5, 0, "Total counted")
    notes.write_number(5, 1, 1234)
    wb.close()


# --------------------------------------------------------------------------------------
# README
# --------------------------------------------------------------------------------------


def write_readme(
    path: Path,
    items: list[Item],
    night1: list[list],
    night2_stats: dict[str, int],
    merchant: list[MerchantRow],
) -> None:
    by_tracking = {
        t: sum(1 for it in items if it.tracking == t) for t in ("variant", "product", "none")
    }
    n_products = len({it.product_id for it in items})
    var_products = len({it.product_id for it in items if it.tracking == "variant"})
    mistakes = [r for r in merchant if r.kind != "sane"]
    n_data = len(merchant)
    n_blank = sum(1 for r in merchant if r.kind == "blank")
    n_valid = sum(1 for r in merchant if r.expect.startswith("valid"))
    n_rejected = n_data - n_blank - n_valid

    def show_q(q: object) -> str:
        if q is None:
            return "(empty)"
        if isinstance(q, str):
            return f"text `{q}`"
        if isinstance(q, float) and q.is_integer():
            return f"`{q:.1f}` (number cell, format `0.0`)"
        return f"`{q}`"

    lines = [
        "# Sample data",
        "",
        "Generated by `python sample_data/generate.py` (fixed seed, stdlib `random` + xlsxwriter;",
        "running it again rewrites the same bytes). Do not edit the files by hand: change the",
        "script and re-run it.",
        "",
        "| file | what it is |",
        "| --- | --- |",
        f"| `catalog.csv` | The sandbox store's catalog: `sku,product_id,variant_id,tracking`. "
        f"{len(items)} inventory items from {n_products} products: "
        f"{by_tracking['variant']} variants of {var_products} products tracked by `variant`, "
        f"{by_tracking['product']} products "
        f"tracked by `product` (row = product with its base variant id), {by_tracking['none']} "
        f"tracked by `none` (gift card, services: never in a feed). Product ids from "
        f"{FIRST_PRODUCT_ID}, variant ids from {FIRST_VARIANT_ID}, with gaps. Includes purely "
        "numeric SKUs (EAN-13, UPC-A starting with `0`) and leading-zero SKUs (`00123`, "
        "`004711`, ...); `123` and `00123` are different products, so a reader that parses "
        "SKUs as numbers merges them. |",
        f"| `night1.csv` | A nightly warehouse export: `sku,location_id,quantity,description`, "
        f"{len(night1)} rows = every tracked item at locations 1 and 2, sorted by location then "
        "SKU. Quantities 0-500, skewed low, ~8% zero. `description` is free text (some with "
        "commas, quotes, non-ASCII) and must never be sent. Every row is valid. |",
        f"| `night2.csv` | The next night: same rows in the same order; {night2_stats['changed']} "
        f"quantities changed ({night2_stats['to_zero']} to 0, {night2_stats['rises']} rises), "
        "everything else identical. Syncing night1 then night2 should send exactly those. |",
        f"| `merchant.xlsx` | A hand-edited workbook. Sheet `Stock` has headers `SKU`, "
        "`Location ID`, `Quantity` (they normalise to `sku`, `location_id`, `quantity`) and an "
        f"extra `Notes` column; {n_data} data rows (Excel rows 2-{n_data + 1}), "
        f"{N_SANE} sane updates at location 1 plus the mistakes below. SKUs are text cells, "
        "numbers are number cells. A second sheet `Notes` holds free text and must be ignored. |",
        "| `generate.py` | The script that writes all of the above, this README included. |",
        "",
        "## The deliberate mistakes in `merchant.xlsx`",
        "",
        "Row numbers are as the user sees them in Excel (header = row 1).",
        "",
        "| row | SKU | Location ID | Quantity | what invsync should do |",
        "| --- | --- | --- | --- | --- |",
    ]
    for r in mistakes:
        sku = "(empty)" if r.sku is None else f"`{r.sku}`"
        loc = "(empty)" if r.location is None else str(r.location)
        if r.kind == "blank":
            sku = loc = "(empty)"
        lines.append(f"| {r.excel_row} | {sku} | {loc} | {show_q(r.quantity)} | {r.expect} |")
    lines += [
        "",
        f"Expected outcome: {n_data} data rows, {n_blank} blank row skipped, "
        f"{n_data - n_blank} rows read = {n_valid} valid + {n_rejected} rejected "
        f"({n_rejected - 1} by local validation, 1 by the store). The row the store refuses "
        "passes local checks on purpose: invsync must isolate it in the 422-rejected batch and "
        "still apply every other row of it.",
        "",
        "Notes: XLSX stores every number as a double, so the `12.0` cell is stored as `12` and "
        "only its `0.0` format shows the decimal. Depending on the reader and the other cells in "
        "the column a quantity arrives as int, float (`12.0`) or text (`'12'`; fastexcel turns "
        "this mixed column into strings): every form of a whole number is valid. "
        "The sandbox is expected to have locations "
        "1 and 2 enabled and location 3 disabled. `polars.read_excel` drops the blank row by "
        "default, which shifts every later row number by one: read with "
        "`drop_empty_rows=False` (or count rows yourself) so reported rows match Excel.",
        "",
    ]
    path.write_text("\n".join(lines), encoding="utf-8")


def main() -> None:
    rng = random.Random(SEED)
    items = build_catalog(rng)
    night1 = build_night1(rng, items)
    night2, stats = build_night2(rng, night1)
    merchant = build_merchant(rng, items)

    write_catalog(items, HERE / "catalog.csv")
    write_night(night1, HERE / "night1.csv")
    write_night(night2, HERE / "night2.csv")
    write_merchant(merchant, HERE / "merchant.xlsx")
    write_readme(HERE / "README.md", items, night1, stats, merchant)
    print(
        f"catalog.csv {len(items)} items; night1.csv/night2.csv {len(night1)} rows "
        f"({stats['changed']} changed); merchant.xlsx {len(merchant)} data rows"
    )


if __name__ == "__main__":
    main()
