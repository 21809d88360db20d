-- layer: production
-- table: production.transactions
-- severity: warn
-- dimension: consistency
-- Transactions whose source total_amount differs from the sum of their accepted lines
-- (computed_total) by more than a cent. A warning: the source total is kept as sent, and a
-- line quarantined for a missing product makes the two differ until it is promoted.
SELECT transaction_id, total_amount, computed_total
FROM production.transaction_totals
WHERE computed_total IS NULL OR abs(total_amount - computed_total) > 0.01
