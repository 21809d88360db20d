"""Every SQL statement of the dashboard, parameterised (psycopg2 %(name)s), and the functions
that run them.

Values only ever travel as query parameters: the SQL text is constant (a few shared fragments
are joined at import time). Every page reads the agg_* tables whenever the filters allow:
``agg_daily_sales`` and ``agg_payment_method_daily`` for any date range without filters; the
per-product and per-customer aggregates when the range covers all the data; with a category,
state or segment filter (or a part of the range), ``agg_sales_slices`` (sales per day x category
x state x segment x payment method), with ``agg_order_category_sets`` when two or more
categories are selected (an order holding several of them counts once), both summed over states
(``*_any_state``) when no state is selected, and ``agg_customer_slices`` for distinct customers
(summed over categories, ``agg_customer_slices_any_category``, when none is selected): by the
first and last order dates over a range that starts at the first or ends at the last order date,
by the days with orders over any other range. The top products over all dates with one category
or one segment are a top-N of ``agg_product_slicer_totals``, one row per product (several values
of one: its rows summed per product; categories and segments: ``agg_product_slices``);
``TOP_PRODUCTS_LINES_SQL`` reads ``fact_sales`` over the date range (its date_key index) joined
to the dimensions: the top products with a state filter or over a part of the range are what the
aggregates cannot answer exactly.
``LINES_REFERENCE`` holds the order-line form of every slice statement: the tests check that
both give the same numbers (tests/integration/test_dashboard_slices.py).
No Streamlit here: the app caches these functions.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, replace
from typing import Any

import pandas as pd

from dashboards.access import Endpoint, fetch_frame

# ─── filters ─────────────────────────────────────────────────────────────────────────────────


def date_key(day: dt.date) -> int:
    return day.year * 10000 + day.month * 100 + day.day


@dataclass(frozen=True)
class Filters:
    """The sidebar's choices. Empty tuples mean "all"."""

    start: dt.date
    end: dt.date
    categories: tuple[str, ...] = ()
    states: tuple[str, ...] = ()
    segments: tuple[str, ...] = ()
    data_start: dt.date | None = None
    """First order date in the warehouse (to know whether the range covers all the data)."""
    data_end: dt.date | None = None
    """Last order date in the warehouse."""

    @property
    def has_slices(self) -> bool:
        """A category, state or segment filter is set (the order lines are needed)."""
        return bool(self.categories or self.states or self.segments)

    @property
    def covers_all_dates(self) -> bool:
        if self.data_start is None or self.data_end is None:
            return False
        return self.start <= self.data_start and self.end >= self.data_end

    @property
    def touches_data_edge(self) -> bool:
        """The range starts at or before the first order date or ends at or after the last one:
        distinct customers then come exactly from the per-customer first and last order dates."""
        if self.data_start is None or self.data_end is None:
            return False
        return self.start <= self.data_start or self.end >= self.data_end

    @property
    def days(self) -> int:
        return (self.end - self.start).days + 1

    def previous(self) -> Filters:
        """The period of the same length just before this one (same slices)."""
        length = dt.timedelta(days=self.days)
        return replace(self, start=self.start - length, end=self.end - length)

    def params(self) -> dict[str, Any]:
        return {
            "start": self.start,
            "end": self.end,
            "start_key": date_key(self.start),
            "end_key": date_key(self.end),
            "categories": list(self.categories) or None,
            "states": list(self.states) or None,
            "segments": list(self.segments) or None,
            # the range touches neither end of the data: distinct customers need the days
            # with orders (agg_customer_slices.active_days), not only the first and last
            "inner_range": not self.touches_data_edge,
            # the range covers every order date: sums per customer slice are the range's sums
            "all_dates": self.covers_all_dates,
        }


# ─── shared fragments (constant SQL text) ────────────────────────────────────────────────────

# Order lines in the date range that pass the category, state and segment filters. The category
# and state are those valid on the order date (the SCD2 version the fact points at); the segment
# is the customer's current one.
_LINES = """
lines AS (
    SELECT f.date_key, f.transaction_id, f.payment_method_key, f.quantity, f.line_total,
           f.profit, c.customer_id, c.state, p.product_id, p.category
    FROM warehouse.fact_sales AS f
    JOIN warehouse.dim_products AS p ON p.product_key = f.product_key
    JOIN warehouse.dim_customers AS c ON c.customer_key = f.customer_key
    LEFT JOIN warehouse.agg_customer_metrics AS m ON m.customer_id = c.customer_id
    WHERE f.date_key BETWEEN %(start_key)s AND %(end_key)s
      AND (%(categories)s::text[] IS NULL OR p.category = ANY (%(categories)s::text[]))
      AND (%(states)s::text[] IS NULL OR c.state = ANY (%(states)s::text[]))
      AND (%(segments)s::text[] IS NULL OR m.customer_segment = ANY (%(segments)s::text[]))
)"""


# The slices of agg_sales_slices in the date range that pass the filters (same semantics as
# _LINES: category and state of the versions the lines point at, the customer's current segment).
# Orders: with no category filter, orders_first, which adds up over categories; per category, the
# orders with a line of it, which adds up over everything but categories.
def _slices_columns(state: str, dated: bool = True) -> str:
    """The columns every slices branch gives (date and payment method NULL when not `dated`)."""
    date_key, method = ("s.date_key", "s.payment_method_key") if dated else ("NULL", "NULL")
    return f"""{date_key}::integer AS date_key, s.category, {state} AS state,
           {method}::bigint AS payment_method_key, s.quantity, s.revenue, s.profit,
           CASE WHEN %(categories)s::text[] IS NULL THEN s.orders_first ELSE s.orders END
               AS orders"""


_SLICES_FILTERS = """s.date_key BETWEEN %(start_key)s AND %(end_key)s
      AND (%(categories)s::text[] IS NULL OR s.category = ANY (%(categories)s::text[]))
      AND (%(segments)s::text[] IS NULL OR s.customer_segment = ANY (%(segments)s::text[]))"""
