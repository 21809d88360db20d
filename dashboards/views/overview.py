"""Overview: revenue, orders, average order value and active customers of the chosen period,
each against the period of the same length just before it."""

from __future__ import annotations

import plotly.express as px
import streamlit as st

from dashboards import ui

context = ui.page_context("Overview")
filters = context.filters
assert filters is not None
endpoint = context.access.warehouse
previous = filters.previous()
current_kpis = ui.cached("kpis", endpoint, filters)
previous_kpis = ui.cached("kpis", endpoint, previous)

st.caption(
    f"{ui.slice_caption(filters)} · compared with {previous.start:%Y-%m-%d} – "
    f"{previous.end:%Y-%m-%d} ({filters.days} days before)"
)
columns = st.columns(4)
for column, (key, label, formatter, help_text) in zip(
    columns,
    (
        ("revenue", "Revenue", ui.money, "Sum of line_total (after discount)."),
        ("orders", "Orders", ui.count, "Distinct orders (transaction_id)."),
        ("aov", "Average order value", ui.money, "Revenue / orders."),
        ("customers", "Active customers", ui.count, "Distinct customers who ordered."),
    ),
    strict=True,
):
    column.metric(
        label,
        formatter(current_kpis[key]),
        delta=ui.change(current_kpis[key], previous_kpis[key]),
        help=help_text
        + ("" if previous_kpis[key] else " No value in the previous period to compare with."),
    )

left, right = st.columns([3, 2])
with left:
    daily = ui.cached("daily", endpoint, filters)
    figure = px.line(
        daily,
        x="day",
        y=["revenue", "revenue_ma7"],
        labels={"value": "revenue", "day": "", "variable": ""},
        title="Daily revenue and 7-day average",
    )
    figure.for_each_trace(
        lambda t: t.update(name={"revenue_ma7": "7-day average"}.get(t.name, t.name))
    )
    st.plotly_chart(figure, width="stretch")
with right:
    categories = ui.cached("categories", endpoint, filters)
    figure = px.bar(
        categories,
        x="revenue",
        y="category",
        orientation="h",
        title="Revenue by category",
        labels={"category": ""},
    )
    figure.update_layout(yaxis={"categoryorder": "total ascending"})
    st.plotly_chart(figure, width="stretch")
