"""Customers: RFM segments, cohort retention, lifetime-value distribution, spend by state."""

from __future__ import annotations

import plotly.express as px
import streamlit as st

from dashboards import ui

context = ui.page_context("Customers")
filters = context.filters
assert filters is not None
endpoint = context.access.warehouse
st.caption(
    ui.slice_caption(filters)
    + " · RFM and lifetime value are per customer over all their orders (state and segment "
    "filters apply); cohorts are those that started in the date range."
)

summary = ui.cached("ltv_summary", endpoint, filters)
columns = st.columns(4)
columns[0].metric("Customers", ui.count(summary["customers"]))
columns[1].metric("Mean lifetime value", ui.money(summary["mean"]))
columns[2].metric("Median lifetime value", ui.money(summary["median"]))
columns[3].metric("90th percentile", ui.money(summary["p90"]))

left, right = st.columns(2)
with left:
    rfm = ui.cached("rfm_segments", endpoint, filters)
    figure = px.bar(
        rfm,
        x="rfm_segment",
        y="customers",
        color="rfm_segment",
        hover_data=["revenue", "avg_spent", "avg_orders", "avg_days_since_last_purchase"],
        title="RFM segments",
        labels={"rfm_segment": ""},
    )
    figure.update_layout(showlegend=False)
    st.plotly_chart(figure, width="stretch")
with right:
    ltv = ui.cached("ltv_distribution", endpoint, filters)
    ltv["range"] = [
        f"{ui.money(low)} – {ui.money(high)}"
        for low, high in zip(ltv["spent_from"], ltv["spent_to"], strict=True)
    ]
    figure = px.bar(
        ltv,
        x="spent_from",
        y="customers",
        hover_data=["range"],
        title="Lifetime value distribution",
        labels={"spent_from": "total spent"},
    )
    figure.update_layout(bargap=0.05)
    st.plotly_chart(figure, width="stretch")

cohorts = ui.cached("cohorts", endpoint, filters)
if cohorts.empty:
    st.info("No cohort started in the chosen date range.")
else:
    pivot = cohorts.pivot(index="cohort_month", columns="months_since", values="retention_rate")
    pivot.index = [f"{month:%Y-%m}" for month in pivot.index]
    figure = px.imshow(
        pivot.astype(float),
        text_auto=".0%",
        aspect="auto",
        color_continuous_scale="Blues",
        title="Cohort retention (share of the cohort active n months after its first purchase)",
        labels={"x": "months since first purchase", "y": "cohort", "color": "retention"},
    )
    figure.update_yaxes(type="category")
    figure.update_xaxes(type="category")
    figure.update_layout(height=max(400, 26 * len(pivot)))
    st.plotly_chart(figure, width="stretch")

states = ui.cached("spend_by_state", endpoint, filters)
figure = px.bar(
    states.head(25),
    x="revenue",
    y="state",
    orientation="h",
    hover_data=["customers"],
    title="Spend by state (top 25)",
    labels={"state": ""},
)
figure.update_layout(
    yaxis={"categoryorder": "total ascending"}, height=max(400, 22 * len(states.head(25)))
)
st.plotly_chart(figure, width="stretch")