_SLICES_BY_STATE = f"""
    SELECT {_slices_columns("s.state")}
    FROM warehouse.agg_sales_slices AS s
    WHERE {_SLICES_FILTERS}
      AND (%(states)s::text[] IS NULL OR s.state = ANY (%(states)s::text[]))"""
# Over a range covering every order date, for a statement that groups neither by date nor by
# payment method, the same sums from agg_sales_slices_all_dates (summed over both: hundreds of
# rows for the 1.7 million of agg_sales_slices at 10M order lines; both NULL).
_SLICES_ALL_DATES = f"""
    SELECT {_slices_columns("s.state", dated=False)}
    FROM warehouse.agg_sales_slices_all_dates AS s
    WHERE %(all_dates)s
      AND (%(categories)s::text[] IS NULL OR s.category = ANY (%(categories)s::text[]))
      AND (%(segments)s::text[] IS NULL OR s.customer_segment = ANY (%(segments)s::text[]))
      AND (%(states)s::text[] IS NULL OR s.state = ANY (%(states)s::text[]))"""


def _per_day_guard(dated: bool) -> str:
    """What keeps the per-day branches out when the all-dates ones stand beside them (`dated`
    False): they run only over a range that does not cover every order date."""
    return "" if dated else "NOT %(all_dates)s AND "


def _slices(dated: bool) -> str:
    """The slices CTE. With no state selected, the sums of agg_sales_slices_any_state (summed
    over states: 20-30x fewer rows); for a statement that groups neither by date nor by payment
    method (`dated` False), over every order date those of _SLICES_ALL_DATES. Each branch's
    guard is true or false at plan time (the parameters are literals), so only one table is
    read."""
    guard = _per_day_guard(dated)
    all_dates = "" if dated else f"{_SLICES_ALL_DATES}\n    UNION ALL"
    return f"""
slices AS ({all_dates}{_SLICES_BY_STATE}
      AND {guard}%(states)s::text[] IS NOT NULL
    UNION ALL
    SELECT {_slices_columns("NULL::text")}
    FROM warehouse.agg_sales_slices_any_state AS s
    WHERE {guard}%(states)s::text[] IS NULL
      AND {_SLICES_FILTERS}
)"""


# With two or more categories selected, an order holding k of them (k >= 2) is counted k times
# by the slices' orders: agg_order_category_sets gives, per set of categories, the orders to take
# off, (k - 1) x its orders (as negative orders); with no state selected, its sum over states
# (agg_order_category_sets_any_state); over every order date, for a statement that groups neither
# by date nor by payment method, its sum over both (agg_order_category_sets_all_dates). Each
# statement sums these fixes per its own keys and adds them to its sums of the slices (kept
# apart, so that the slices alone still scan in parallel). With one category or none the fixes
# are false at plan time (the parameters are literals) and no table is read.
# The count of selected categories in a set runs once per distinct set (the planner memoizes a
# lateral keyed on a base table's column, hence one lateral per table, not one over their union).
def _sets_fix(table: str, dated: bool) -> str:
    date_key, method, orders, in_range = (
        (
            "o.date_key",
            "o.payment_method_key",
            "integer",
            "o.date_key BETWEEN %(start_key)s AND %(end_key)s",
        )
        if dated
        else ("NULL::integer", "NULL::bigint", "bigint", "%(all_dates)s")
    )
    return f"""
    SELECT {date_key} AS date_key, {method} AS payment_method_key,
           (-o.orders * (n.selected - 1))::{orders} AS orders
    FROM warehouse.{table} AS o
    CROSS JOIN LATERAL (
        SELECT count(*) AS selected FROM unnest(o.categories) AS u (category)
        WHERE u.category = ANY (%(categories)s::text[])
    ) AS n
    WHERE cardinality(%(categories)s::text[]) >= 2
      AND {in_range}
      AND o.categories && %(categories)s::text[]
      AND (%(segments)s::text[] IS NULL OR o.customer_segment = ANY (%(segments)s::text[]))
      AND n.selected >= 2"""


def _slices_orders(dated: bool) -> str:
    """The slices and the order fixes (order_fixes) of two or more categories."""
    guard = _per_day_guard(dated)
    all_dates = (
        ""
        if dated
        else _sets_fix("agg_order_category_sets_all_dates", dated=False)
        + """
      AND (%(states)s::text[] IS NULL OR o.state = ANY (%(states)s::text[]))
    UNION ALL"""
    )
    return (
        _slices(dated)
        + """,
order_fixes AS ("""
        + all_dates
        + _sets_fix("agg_order_category_sets", dated=True)
        + f"""
      AND {guard}%(states)s::text[] IS NOT NULL AND o.state = ANY (%(states)s::text[])
    UNION ALL"""
        + _sets_fix("agg_order_category_sets_any_state", dated=True)
        + f"""
      AND {guard}%(states)s::text[] IS NULL
)"""
    )


# Customers with a line in the range passing the filters, from agg_customer_slices, or with no
# category selected from agg_customer_slices_any_category (summed over categories: a quarter of
# the rows; the guards are true or false at plan time, so only one table is read), as also with
# two or more categories over every order date: its rows whose categories overlap them (at 10M
# lines a quarter of the rows the categories have in agg_customer_slices, without their revenue,
# which the statements read only with one category or none). When the range
# starts at or before the first order date or ends at or after the last one, the first and last
# order dates say it (an index-only scan); otherwise the days with orders are read too. A range
# covering every order date takes every row (no date condition to evaluate). Categories over a
# range touching neither end, with no segment: the range's rows of agg_category_orders (one per
# order and category, so not distinct: both statements count them distinct), since most of the
# categories' rows of agg_customer_slices span such a range and would need their days with
# orders read.
_CUSTOMER_SLICE_FILTERS = """(%(all_dates)s
           OR cs.last_purchase_date >= %(start)s AND cs.first_purchase_date <= %(end)s)
      AND (NOT %(inner_range)s OR cs.active_days && daterange(%(start)s, %(end)s, '[]'))
      AND (%(states)s::text[] IS NULL OR cs.state = ANY (%(states)s::text[]))
      AND (%(segments)s::text[] IS NULL OR cs.customer_segment = ANY (%(segments)s::text[]))"""
