"""The Faker + numpy data generator: batch folders of source CSV files for the pipeline.

`generate_batch` writes ``<raw_dir>/batch_0001`` (the history batch) and later
``batch_0002``, … (one business day each), every one with the four contract files and a
``manifest.json`` (volumes, checksums, id widths, last ids, injected defects and the counts the
pipeline must find). See ``dwh.generator.dirty`` for the defect injection.

Modules: ``pools`` (Faker value pools, vocabularies), ``entities`` (customers, products),
``orders`` (transactions, order lines), ``dirty`` (defects), ``columns`` (numpy formatting of
CSV lines), ``csvfile`` (CSV output), ``workers`` (chunks formatted in worker processes),
``batch`` (folders and manifest).
"""

from __future__ import annotations

from dwh.generator.batch import (
    GENERATOR_VERSION,
    batch_folders,
    generate_batch,
    generated_batches,
    read_manifest,
)
from dwh.generator.dirty import CATEGORY_VARIANTS

__all__ = [
    "CATEGORY_VARIANTS",
    "GENERATOR_VERSION",
    "batch_folders",
    "generate_batch",
    "generated_batches",
    "read_manifest",
]
