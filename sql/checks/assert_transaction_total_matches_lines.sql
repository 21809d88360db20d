-- layer: production
-- table: production.transactions
-- severity: warn
-- dimension: consistency
-- scope: _batch_id
-- Transactions whose source total_amount differs from the sum of their accepted lines
-- (computed_total) by more than a cent. A warning: the source total is kept as sent, and a
-- line quarantined for a missing product makes the two differ until it is promoted.
-- Scope (quality.scope new): the transactions of the batches promoted in this run, by their
-- _batch_id (the view's, indexed on production.transactions); scope all: every transaction.
SELECT transaction_id, total_amount, computed_total, _batch_id
FROM production.transaction_totals
WHERE computed_total IS NULL OR abs(total_amount - computed_total) > 0.01