_CATEGORY_ORDERS_APPLY = """%(inner_range)s AND %(categories)s::text[] IS NOT NULL
           AND %(segments)s::text[] IS NULL"""
_SLICE_CUSTOMERS = f"""
slice_customers AS NOT MATERIALIZED (
    SELECT cs.customer_id, cs.state, cs.revenue
    FROM warehouse.agg_customer_slices AS cs
    WHERE %(categories)s::text[] IS NOT NULL AND cs.category = ANY (%(categories)s::text[])
      AND NOT (%(all_dates)s AND cardinality(%(categories)s::text[]) >= 2)
      AND NOT ({_CATEGORY_ORDERS_APPLY})
      AND {_CUSTOMER_SLICE_FILTERS}
    UNION ALL
    SELECT o.customer_id, o.state, NULL::numeric AS revenue
    FROM warehouse.agg_category_orders AS o
    WHERE {_CATEGORY_ORDERS_APPLY}
      AND o.date_key BETWEEN %(start_key)s AND %(end_key)s
      AND o.category = ANY (%(categories)s::text[])
      AND (%(states)s::text[] IS NULL OR o.state = ANY (%(states)s::text[]))
    UNION ALL
    SELECT cs.customer_id, cs.state,
           CASE WHEN %(categories)s::text[] IS NULL THEN cs.revenue END AS revenue
    FROM warehouse.agg_customer_slices_any_category AS cs
    WHERE (%(categories)s::text[] IS NULL
           OR %(all_dates)s AND cardinality(%(categories)s::text[]) >= 2
              AND cs.categories && %(categories)s::text[])
      AND {_CUSTOMER_SLICE_FILTERS}
)"""

# Per day: revenue, orders, profit (an order has one date, so daily orders add up).
_DAILY_FROM_AGG = """
daily AS (
    SELECT date_key, revenue, transactions AS orders, profit
    FROM warehouse.agg_daily_sales
    WHERE date_key BETWEEN %(start_key)s AND %(end_key)s
)"""
_DAILY_FROM_LINES = (
    _LINES
    + """,
daily AS (
    SELECT date_key, sum(line_total) AS revenue, count(DISTINCT transaction_id) AS orders,
           sum(profit) AS profit
    FROM lines
    GROUP BY date_key
)"""
)
_DAILY_FROM_SLICES = (
    _slices_orders(dated=True)
    + """,
daily AS (
    SELECT date_key, sum(revenue) AS revenue, sum(orders)::bigint AS orders,
           sum(profit) AS profit
    FROM (
        SELECT date_key, sum(revenue) AS revenue, sum(orders) AS orders, sum(profit) AS profit
        FROM slices
        GROUP BY date_key
        UNION ALL
        SELECT date_key, 0, sum(orders), 0 FROM order_fixes GROUP BY date_key
    ) AS x
    GROUP BY date_key
)"""
)

# Customers passing the state and segment filters, with their current state (stored on
# agg_customer_metrics with their other metrics: no join of the dimension). Not materialized: a
# statement reading it twice reads only the columns each use needs (the view computes recency
# for every row it returns, which the LTV distribution does not read).
_CUSTOMERS = """
customers AS NOT MATERIALIZED (
    SELECT m.*
    FROM warehouse.agg_customer_metrics AS m
    WHERE (%(states)s::text[] IS NULL OR m.state = ANY (%(states)s::text[]))
      AND (%(segments)s::text[] IS NULL OR m.customer_segment = ANY (%(segments)s::text[]))
)"""

# ─── catalogue and data range ────────────────────────────────────────────────────────────────

RELATIONS_SQL = """
SELECT n.nspname || '.' || c.relname AS relation
FROM pg_catalog.pg_class AS c
JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
WHERE n.nspname = 'warehouse' AND c.relkind IN ('r', 'v', 'p', 'm')
ORDER BY 1
"""

DATA_RANGE_SQL = """
SELECT to_date(min(date_key)::text, 'YYYYMMDD') AS first_date,
       to_date(max(date_key)::text, 'YYYYMMDD') AS last_date,
       (SELECT count(*) FROM warehouse.agg_daily_sales) AS days_with_sales
FROM warehouse.fact_sales
WHERE date_key > 0
"""

FILTER_OPTIONS_SQL = """
SELECT 'category' AS kind, category AS value
FROM (SELECT DISTINCT category FROM warehouse.dim_products
      WHERE product_key > 0 AND category IS NOT NULL) AS x
UNION ALL
SELECT 'state', state
FROM (SELECT DISTINCT state FROM warehouse.dim_customers
      WHERE customer_key > 0 AND state IS NOT NULL) AS y
UNION ALL
SELECT 'segment', customer_segment
FROM (SELECT DISTINCT customer_segment FROM warehouse.agg_customer_metrics) AS z
ORDER BY 1, 2
"""

# ─── overview ────────────────────────────────────────────────────────────────────────────────

# Active customers from agg_customer_metrics: exact when the range starts at or before the first
# order date or ends at or after the last one (Filters.touches_data_edge); otherwise
# KPIS_SLICES_SQL counts them from the days with orders.
KPIS_AGG_SQL = """
SELECT
    (SELECT coalesce(sum(revenue), 0) FROM warehouse.agg_daily_sales
     WHERE date_key BETWEEN %(start_key)s AND %(end_key)s) AS revenue,
    (SELECT coalesce(sum(transactions), 0) FROM warehouse.agg_daily_sales
     WHERE date_key BETWEEN %(start_key)s AND %(end_key)s) AS orders,
    (SELECT count(*) FROM warehouse.agg_customer_metrics
     WHERE last_purchase_date >= %(start)s AND first_purchase_date <= %(end)s) AS customers
"""

