"""Products and categories: top products by revenue, category revenue and margin."""

from __future__ import annotations

import plotly.express as px
import streamlit as st

from dashboards import ui

context = ui.page_context("Products and categories")
filters = context.filters
assert filters is not None
endpoint = context.access.warehouse
st.caption(ui.slice_caption(filters))

limit = st.slider("Top products", min_value=5, max_value=50, value=15, step=5)
top = ui.cached("top_products", endpoint, filters, limit)
figure = px.bar(
    top,
    x="revenue",
    y="product_name",
    color="category",
    orientation="h",
    hover_data=["product_id", "profit", "units", "margin_pct"],
    title=f"Top {limit} products by revenue",
    labels={"product_name": ""},
)
figure.update_layout(yaxis={"categoryorder": "total ascending"}, height=max(400, 24 * len(top)))
st.plotly_chart(figure, width="stretch")

categories = ui.cached("categories", endpoint, filters)
left, right = st.columns(2)
with left:
    figure = px.bar(
        categories,
        x="category",
        y=["revenue", "profit"],
        barmode="group",
        title="Revenue and profit by category",
        labels={"category": "", "value": "", "variable": ""},
    )
    st.plotly_chart(figure, width="stretch")
with right:
    figure = px.scatter(
        categories,
        x="revenue",
        y="margin_pct",
        size="units",
        text="category",
        title="Margin % against revenue",
        labels={"margin_pct": "margin %"},
    )
    figure.update_traces(textposition="top center")
    st.plotly_chart(figure, width="stretch")
st.dataframe(categories, hide_index=True, width="stretch")
