"""summary.parquet: the summary.csv table with typed columns, read back by pandas."""

from __future__ import annotations

import pandas as pd

from harness.report import write_report
from test_report import suite  # noqa: F401  (the hand-written results tree)


def test_summary_parquet_holds_the_csv_table_with_typed_columns(suite):  # noqa: F811
    csv_path, _ = write_report(suite, "Demo")
    table = pd.read_parquet(suite / "summary.parquet")
    from_csv = pd.read_csv(csv_path)
    assert list(table.columns) == list(from_csv.columns)
    assert table["objective"].dtype == "string" and table["scoring"].dtype == "string"
    assert table["seeds"].dtype == "int64" and table["seeds"].tolist() == [3, 2]
    numbers = [col for col in table.columns if col not in ("objective", "size", "scoring", "seeds")]
    assert all(table[col].dtype == "float64" for col in numbers)
    # A column blank in every row (mlm has no bits per byte, and one seed has no interval) is a
    # number column all the same, where the CSV reader cannot tell.
    pd.testing.assert_frame_equal(table[numbers], from_csv[numbers].astype("float64"))
    assert table.loc[table["objective"] == "mlm", "bits_per_byte_mean"].isna().all()


def test_summary_parquet_is_the_same_bytes_when_written_again(suite):  # noqa: F811
    write_report(suite, "Demo")
    first = (suite / "summary.parquet").read_bytes()
    write_report(suite, "Demo")
    assert (suite / "summary.parquet").read_bytes() == first