KPIS_SLICES_SQL = (
    "WITH"
    + _slices_orders(dated=False)
    + ","
    + _SLICE_CUSTOMERS
    + """
SELECT coalesce(sum(revenue), 0) AS revenue,
       coalesce(sum(orders), 0) + (SELECT coalesce(sum(orders), 0) FROM order_fixes) AS orders,
       -- with a category or a state: count(DISTINCT), which the index of agg_customer_slices
       -- per category or per state feeds in customer order (no sort, no hashing)
       -- (and over a range touching neither end of the data: the days with orders)
       (SELECT count(DISTINCT customer_id) FROM slice_customers
        WHERE (%(categories)s::text[] IS NOT NULL OR %(states)s::text[] IS NOT NULL
               OR %(inner_range)s)
          AND NOT (%(all_dates)s AND %(states)s::text[] IS NULL
                   AND cardinality(%(categories)s::text[]) >= 2))
       -- a segment alone is a per-customer attribute: one row per customer in the metrics
       + (SELECT count(*) FROM warehouse.agg_customer_metrics AS m
          WHERE %(categories)s::text[] IS NULL AND %(states)s::text[] IS NULL
            AND NOT %(inner_range)s
            AND m.last_purchase_date >= %(start)s AND m.first_purchase_date <= %(end)s
            AND (%(segments)s::text[] IS NULL
                 OR m.customer_segment = ANY (%(segments)s::text[])))
       -- two or more categories over every order date, no state: one row per customer with the
       -- categories it bought (no distinct count over its customer x state rows)
       + (SELECT count(*) FROM warehouse.agg_customer_categories AS c
          WHERE %(all_dates)s AND %(states)s::text[] IS NULL
            AND cardinality(%(categories)s::text[]) >= 2
            AND c.categories && %(categories)s::text[]
            AND (%(segments)s::text[] IS NULL
                 OR EXISTS (SELECT 1 FROM warehouse.agg_customer_totals AS t
                            WHERE t.customer_id = c.customer_id COLLATE "default"
                              AND t.customer_segment = ANY (%(segments)s::text[])))) AS customers
FROM slices
"""
)

_KPIS_LINES = (
    "WITH"
    + _LINES
    + """
SELECT coalesce(sum(line_total), 0) AS revenue,
       count(DISTINCT transaction_id) AS orders,
       count(DISTINCT customer_id) AS customers
FROM lines
"""
)

# ─── sales trends ────────────────────────────────────────────────────────────────────────────

_DAILY_TAIL = """
SELECT d.full_date AS day,
       coalesce(x.revenue, 0) AS revenue,
       coalesce(x.orders, 0) AS orders,
       coalesce(x.profit, 0) AS profit,
       avg(coalesce(x.revenue, 0)) OVER (ORDER BY d.full_date
                                         ROWS BETWEEN 6 PRECEDING AND CURRENT ROW) AS revenue_ma7
FROM warehouse.dim_date AS d
LEFT JOIN daily AS x ON x.date_key = d.date_key
WHERE d.date_key BETWEEN %(start_key)s AND %(end_key)s
ORDER BY d.full_date
"""

_MONTHLY_TAIL = """,
months AS (
    SELECT date_trunc('month', d.full_date)::date AS month,
           sum(coalesce(x.revenue, 0)) AS revenue,
           sum(coalesce(x.orders, 0)) AS orders,
           sum(coalesce(x.profit, 0)) AS profit
    FROM warehouse.dim_date AS d
    LEFT JOIN daily AS x ON x.date_key = d.date_key
    WHERE d.date_key BETWEEN %(start_key)s AND %(end_key)s
    GROUP BY 1
)
SELECT month, revenue, orders, profit,
       avg(revenue) OVER (ORDER BY month ROWS BETWEEN 2 PRECEDING AND CURRENT ROW) AS revenue_ma3
FROM months
ORDER BY month
"""

_WEEKDAY_TAIL = """
SELECT d.day_of_week, d.day_name,
       avg(coalesce(x.revenue, 0)) AS avg_revenue,
       avg(coalesce(x.orders, 0)) AS avg_orders,
       sum(coalesce(x.revenue, 0)) AS revenue
FROM warehouse.dim_date AS d
LEFT JOIN daily AS x ON x.date_key = d.date_key
WHERE d.date_key BETWEEN %(start_key)s AND %(end_key)s
GROUP BY d.day_of_week, d.day_name
ORDER BY d.day_of_week
"""

DAILY_AGG_SQL = "WITH" + _DAILY_FROM_AGG + _DAILY_TAIL
_DAILY_LINES = "WITH" + _DAILY_FROM_LINES + _DAILY_TAIL
MONTHLY_AGG_SQL = "WITH" + _DAILY_FROM_AGG + _MONTHLY_TAIL
_MONTHLY_LINES = "WITH" + _DAILY_FROM_LINES + _MONTHLY_TAIL
WEEKDAY_AGG_SQL = "WITH" + _DAILY_FROM_AGG + _WEEKDAY_TAIL
_WEEKDAY_LINES = "WITH" + _DAILY_FROM_LINES + _WEEKDAY_TAIL
DAILY_SLICES_SQL = "WITH" + _DAILY_FROM_SLICES + _DAILY_TAIL
MONTHLY_SLICES_SQL = "WITH" + _DAILY_FROM_SLICES + _MONTHLY_TAIL
WEEKDAY_SLICES_SQL = "WITH" + _DAILY_FROM_SLICES + _WEEKDAY_TAIL

# ─── products and categories ─────────────────────────────────────────────────────────────────

TOP_PRODUCTS_AGG_SQL = """
SELECT a.product_id, coalesce(p.product_name, a.product_id) AS product_name,
       coalesce(p.category, 'Unknown') AS category,
       a.revenue, a.profit, a.quantity_sold AS units, a.margin_pct
FROM warehouse.agg_product_performance AS a
LEFT JOIN warehouse.dim_products AS p ON p.product_id = a.product_id AND p.is_current
ORDER BY a.revenue DESC, a.product_id
LIMIT %(limit)s
"""


def _top_products(ranked: str) -> str:
    """The top products' columns around `ranked` (product_id, revenue, profit, units of the top
    rows, already picked), so only those rows look up their current product row (through
    dim_products' index on product_id, whose collation the aggregates' "C" keys take for it)."""
    return f"""
SELECT x.product_id, coalesce(p.product_name, x.product_id) AS product_name,
       coalesce(p.category, 'Unknown') AS category,
       x.revenue, x.profit, x.units,
       round(100 * x.profit / nullif(x.revenue, 0), 2) AS margin_pct
FROM ({ranked}) AS x
LEFT JOIN warehouse.dim_products AS p
    ON p.product_id = x.product_id COLLATE "default" AND p.is_current
ORDER BY x.revenue DESC, x.product_id
"""


