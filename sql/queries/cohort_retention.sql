-- Monthly cohort retention: customers grouped by the month of their first purchase; for each
-- later month, how many of them ordered (active customers), the retention rate (active / cohort
-- size, a fraction) and the cohort's revenue in that month.
SELECT
    cohort_month,
    months_since,
    activity_month,
    cohort_size,
    active_customers,
    retention_rate,
    revenue
FROM warehouse.agg_monthly_cohorts
ORDER BY cohort_month, months_since
