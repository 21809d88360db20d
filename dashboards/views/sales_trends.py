"""Sales trends: daily and monthly revenue with moving averages, and the weekday pattern."""

from __future__ import annotations

import plotly.express as px
import plotly.graph_objects as go
import streamlit as st

from dashboards import ui

context = ui.page_context("Sales trends")
filters = context.filters
assert filters is not None
endpoint = context.access.warehouse
st.caption(ui.slice_caption(filters))

daily = ui.cached("daily", endpoint, filters)
figure = go.Figure()
figure.add_bar(x=daily["day"], y=daily["revenue"], name="revenue", marker_color="#9ecae1")
figure.add_scatter(
    x=daily["day"], y=daily["revenue_ma7"], name="7-day moving average", line={"color": "#08519c"}
)
figure.update_layout(title="Daily revenue", legend={"orientation": "h"}, bargap=0)
st.plotly_chart(figure, width="stretch")

left, right = st.columns(2)
with left:
    monthly = ui.cached("monthly", endpoint, filters)
    figure = go.Figure()
    figure.add_bar(x=monthly["month"], y=monthly["revenue"], name="revenue", marker_color="#a1d99b")
    figure.add_scatter(
        x=monthly["month"],
        y=monthly["revenue_ma3"],
        name="3-month moving average",
        line={"color": "#006d2c"},
    )
    figure.update_layout(title="Monthly revenue", legend={"orientation": "h"})
    st.plotly_chart(figure, width="stretch")
with right:
    weekday = ui.cached("weekday", endpoint, filters)
    figure = px.bar(
        weekday,
        x="day_name",
        y="avg_revenue",
        hover_data=["avg_orders", "revenue"],
        title="Average revenue per weekday",
        labels={"day_name": "", "avg_revenue": "average daily revenue"},
    )
    st.plotly_chart(figure, width="stretch")

with st.expander("Monthly figures"):
    st.dataframe(monthly, hide_index=True, width="stretch")