def _summed_per_product(rows: str) -> str:
    """The top products of `rows` (product_id, revenue, profit, quantity) summed per product: in
    product order, sorted then summed product by product (hashing a hundred thousand products'
    three numeric sums took half again as long at 10M lines), ranked before `_top_products`
    looks up their names."""
    return f"""
    SELECT product_id, sum(revenue) AS revenue, sum(profit) AS profit, sum(quantity) AS units
    FROM ({rows}
          ORDER BY product_id) AS r
    GROUP BY product_id
    ORDER BY revenue DESC, product_id
    LIMIT %(limit)s
"""


# The top products on the order lines (a state, or a filter over a part of the range).
TOP_PRODUCTS_LINES_SQL = (
    "WITH"
    + _LINES
    + _top_products(
        _summed_per_product("SELECT product_id, line_total AS revenue, profit, quantity FROM lines")
    )
)

# The top products over a part of the range with no filter: the same rows as on the lines, summed
# per product version first, sorted on its bigint key, without reading the customers (at 10M the
# last 30 days 1.6 s -> 0.8-0.9 s, a year 9.9 -> 3.6 s: sorting the lines on product_id after both
# joins took twice as long). Sorted on "product_key + 0", never read in the order of the fact's
# product index: over a wide range the planner took that index to skip the sort, and visited
# the fact's pages at random (43-64 s for a year or more at 10M).
TOP_PRODUCTS_RANGE_SQL = _top_products(
    _summed_per_product(
        """SELECT p.product_id, k.revenue, k.profit, k.quantity
          FROM (SELECT f.product_key, sum(f.line_total) AS revenue, sum(f.profit) AS profit,
                       sum(f.quantity) AS quantity
                FROM (SELECT product_key + 0 AS product_key, line_total, profit, quantity
                      FROM warehouse.fact_sales
                      WHERE date_key BETWEEN %(start_key)s AND %(end_key)s
                      ORDER BY 1) AS f
                GROUP BY f.product_key) AS k
          JOIN warehouse.dim_products AS p ON p.product_key = k.product_key"""
    )
)

# The top products over all dates, no state (the tables have none), the same rows as on the lines.
# One category or one segment: a top-N of agg_product_slicer_totals' rows, one per product.
_SLICER = """slicer = CASE WHEN %(categories)s::text[] IS NULL THEN 'segment' ELSE 'category' END"""
_SLICER_VALUES = "coalesce(%(categories)s::text[], %(segments)s::text[])"
TOP_PRODUCTS_SLICER_SQL = _top_products(
    f"""
    SELECT product_id, revenue, profit, quantity AS units
    FROM warehouse.agg_product_slicer_totals
    WHERE {_SLICER} AND slicer_value = ({_SLICER_VALUES})[1]
    ORDER BY revenue DESC, product_id
    LIMIT %(limit)s
"""
)
# Several categories, or several segments: their rows summed per product.
TOP_PRODUCTS_SLICERS_SQL = _top_products(
    _summed_per_product(
        f"""SELECT product_id, revenue, profit, quantity
          FROM warehouse.agg_product_slicer_totals
          WHERE {_SLICER} AND slicer_value = ANY ({_SLICER_VALUES})"""
    )
)
# Categories and segments: agg_product_slices (product x category x segment) summed per product.
TOP_PRODUCTS_SLICES_SQL = _top_products(
    _summed_per_product(
        """SELECT s.product_id, s.revenue, s.profit, s.quantity
          FROM warehouse.agg_product_slices AS s
          WHERE (%(categories)s::text[] IS NULL OR s.category = ANY (%(categories)s::text[]))
            AND (%(segments)s::text[] IS NULL
                 OR s.customer_segment = ANY (%(segments)s::text[]))"""
    )
)

CATEGORIES_AGG_SQL = """
SELECT coalesce(p.category, 'Unknown') AS category,
       sum(a.revenue) AS revenue, sum(a.profit) AS profit, sum(a.quantity_sold) AS units,
       round(100 * sum(a.profit) / nullif(sum(a.revenue), 0), 2) AS margin_pct
FROM warehouse.agg_product_performance AS a
LEFT JOIN warehouse.dim_products AS p ON p.product_id = a.product_id AND p.is_current
GROUP BY 1
ORDER BY revenue DESC
"""

_CATEGORIES_LINES = (
    "WITH"
    + _LINES
    + """
SELECT coalesce(category, 'Unknown') AS category,
       sum(line_total) AS revenue, sum(profit) AS profit, sum(quantity) AS units,
       round(100 * sum(profit) / nullif(sum(line_total), 0), 2) AS margin_pct
FROM lines
GROUP BY 1
ORDER BY revenue DESC
"""
)

CATEGORIES_SLICES_SQL = (
    "WITH"
    + _slices(dated=False)
    + """
SELECT coalesce(category, 'Unknown') AS category,
       sum(revenue) AS revenue, sum(profit) AS profit, sum(quantity)::bigint AS units,
       round(100 * sum(profit) / nullif(sum(revenue), 0), 2) AS margin_pct
FROM slices
GROUP BY 1
ORDER BY revenue DESC
"""
)

# ─── customers ───────────────────────────────────────────────────────────────────────────────

RFM_SQL = (
    "WITH"
    + _CUSTOMERS
    + """
SELECT coalesce(rfm_segment, 'Unscored') AS rfm_segment,
       count(*) AS customers,
       sum(total_spent) AS revenue,
       round(avg(total_spent), 2) AS avg_spent,
       round(avg(transactions), 2) AS avg_orders,
       round(avg(days_since_last_purchase), 1) AS avg_days_since_last_purchase
FROM customers
GROUP BY 1
ORDER BY revenue DESC
"""
)

COHORTS_SQL = """
SELECT cohort_month, months_since, cohort_size, active_customers, retention_rate
FROM warehouse.agg_monthly_cohorts
WHERE cohort_month BETWEEN date_trunc('month', %(start)s::date) AND %(end)s::date
ORDER BY cohort_month, months_since
"""

