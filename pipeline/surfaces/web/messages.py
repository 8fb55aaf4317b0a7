"""Plain words for people who upload a spreadsheet: what went wrong and what to do.

One table, one place: each rejection reason code and each safety brake maps to a sentence
a non-technical person understands and the action that fixes it.
"""

from __future__ import annotations

import re
from typing import Any

REASONS: dict[str, tuple[str, str]] = {
    "missing_identifier": (
        "This row does not say which product it is.",
        "Fill in the SKU (or the product or variant id) for this row."),
    "invalid_variant_id": (
        "The variant id is not a valid number.",
        "Use the variant id exactly as the store shows it (digits only), or use the SKU."),
    "invalid_product_id": (
        "The product id is not a valid number.",
        "Use the product id exactly as the store shows it (digits only), or use the SKU."),
    "invalid_location": (
        "The location is not written in a way the store understands.",
        "Use the location's number or its code as the store shows it."),
    "ambiguous_location": (
        "This location is one location's number and another location's code.",
        "Head the column \"Location ID\" (numbers) or \"Location Code\" (codes) to say "
        "which it is."),
    "unknown_location": (
        "The store has no location with this number or code.",
        "Check the location against the store's list of locations."),
    "disabled_location": (
        "This location is switched off in the store, so its stock cannot be changed.",
        "Switch the location on in the store, or move these rows to another location."),
    "missing_quantity": (
        "The quantity is empty.",
        "Enter how many are in stock (0 if none)."),
    "date_in_column": (
        "The quantity looks like a date: the spreadsheet probably changed it.",
        "Format the quantity column as plain numbers and type the quantity again."),
    "quantity_not_whole": (
        "The quantity is not a whole number.",
        "Enter a whole number such as 12 (no decimals, units or words)."),
    "quantity_negative": (
        "The quantity is below zero.",
        "Enter 0 or more."),
    "quantity_too_large": (
        "The quantity is larger than the store accepts.",
        "Check the number: it is probably a typo."),
    "duplicate_item": (
        "The same product appears more than once for the same location.",
        "Keep one row per product and location, or add them up into one row."),
    "refused_by_store": (
        "The store refused this item (its own words are shown).",
        "Check that the product exists in the store and tracks stock this way."),
}

BRAKES: dict[str, tuple[str, str]] = {
    "empty_file": (
        "The file has no rows, so nothing would be set.",
        "Check that you uploaded the right file and that it has data below the header."),
    "shrunken_file": (
        "The file is much smaller than the last one of this kind: it may have been cut short.",
        "If you meant to send only these rows, ask an administrator; otherwise upload the "
        "complete file."),
    "mass_zeroing": (
        "This would set a large share of the items at a location to 0.",
        "Check the file. If you really mean to zero them, tick the box before applying."),
}


def reason_text(reason: str | None) -> tuple[str, str]:
    """(what is wrong, what to do) for a rejection reason code."""
    return REASONS.get(reason or "", ("This row could not be used.",
                                      "See the message and correct the row."))


def brake_text(name: str | None) -> tuple[str, str]:
    """(what would happen, what to do) for a safety brake."""
    return BRAKES.get(name or "", ("A safety check stopped this upload.",
                                   "Read the details below or ask an administrator."))


_CLI_ADVICE = re.compile(r";\s*(?:pass|use|add) --[a-z-]+\b.*$", re.S)


def web_brake(brake: dict[str, Any]) -> dict[str, Any]:
    """A tripped brake as the page and the API show it: its message without the CLI's
    advice (\"pass --allow-zeroing\"), since here the override is the tick box or
    ``override_brakes=yes``."""
    message = brake.get("message")
    if not isinstance(message, str):
        return brake
    return {**brake, "message": _CLI_ADVICE.sub("", message).rstrip()}
