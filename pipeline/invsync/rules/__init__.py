"""The rules a stock row must pass (the pandera schema) and the plain words for each."""

from invsync.rules.stock import MAX_QUANTITY, REASONS, stock_row_schema

__all__ = ["MAX_QUANTITY", "REASONS", "stock_row_schema"]