LTV_BUCKETS = 30
LTV_DISTRIBUTION_SQL = (
    "WITH"
    + _CUSTOMERS
    + """,
bounds AS (SELECT max(total_spent) + 0.01 AS hi FROM customers)
SELECT width_bucket(c.total_spent, 0, b.hi, %(buckets)s) AS bucket,
       round((width_bucket(c.total_spent, 0, b.hi, %(buckets)s) - 1) * b.hi / %(buckets)s, 2)
           AS spent_from,
       round(width_bucket(c.total_spent, 0, b.hi, %(buckets)s) * b.hi / %(buckets)s, 2)
           AS spent_to,
       count(*) AS customers
FROM customers AS c
CROSS JOIN bounds AS b
GROUP BY 1, 2, 3
ORDER BY 1
"""
)

LTV_SUMMARY_SQL = (
    "WITH"
    + _CUSTOMERS
    + """
SELECT count(*) AS customers,
       round(avg(total_spent), 2) AS mean,
       round(percentile_cont(0.5) WITHIN GROUP (ORDER BY total_spent)::numeric, 2) AS median,
       round(percentile_cont(0.9) WITHIN GROUP (ORDER BY total_spent)::numeric, 2) AS p90
FROM customers
"""
)

STATES_AGG_SQL = (
    "WITH"
    + _CUSTOMERS
    + """
SELECT coalesce(state, 'Unknown') AS state, count(*) AS customers, sum(total_spent) AS revenue
FROM customers
GROUP BY 1
ORDER BY revenue DESC
"""
)

_STATES_LINES = (
    "WITH"
    + _LINES
    + """
SELECT coalesce(state, 'Unknown') AS state, count(DISTINCT customer_id) AS customers,
       sum(line_total) AS revenue
FROM lines
GROUP BY 1
ORDER BY revenue DESC
"""
)

STATES_SLICES_SQL = (
    "WITH"
    # per state: agg_sales_slices, over every order date agg_sales_slices_all_dates with two or
    # more categories, and with one or none not read: customers gives the revenue too (below)
    + "\nslices AS ("
    + _SLICES_ALL_DATES
    + """
      AND cardinality(%(categories)s::text[]) >= 2
    UNION ALL"""
    + _SLICES_BY_STATE
    + """
      AND NOT %(all_dates)s
),"""
    + _SLICE_CUSTOMERS
    + """,
-- a customer has one row per state in agg_customer_slices_any_category, and per state in one
-- category of agg_customer_slices: rows are distinct pairs unless two or more categories are
-- selected over part of the range, or slice_customers reads agg_category_orders (the guards are
-- true or false at plan time: one branch runs; over every order date, slice_customers reads
-- agg_customer_slices_any_category). Over every order date the rows' revenue adds up to the
-- state's revenue, so with one category or none the same pass gives it and the sales slices are
-- not read.
customers AS (
    SELECT coalesce(state, 'Unknown') AS state, count(*) AS customers,
           sum(revenue) AS revenue
    FROM (SELECT state, customer_id, CASE WHEN %(all_dates)s THEN revenue END AS revenue
          FROM slice_customers
          WHERE (coalesce(cardinality(%(categories)s::text[]), 0) < 2 OR %(all_dates)s)
            AND NOT ("""
    + _CATEGORY_ORDERS_APPLY
    + """)
          UNION ALL
          SELECT DISTINCT state, customer_id, NULL::numeric FROM slice_customers
          WHERE cardinality(%(categories)s::text[]) >= 2 AND NOT %(all_dates)s
             OR """
    + _CATEGORY_ORDERS_APPLY
    + """) AS d
    GROUP BY 1
),
revenue AS (
    SELECT coalesce(state, 'Unknown') AS state, sum(revenue) AS revenue
    FROM slices
    GROUP BY 1
)
-- one of the two revenues is there (the other is empty or NULL)
SELECT coalesce(r.state, c.state) AS state, coalesce(c.customers, 0) AS customers,
       coalesce(r.revenue, c.revenue) AS revenue
FROM revenue AS r
FULL JOIN customers AS c ON c.state = r.state
ORDER BY 3 DESC
"""
)

# ─── payments ────────────────────────────────────────────────────────────────────────────────

PAYMENTS_AGG_SQL = """
SELECT pm.payment_method_name AS payment_method, pm.payment_type,
       sum(a.transactions) AS orders, sum(a.revenue) AS revenue, sum(a.profit) AS profit
FROM warehouse.agg_payment_method_daily AS a
JOIN warehouse.dim_payment_method AS pm ON pm.payment_method_key = a.payment_method_key
WHERE a.date_key BETWEEN %(start_key)s AND %(end_key)s
GROUP BY 1, 2
ORDER BY revenue DESC
"""

_PAYMENTS_LINES = (
    "WITH"
    + _LINES
    + """
SELECT pm.payment_method_name AS payment_method, pm.payment_type,
       count(DISTINCT l.transaction_id) AS orders, sum(l.line_total) AS revenue,
       sum(l.profit) AS profit
FROM lines AS l
JOIN warehouse.dim_payment_method AS pm ON pm.payment_method_key = l.payment_method_key
GROUP BY 1, 2
ORDER BY revenue DESC
"""
)

PAYMENTS_MONTHLY_AGG_SQL = """
SELECT date_trunc('month', to_date(a.date_key::text, 'YYYYMMDD'))::date AS month,
       pm.payment_method_name AS payment_method, sum(a.revenue) AS revenue,
       sum(a.transactions) AS orders
FROM warehouse.agg_payment_method_daily AS a
JOIN warehouse.dim_payment_method AS pm ON pm.payment_method_key = a.payment_method_key
WHERE a.date_key BETWEEN %(start_key)s AND %(end_key)s
GROUP BY 1, 2
ORDER BY 1, 2
"""

