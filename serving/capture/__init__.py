"""Capture for labelling: served rows (inputs, answers, where they came from) written to Parquet files off the
request path — the rows a model abstained on, or was unsure about, are the ones worth labelling next.

``rule`` says which rows of an answer to keep (no pyarrow); ``records`` turns them into an Arrow table; ``writer``
queues, writes, rotates and publishes the files. ``records`` and ``writer`` import pyarrow (the ``capture`` extra).
"""
