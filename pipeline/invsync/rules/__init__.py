"""pandera schemas of the tables invsync validates."""

from invsync.schemas.stock import MAX_QUANTITY, REASONS, stock_row_schema

__all__ = ["MAX_QUANTITY", "REASONS", "stock_row_schema"]
