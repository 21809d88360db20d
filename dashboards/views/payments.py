"""Payments: revenue and orders by payment method, online against offline, monthly mix."""

from __future__ import annotations

import plotly.express as px
import streamlit as st

from dashboards import ui

context = ui.page_context("Payments")
filters = context.filters
assert filters is not None
endpoint = context.access.warehouse
st.caption(ui.slice_caption(filters))

methods = ui.cached("payments", endpoint, filters)
methods["aov"] = (methods["revenue"].astype(float) / methods["orders"].astype(float)).round(2)
left, right = st.columns(2)
with left:
    figure = px.pie(
        methods, names="payment_method", values="revenue", hole=0.45, title="Revenue share"
    )
    st.plotly_chart(figure, width="stretch")
with right:
    by_type = methods.groupby("payment_type", as_index=False)[["orders", "revenue"]].sum()
    figure = px.bar(
        by_type,
        x="payment_type",
        y="revenue",
        hover_data=["orders"],
        title="Online and offline revenue",
        labels={"payment_type": ""},
    )
    st.plotly_chart(figure, width="stretch")

monthly = ui.cached("payments_monthly", endpoint, filters)
figure = px.area(
    monthly,
    x="month",
    y="revenue",
    color="payment_method",
    groupnorm="percent",
    title="Monthly payment mix (% of revenue)",
    labels={"revenue": "% of revenue", "month": "", "payment_method": ""},
)
st.plotly_chart(figure, width="stretch")
st.dataframe(methods, hide_index=True, width="stretch")
