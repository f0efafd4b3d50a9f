"""Where a suite's documents come from: one module per source, each read through Hugging Face
`datasets` into a Dataset whose column "text" holds the documents in their order.

    synthetic.py   the generated world of harness.synthetic (the default: offline, known entropy)
    hf.py          a dataset by hub name, a `save_to_disk` directory or a directory of data files
    files.py       local text, JSONL or Parquet files and globs
    common.py      the text column and its checks, and `read_documents` (empty documents dropped)

Each module holds its source's settings section (the synthetic world's is harness.synthetic's
WorldConfig), `read`, `describe` and, where local files are read, `fingerprint`;
harness.data.config ties them to the suite's `data.source`. A prepared directory (source
"prepared") is opened by harness.data.prepare, not read. `datasets` is imported inside the
functions that read: the suite schema imports these modules.
"""