_PAYMENTS_MONTHLY_LINES = (
    "WITH"
    + _LINES
    + """
SELECT date_trunc('month', to_date(l.date_key::text, 'YYYYMMDD'))::date AS month,
       pm.payment_method_name AS payment_method, sum(l.line_total) AS revenue,
       count(DISTINCT l.transaction_id) AS orders
FROM lines AS l
JOIN warehouse.dim_payment_method AS pm ON pm.payment_method_key = l.payment_method_key
GROUP BY 1, 2
ORDER BY 1, 2
"""
)

PAYMENTS_SLICES_SQL = (
    "WITH"
    + _slices_orders(dated=True)
    + """
SELECT pm.payment_method_name AS payment_method, pm.payment_type,
       sum(s.orders)::bigint AS orders, sum(s.revenue) AS revenue, sum(s.profit) AS profit
FROM (
    SELECT payment_method_key, sum(orders) AS orders, sum(revenue) AS revenue,
           sum(profit) AS profit
    FROM slices
    GROUP BY payment_method_key
    UNION ALL
    SELECT payment_method_key, sum(orders), 0, 0 FROM order_fixes GROUP BY payment_method_key
) AS s
JOIN warehouse.dim_payment_method AS pm ON pm.payment_method_key = s.payment_method_key
GROUP BY 1, 2
ORDER BY revenue DESC
"""
)

# Summed per day and method first (integer keys), then per month: the month of each day is
# looked up once per day in dim_date instead of being computed from every slice row.
PAYMENTS_MONTHLY_SLICES_SQL = (
    "WITH"
    + _slices_orders(dated=True)
    + """,
per_day AS (
    SELECT date_key, payment_method_key, sum(revenue) AS revenue, sum(orders) AS orders
    FROM slices
    GROUP BY 1, 2
    UNION ALL
    SELECT date_key, payment_method_key, 0, sum(orders) FROM order_fixes GROUP BY 1, 2
)
SELECT date_trunc('month', d.full_date)::date AS month,
       pm.payment_method_name AS payment_method, sum(s.revenue) AS revenue,
       sum(s.orders)::bigint AS orders
FROM per_day AS s
JOIN warehouse.dim_date AS d ON d.date_key = s.date_key
JOIN warehouse.dim_payment_method AS pm ON pm.payment_method_key = s.payment_method_key
GROUP BY 1, 2
ORDER BY 1, 2
"""
)

# The same charts on the order lines. The dashboard no longer issues them (the slices answer any
# filter over any range exactly); the tests compare every *_SLICES_SQL with its reference here.
LINES_REFERENCE: dict[str, str] = {
    "KPIS": _KPIS_LINES,
    "DAILY": _DAILY_LINES,
    "MONTHLY": _MONTHLY_LINES,
    "WEEKDAY": _WEEKDAY_LINES,
    "CATEGORIES": _CATEGORIES_LINES,
    "STATES": _STATES_LINES,
    "PAYMENTS": _PAYMENTS_LINES,
    "PAYMENTS_MONTHLY": _PAYMENTS_MONTHLY_LINES,
}

# ─── data quality and pipeline health (the ops views of the warehouse schema) ─────────────────
# sql/ddl/75_bi_ops_views.sql publishes what BI users may see of the run ledger as warehouse.v_*
# views: the dashboard reads them as bi_reader and never reads ops itself.

QUALITY_RUNS_SQL = """
SELECT run_id, started_at, status, score, grade, checks, failed_checks
FROM warehouse.v_quality_runs
ORDER BY run_id DESC
LIMIT %(limit)s
"""

QUALITY_CHECKS_SQL = """
SELECT run_id, layer, check_name, dimension, severity, status, total_rows, failing_rows,
       passing_pct, passed
FROM warehouse.v_data_quality
WHERE run_id = (SELECT max(run_id) FROM warehouse.v_data_quality)
ORDER BY passed, failing_rows DESC, check_name
"""

# A row with several reasons counts under each of them (as in the view).
QUARANTINE_SQL = """
SELECT reason, table_name, sum(rows) AS rows, sum(open_rows) AS open_rows,
       sum(resolved_rows) AS resolved_rows
FROM warehouse.v_quarantine_summary
GROUP BY reason, table_name
ORDER BY rows DESC, reason, table_name
"""

RUNS_SQL = """
SELECT run_id, status, started_at, finished_at, seconds, exit_code, stages,
       coalesce(error, '') AS error
FROM warehouse.v_pipeline_runs
ORDER BY run_id DESC
LIMIT %(limit)s
"""

STAGE_DURATIONS_SQL = """
SELECT s.run_id, s.stage, s.status, s.started_at, s.seconds, s.rows_out
FROM warehouse.v_stage_runs AS s
WHERE s.run_id IN (SELECT run_id FROM warehouse.v_pipeline_runs
                   ORDER BY run_id DESC LIMIT %(limit)s)
ORDER BY s.run_id, s.started_at
"""

FRESHNESS_SQL = """
SELECT layer, measured_by, last_loaded_at AS loaded_at, hours_since_load AS hours_ago
FROM warehouse.v_freshness
ORDER BY layer_order
"""

ALERTS_SQL = """
SELECT check_name, severity, message, opened_at, last_seen_at
FROM warehouse.v_open_alerts
ORDER BY severity = 'critical' DESC, opened_at
"""

HEALTH_SQL = """
SELECT checked_at, health, score
FROM warehouse.v_health
ORDER BY report_id DESC
LIMIT %(limit)s
"""


# ─── functions ───────────────────────────────────────────────────────────────────────────────


def relations(endpoint: Endpoint) -> frozenset[str]:
    """warehouse.* relations that exist (from the catalogue: no privilege needed)."""
    return frozenset(fetch_frame(endpoint, RELATIONS_SQL)["relation"])


def data_range(endpoint: Endpoint) -> tuple[dt.date | None, dt.date | None]:
    row = fetch_frame(endpoint, DATA_RANGE_SQL).iloc[0]
    first, last = row["first_date"], row["last_date"]
    return (None if pd.isna(first) else first, None if pd.isna(last) else last)


def filter_options(endpoint: Endpoint) -> dict[str, list[str]]:
    frame = fetch_frame(endpoint, FILTER_OPTIONS_SQL)
    return {
        kind: frame.loc[frame["kind"] == kind, "value"].tolist()
        for kind in ("category", "state", "segment")
    }


