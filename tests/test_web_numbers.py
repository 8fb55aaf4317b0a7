"""Numbers as people write them (invsync.rules.numbers): the hints and the certain reads."""

from __future__ import annotations

import polars as pl

from invsync.rules.numbers import is_grouped, quantity_hint, read_by_convention


def _hint(values: list[str]) -> list[str | None]:
    return pl.DataFrame({"q": values}).select(h=quantity_hint(pl.col("q")))["h"].to_list()


def test_grouped_thousands_get_did_you_mean_never_write_1_or_2() -> None:
    assert _hint(["1.204", "1,204", "12.345.678", "1 204", "12 pcs", "12Stück", "abc"]) == [
        "did you mean 1204? Write it without separators",
        "did you mean 1204? Write it without separators",
        "did you mean 12345678? Write it without separators",
        "did you mean 1204? Write it without separators",
        "write 12", "write 12", None]
    assert _hint(["3.5", "1.20"]) == [None, None]  # a real decimal: the general advice


def test_a_certain_decimal_comma_convention_reads_dotted_thousands() -> None:
    frame = pl.DataFrame({"q": ["1.204", "12,0", "3,5", "1.20", "7"]})
    read = frame.select(r=read_by_convention(pl.col("q"), True))["r"].to_list()
    assert read == [1204, 12, None, None, None]
    unsure = frame.select(r=read_by_convention(pl.col("q"), False))["r"].to_list()
    assert unsure == [None] * 5  # without certainty nothing is guessed
    assert frame.select(g=is_grouped(pl.col("q")))["g"].to_list() == [True, False, False,
                                                                    False, False]


def test_a_run_error_on_a_page_has_no_paths_flags_or_commands() -> None:
    from invsync.surfaces.web.messages import plain_run_error

    text = plain_run_error("the report could not be written to /var/lib/invsync/runs/R1 (disk "
                           "full); run `invsync resume` to finish; interrupted by SIGTERM; "
                           "pass --allow-zeroing to go on")
    assert "/var/lib" not in text and "--" not in text and "invsync resume" not in text
    assert "SIGTERM" not in text and text.startswith("The report could not be written to R1")
