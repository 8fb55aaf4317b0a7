"""Plain messages for people: each reason code's sentence and its fix, made vectorised.

The words themselves live beside the reason codes (:data:`invsync.rules.stock.REASONS`);
this module turns them into one message per rejected row with polars expressions (no
Python loop per row), groups problems by kind for the summaries, suggests the SKU a
typo meant, and says how a run ended in one sentence that adds up.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from string import Formatter
from typing import Any

import polars as pl

from invsync.rules.numbers import is_grouped, quantity_hint
from invsync.rules.stock import REASONS

FALLBACK = ("A row that could not be used", "see the message and correct the row")
"""(kind, fix) of a reason code this version does not know."""

_UNIT = r"^\s*([+-]?\d+)\s*[^\d\s.,+\-][^\d]*$"
"""A number followed by a unit or a word: ``12 pcs``, ``12pcs``, ``12 Stück``."""
_DECIMAL = r"^\s*(\d+)[.,](\d+)\s*$"


def render(code: pl.Expr, fields: Mapping[str, pl.Expr],
           templates: Mapping[str, str] | None = None) -> pl.Expr:
    """Fill each row's template (chosen by ``code``) with the ``fields`` expressions.

    Templates use ``{name}`` placeholders; a null field is written as empty text.
    """
    templates = templates if templates is not None else {c: r.message
                                                         for c, r in REASONS.items()}
    expr: Any = None
    for name, template in templates.items():
        parts: list[pl.Expr] = []
        for literal, field_name, _, _ in Formatter().parse(template):
            if literal:
                parts.append(pl.lit(literal))
            if field_name is not None:
                parts.append(fields[field_name].cast(pl.String).fill_null(""))
        text = pl.concat_str(parts) if parts else pl.lit("")
        expr = (pl.when(code == name) if expr is None else expr.when(code == name)).then(text)
    if expr is None:
        return pl.lit(None, pl.String)
    filled: pl.Expr = expr.otherwise(pl.lit(None, pl.String))
    return filled


def quantity_fields(text: pl.Expr) -> dict[str, pl.Expr]:
    """``nature`` and ``hint`` for a quantity that is not a whole number.

    ``12 pcs`` -> "a number" / "write 12"; ``3.5`` -> "a whole number" / "write 3 or 4";
    ``1,234`` and ``1.204`` -> "did you mean 1204? ..." (a dot before three digits groups
    thousands as often as it marks decimals: never "write 1 or 2"); anything else -> the
    general fix. The precise hints are :func:`invsync.rules.numbers.quantity_hint`'s.
    """
    unit = text.str.extract(_UNIT, 1).str.strip_prefix("+")
    decimal = text.str.extract(_DECIMAL, 1)
    grouped = is_grouped(text)
    plain_number = text.str.replace_all(r"[^\d]", "")
    whole = decimal.cast(pl.Int64, strict=False)
    general = (
        pl.when(unit.is_not_null()).then(pl.lit("write ") + unit)
        .when(grouped).then(pl.format("did you mean {}? Write it without separators",
                                      plain_number))
        .when(whole.is_not_null()).then(pl.format("write a whole number: {} or {}", whole,
                                                  whole + 1))
        .otherwise(pl.lit("write how many are in stock as a whole number, such as 12")))
    hint = pl.coalesce(quantity_hint(text), general)
    decimal_only = decimal.is_not_null() & ~grouped & ~is_grouped(text).fill_null(False)
    nature = pl.when(decimal_only).then(pl.lit("a whole number")).otherwise(pl.lit("a number"))
    return {"hint": hint, "nature": nature}


def thousands(count: pl.Expr) -> pl.Expr:
    """A count as text with thousands separators (``4,995``)."""
    text = count.cast(pl.String)
    return text.str.reverse().str.replace_all(r"(\d{3})", "$1,").str.reverse()\
        .str.strip_prefix(",")


def rows_phrase(rows: pl.Expr, count: pl.Expr) -> pl.Expr:
    """Name a group's rows, bounded: ``row 11 and row 13``, ``rows 2, 4 and 7``, or
    ``rows 2, 3, 4, 5, 6 and 4,995 more (5,000 rows)``.

    ``rows`` is a list of the group's first few row numbers (sorted), ``count`` its size.
    """
    shown = rows.list.len()
    texts = rows.cast(pl.List(pl.String))
    head = texts.list.head(shown - 1).list.join(", ")
    last = texts.list.last()
    return (
        pl.when(count == 1).then(pl.lit("row ") + last)
        .when(count == 2).then(pl.format("row {} and row {}", texts.list.first(), last))
        .when(count == shown).then(pl.format("rows {} and {}", head, last))
        .otherwise(pl.format("rows {} and {} more ({} rows)", texts.list.join(", "),
                             thousands(count - shown), thousands(count))))


def kind_of(code: str | None) -> tuple[str, str]:
    """(the kind of problem, what to do) for a reason code, for headings and the web page."""
    reason = REASONS.get(code or "")
    if reason is None or not reason.kind:
        return FALLBACK
    return reason.kind, reason.fix


def did_you_mean(unknown: Iterable[str], known: pl.Series, *, limit: int = 200,
                 pool: int = 2_000) -> dict[str, str]:
    """The known SKU each unknown one most likely meant (``BEANIE-148-YELOW`` ->
    ``BEANIE-148-YELLOW``), for at most ``limit`` unknown SKUs.

    The cost stays bounded for a large catalog: a vectorised filter keeps candidates of a
    similar length sharing their first or last characters (two, or more while that leaves
    more than ``pool``), at most ``pool`` of them, and
    :mod:`difflib` compares only those. A difference of case alone is matched first.
    """
    names = known.cast(pl.String).drop_nulls().unique(maintain_order=True)
    if names.is_empty():
        return {}
    catalog = pl.DataFrame({"sku": names}).with_columns(
        upper=pl.col("sku").str.to_uppercase(),
        length=pl.col("sku").str.len_chars().cast(pl.Int64))
    out: dict[str, str] = {}
    for sku in list(dict.fromkeys(s for s in unknown if s))[:limit]:
        target = sku.upper()
        near = catalog.filter(((pl.col("length") - len(sku)).abs() <= 2)
                              & (pl.col("sku") != sku))
        # Narrow to a longer shared start or end until the pool is small enough.
        k = 2
        while True:
            pool_k = near.filter(pl.col("upper").str.starts_with(target[:k])
                                 | pl.col("upper").str.ends_with(target[-k:]))
            if pool_k.height <= pool or k >= len(target):
                near = pool_k.head(pool)
                break
            near, k = pool_k, k + 2
        if near.is_empty():
            continue
        uppers = near["upper"].to_list()
        if target in uppers:
            out[sku] = near["sku"][uppers.index(target)]
            continue
        best = difflib.get_close_matches(target, uppers, n=1, cutoff=0.8)
        if best:
            out[sku] = near["sku"][uppers.index(best[0])]
    return out


@dataclass(frozen=True)
class ProblemGroup:
    """Rejected rows of one kind: how many, one example, what to do."""

    code: str
    kind: str
    count: int
    example: str
    example_row: Any
    fix: str


def problem_groups(by_reason: Mapping[str, Any],
                   rejected: Sequence[Mapping[str, Any]]) -> list[ProblemGroup]:
    """Group the rejected rows by kind (most rows first), with the first row as example."""
    first: dict[str, Mapping[str, Any]] = {}
    for rec in rejected:
        first.setdefault(str(rec.get("reason")), rec)
    groups = []
    for code, count in by_reason.items():
        kind, fix = kind_of(code)
        rec = first.get(code) or {}
        groups.append(ProblemGroup(code=code, kind=kind,
                                   count=count if isinstance(count, int) else 0,
                                   example=str(rec.get("message") or ""),
                                   example_row=rec.get("row"), fix=fix))
    return groups


def _n(count: int, one: str, many: str | None = None) -> str:
    return f"{count:,} {one if count == 1 else (many or one + 's')}"


def outcome_sentence(counts: Mapping[str, Any], status: str,
                     rejected_file: str | None = None) -> str:
    """How a run ended, in words whose numbers add up to the rows read.

    ``15 rows: 10 updated, 5 need fixing (see rejected.xlsx)``. Each row is updated (or
    would be, in a dry run), already right, merged into another row, not confirmed, not
    sent, not checked (the run stopped first), or needs fixing (rejected, or refused by
    the store).
    """
    def get(key: str) -> int:
        value = counts.get(key)
        return value if isinstance(value, int) else 0

    rows, invalid, refused, zeroed = get("rows"), get("invalid"), get("refused"), \
        get("zeroed_missing")
    changed, unchanged, merged = get("changed"), get("unchanged"), get("merged")
    if status == "dry_run":
        parts = [(changed, "would be updated")]
    else:
        unconfirmed, not_sent = get("unconfirmed"), get("not_sent")
        # Items --zero-missing added are not rows of the file: count them apart.
        updated = max(0, changed - refused - unconfirmed - not_sent) if zeroed \
            else get("accepted")
        parts = [(updated, "updated"), (unconfirmed, "not confirmed by the store"),
                 (not_sent, "not sent")]
    parts[1:1] = [(unchanged, "already right"), (merged, "merged into another row"),
                  (get("location_unchecked"),
                   "kept for the store to check their location (named, not numbered)")]
    parts.append((get("unchecked"), "not checked (the run stopped first)"))
    words = [f"{n:,} {label}" for n, label in parts if n]
    fixing = invalid + refused
    if fixing:
        detail = f"{fixing:,} need{'s' if fixing == 1 else ''} fixing"
        if refused:
            detail += (f" ({refused:,} refused by the store)" if invalid
                       else " (refused by the store)")
        if rejected_file:
            detail += f" (see {rejected_file})"
        words.append(detail)
    text = _n(rows, "row") + (": " + ", ".join(words) if words else "")
    if zeroed:
        verb = "would be set" if status == "dry_run" else "set"
        text += f"; {_n(zeroed, 'item')} not in the file {verb} to 0"
    return text


def refused_messages(refused: pl.DataFrame, known: Sequence[pl.DataFrame | None] = ()
                     ) -> pl.Series:
    """The plain message of each item the store refused, with a "did you mean".

    ``refused`` has ``address`` (how the row named the item: ``sku``, ...),
    ``address_key`` (its SKU or id) and ``message`` (the store's words). ``known`` are
    frames of items the store is known to have (the snapshot, live levels: ``identifier``
    and ``item_key``); a refused SKU that is not one of them gets the nearest that is.
    """
    frames = [k.filter(pl.col("identifier") == "sku").select(pl.col("item_key").cast(pl.String))
              for k in known if k is not None and {"identifier", "item_key"} <= set(k.columns)]
    catalogue = pl.concat(frames).to_series() if frames else pl.Series("item_key", [],
                                                                        pl.String)
    skus = refused.filter(pl.col("address") == "sku")["address_key"].drop_nulls()
    unknown = skus.filter(~skus.is_in(catalogue.implode())) if len(catalogue) else skus
    guesses = did_you_mean(unknown.unique(maintain_order=True).to_list(), catalogue)
    guess = pl.col("address_key").replace_strict(guesses, default=None, return_dtype=pl.String)
    hint = pl.when((pl.col("address") == "sku") & guess.is_not_null())\
        .then(pl.format("did you mean '{}'? Correct the SKU", guess))\
        .otherwise(pl.lit(REASONS["refused_by_store"].fix))
    return refused.select(render(pl.lit("refused_by_store"), {
        "value": pl.col("address_key"), "detail": pl.col("message"), "hint": hint,
    }, {"refused_by_store": REASONS["refused_by_store"].message})).to_series()