def kpis(endpoint: Endpoint, filters: Filters) -> dict[str, float]:
    """Revenue, orders, average order value and active customers of the filtered period."""
    if not filters.has_slices and filters.touches_data_edge:
        query = KPIS_AGG_SQL
    else:
        query = KPIS_SLICES_SQL
    row = fetch_frame(endpoint, query, filters.params()).iloc[0]
    revenue, orders = float(row["revenue"]), int(row["orders"])
    return {
        "revenue": revenue,
        "orders": orders,
        "aov": revenue / orders if orders else 0.0,
        "customers": int(row["customers"]),
    }


def _pick(filters: Filters, agg: str, slices: str) -> str:
    """The aggregate without a filter, the slices with one (any number of categories: orders
    from agg_sales_slices and agg_order_category_sets add up exactly)."""
    return slices if filters.has_slices else agg


def daily(endpoint: Endpoint, filters: Filters) -> pd.DataFrame:
    query = _pick(filters, DAILY_AGG_SQL, DAILY_SLICES_SQL)
    return fetch_frame(endpoint, query, filters.params())


def monthly(endpoint: Endpoint, filters: Filters) -> pd.DataFrame:
    query = _pick(filters, MONTHLY_AGG_SQL, MONTHLY_SLICES_SQL)
    return fetch_frame(endpoint, query, filters.params())


def weekday(endpoint: Endpoint, filters: Filters) -> pd.DataFrame:
    query = _pick(filters, WEEKDAY_AGG_SQL, WEEKDAY_SLICES_SQL)
    return fetch_frame(endpoint, query, filters.params())


def _product_aggs_apply(filters: Filters) -> bool:
    return filters.covers_all_dates and not filters.has_slices


def top_products_statement(filters: Filters) -> str:
    """The statement top_products issues for these filters."""
    if _product_aggs_apply(filters):
        return TOP_PRODUCTS_AGG_SQL
    if not filters.has_slices:
        return TOP_PRODUCTS_RANGE_SQL
    if not filters.covers_all_dates or filters.states:
        return TOP_PRODUCTS_LINES_SQL
    if filters.categories and filters.segments:
        return TOP_PRODUCTS_SLICES_SQL
    if len(filters.categories or filters.segments) == 1:
        return TOP_PRODUCTS_SLICER_SQL
    return TOP_PRODUCTS_SLICERS_SQL


def top_products(endpoint: Endpoint, filters: Filters, limit: int = 15) -> pd.DataFrame:
    query = top_products_statement(filters)
    return fetch_frame(endpoint, query, {**filters.params(), "limit": limit})


def categories(endpoint: Endpoint, filters: Filters) -> pd.DataFrame:
    # per category, revenue, profit and units add up over slices: any number of categories
    query = CATEGORIES_AGG_SQL if _product_aggs_apply(filters) else CATEGORIES_SLICES_SQL
    return fetch_frame(endpoint, query, filters.params())


def rfm_segments(endpoint: Endpoint, filters: Filters) -> pd.DataFrame:
    return fetch_frame(endpoint, RFM_SQL, filters.params())


def cohorts(endpoint: Endpoint, filters: Filters) -> pd.DataFrame:
    return fetch_frame(endpoint, COHORTS_SQL, filters.params())


def ltv_distribution(endpoint: Endpoint, filters: Filters) -> pd.DataFrame:
    return fetch_frame(endpoint, LTV_DISTRIBUTION_SQL, {**filters.params(), "buckets": LTV_BUCKETS})


def ltv_summary(endpoint: Endpoint, filters: Filters) -> dict[str, float]:
    row = fetch_frame(endpoint, LTV_SUMMARY_SQL, filters.params()).iloc[0]
    return {k: (0.0 if pd.isna(v) else float(v)) for k, v in row.items()}


def spend_by_state(endpoint: Endpoint, filters: Filters) -> pd.DataFrame:
    """Per state: customers and revenue. With all dates and no category filter, from
    agg_customer_metrics (current state); otherwise from the slices (state on the order date)."""
    if filters.covers_all_dates and not filters.categories:
        query = STATES_AGG_SQL
    else:
        query = STATES_SLICES_SQL
    return fetch_frame(endpoint, query, filters.params())


def payments(endpoint: Endpoint, filters: Filters) -> pd.DataFrame:
    query = _pick(filters, PAYMENTS_AGG_SQL, PAYMENTS_SLICES_SQL)
    return fetch_frame(endpoint, query, filters.params())


def payments_monthly(endpoint: Endpoint, filters: Filters) -> pd.DataFrame:
    query = _pick(filters, PAYMENTS_MONTHLY_AGG_SQL, PAYMENTS_MONTHLY_SLICES_SQL)
    return fetch_frame(endpoint, query, filters.params())


def quality_runs(endpoint: Endpoint, limit: int = 50) -> pd.DataFrame:
    return fetch_frame(endpoint, QUALITY_RUNS_SQL, {"limit": limit})


def quality_checks(endpoint: Endpoint) -> pd.DataFrame:
    return fetch_frame(endpoint, QUALITY_CHECKS_SQL)


def quarantine(endpoint: Endpoint) -> pd.DataFrame:
    return fetch_frame(endpoint, QUARANTINE_SQL)


def runs(endpoint: Endpoint, limit: int = 20) -> pd.DataFrame:
    return fetch_frame(endpoint, RUNS_SQL, {"limit": limit})


def stage_durations(endpoint: Endpoint, limit: int = 20) -> pd.DataFrame:
    return fetch_frame(endpoint, STAGE_DURATIONS_SQL, {"limit": limit})


def freshness(endpoint: Endpoint) -> pd.DataFrame:
    return fetch_frame(endpoint, FRESHNESS_SQL)


def open_alerts(endpoint: Endpoint) -> pd.DataFrame:
    return fetch_frame(endpoint, ALERTS_SQL)


def health(endpoint: Endpoint, limit: int = 50) -> pd.DataFrame:
    return fetch_frame(endpoint, HEALTH_SQL, {"limit": limit})
