"""Numbers as people write them: ``1.204`` in a German file, ``1,204``, ``12 pcs``.

Two small pieces the validation stage hooks in (kept apart so the parsing rule lives in one
place):

- :func:`read_by_convention`: when a file makes its number convention certain (a
  ``;``-separated file whose decimals use a comma), read ``1.204`` as 1204 and ``12,0`` as
  12; otherwise nothing is guessed.
- :func:`quantity_hint`: for a quantity that could not be read, a precise hint ("did you
  mean 1204?", "write 12"), or null where the general advice fits. A ``1.204`` never gets
  "write 1 or 2": a dot followed by exactly three digits is a thousands separator as often
  as a decimal point.
"""

from __future__ import annotations

import polars as pl

DOT_GROUPED = r"^\s*[+]?\d{1,3}(?:\.\d{3})+\s*$"
"""``1.204``, ``12.345.678``: thousands grouped with dots (German, Dutch, ...)."""
COMMA_GROUPED = r"^\s*[+]?\d{1,3}(?:,\d{3})+\s*$"
"""``1,204``: thousands grouped with commas (English)."""
SPACE_GROUPED = r"^\s*[+]?\d{1,3}(?:[ '\u00a0\u202f]\d{3})+\s*$"
"""``1 204``, ``1'204``: thousands grouped with spaces or apostrophes."""
UNIT = r"^\s*[+]?(\d+)\s*[^\d\s.,+\-][^\d]*$"
"""``12 pcs``, ``12pcs``, ``12 Stück``."""
COMMA_WHOLE = r"^\s*[+]?(\d+),0+\s*$"
"""``12,0``: a whole number written with a decimal comma."""


def _digits(text: pl.Expr) -> pl.Expr:
    return text.str.replace_all(r"[^\d]", "").cast(pl.Int64, strict=False)


def read_by_convention(text: pl.Expr, decimal_comma: bool) -> pl.Expr:
    """The whole number ``text`` means under a file's certain convention, else null.

    ``decimal_comma``: the file is known to write decimals with a comma (so a dot only
    groups thousands). Without that certainty nothing is read here: the row is rejected
    with :func:`quantity_hint`'s question instead.
    """
    if not decimal_comma:
        return pl.when(text.is_null()).then(None).otherwise(None).cast(pl.Int64)
    whole = text.str.extract(COMMA_WHOLE, 1).cast(pl.Int64, strict=False)
    return (pl.when(text.str.contains(DOT_GROUPED)).then(_digits(text))
            .when(whole.is_not_null()).then(whole)
            .otherwise(pl.lit(None, pl.Int64)))


def quantity_hint(text: pl.Expr) -> pl.Expr:
    """A precise hint for an unreadable quantity, or null (then the general advice)."""
    unit = text.str.extract(UNIT, 1)
    grouped = (text.str.contains(DOT_GROUPED) | text.str.contains(COMMA_GROUPED)
               | text.str.contains(SPACE_GROUPED))
    return (pl.when(grouped).then(pl.format("did you mean {}? Write it without separators",
                                            _digits(text)))
            .when(unit.is_not_null()).then(pl.lit("write ") + unit)
            .otherwise(pl.lit(None, pl.String)))


def is_grouped(text: pl.Expr) -> pl.Expr:
    """Is ``text`` a whole number with thousands separators (any of the usual ones)?"""
    return (text.str.contains(DOT_GROUPED) | text.str.contains(COMMA_GROUPED)
            | text.str.contains(SPACE_GROUPED))
