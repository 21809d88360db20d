"""The catalogue of defect classes the generator can inject with --dirty-rate.

Each class says which file it touches and what the pipeline must do with such a row:
- "quarantine": the row is rejected into ops.quarantine with `reason` as its reason code;
- "duplicate": the row is counted as a duplicate and dropped (exact or conflicting version);
- "default": the row is accepted, the defect is repaired or defaulted and counted under `reason`.

Injection rules that keep the counts exact (the manifest's counts must equal what the pipeline
finds, class by class):
- quarantine-class defects are *extra* rows (fresh ids that no other row references), so
  rejecting one never orphans another row;
- a row carries at most one defect;
- "default"-class defects are edits of existing valid rows (the row stays accepted).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DefectClass:
    name: str
    files: tuple[str, ...]  # source files it may be injected into
    outcome: str  # "quarantine" | "duplicate" | "default"
    reason: str  # reason code (quarantine) or counter name (duplicate/default)
    description: str


DEFECT_CLASSES: tuple[DefectClass, ...] = (
    DefectClass(
        "missing_id",
        ("customers.csv", "products.csv", "transactions.csv", "transaction_items.csv"),
        "quarantine",
        "missing_id",
        "an extra row whose natural key is empty",
    ),
    DefectClass(
        "exact_duplicate",
        ("customers.csv", "products.csv", "transactions.csv", "transaction_items.csv"),
        "duplicate",
        "exact_duplicate",
        "a byte-identical copy of an existing row, at a later line",
    ),
    DefectClass(
        "conflicting_duplicate",
        ("customers.csv", "products.csv"),
        "duplicate",
        "conflicting_duplicate",
        "an earlier version of an existing row with the same id but other values "
        "(the later line wins; the earlier line is counted as a conflicting duplicate)",
    ),
    DefectClass(
        "negative_quantity",
        ("transaction_items.csv",),
        "quarantine",
        "invalid_quantity",
        "an extra order line with quantity 0 or below",
    ),
    DefectClass(
        "unparseable_number",
        ("products.csv", "transaction_items.csv"),
        "quarantine",
        "unparseable_number",
        "an extra row whose price / unit_price / quantity is not a number (e.g. 'abc', '12,5x')",
    ),
    DefectClass(
        "unparseable_date",
        ("transactions.csv",),
        "quarantine",
        "unparseable_date",
        "an extra transaction whose transaction_date is not a valid date (e.g. '2024-13-45')",
    ),
    DefectClass(
        "future_date",
        ("transactions.csv",),
        "quarantine",
        "future_date",
        "an extra transaction dated after the batch's business date",
    ),
    DefectClass(
        "orphan_reference",
        ("transactions.csv", "transaction_items.csv"),
        "quarantine",
        "missing_parent",
        "an extra row referencing a customer / product / transaction that does not exist",
    ),
    DefectClass(
        "line_total_mismatch",
        ("transaction_items.csv",),
        "quarantine",
        "line_total_mismatch",
        "an extra order line whose line_total is not round(quantity * unit_price * (1 - discount/100), 2)",
    ),
    DefectClass(
        "bad_email",
        ("customers.csv",),
        "default",
        "invalid_email",
        "an existing customer's email made invalid (no @, spaces): accepted with email NULL, flagged",
    ),
    DefectClass(
        "category_variant",
        ("products.csv",),
        "default",
        "category_normalised",
        "an existing product's category written as a known variant ('electronics', ' Home and Kitchen ')",
    ),
    DefectClass(
        "stray_whitespace",
        ("customers.csv", "products.csv"),
        "default",
        "trimmed",
        "leading/trailing spaces added to text fields of an existing row",
    ),
)

DEFECT_BY_NAME: dict[str, DefectClass] = {d.name: d for d in DEFECT_CLASSES}
