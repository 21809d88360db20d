"""Pipeline health: recent runs, stage durations, freshness of each layer, open alerts."""

from __future__ import annotations

import plotly.express as px
import streamlit as st

from dashboards import ui

context = ui.page_context("Pipeline health", needs="ops")
endpoint = context.access.warehouse

runs = ui.cached("runs", endpoint)
health = ui.cached("health", endpoint)
alerts = ui.cached("open_alerts", endpoint)

columns = st.columns(4)
if not runs.empty:
    last = runs.iloc[0]
    columns[0].metric("Last run", f"#{last['run_id']} {last['status']}")
    successes = runs[runs["status"] == "success"]
    last_success = None if successes.empty else successes.iloc[0]["finished_at"]
    columns[1].metric(
        "Last success (UTC)",
        "never" if last_success is None else f"{last_success:%H:%M}",
        help=None if last_success is None else f"{last_success:%Y-%m-%d %H:%M:%S} UTC",
    )
if not health.empty:
    columns[2].metric("Health", f"{health.iloc[0]['health']} ({float(health.iloc[0]['score']):g})")
columns[3].metric("Open alerts", ui.count(len(alerts)))

if not alerts.empty:
    st.subheader("Open alerts")
    st.dataframe(alerts, hide_index=True, width="stretch")

left, right = st.columns([3, 2])
with left:
    stages = ui.cached("stage_durations", endpoint)
    if stages.empty:
        st.info("No stage has run yet.")
    else:
        stages = stages.astype({"seconds": float})
        stages["run"] = "#" + stages["run_id"].astype(str)
        figure = px.bar(
            stages,
            x="run",
            y="seconds",
            color="stage",
            hover_data=["status", "rows_out"],
            title="Stage durations of recent runs (s)",
            labels={"run": ""},
        )
        figure.update_xaxes(type="category")
        st.plotly_chart(figure, width="stretch")
with right:
    freshness = ui.cached("freshness", endpoint)
    freshness = freshness.dropna(subset=["loaded_at"])
    if freshness.empty:
        st.info("Nothing has been loaded yet.")
    else:
        freshness = freshness.astype({"hours_ago": float})
        freshness["age"] = [
            f"{hours * 60:.0f} min ago" if hours < 1 else f"{hours:.1f} h ago"
            for hours in freshness["hours_ago"]
        ]
        figure = px.bar(
            freshness,
            x="hours_ago",
            y="layer",
            orientation="h",
            text="age",
            hover_data=["measured_by", "loaded_at"],
            title="Freshness: hours since the last load",
            labels={"layer": "", "hours_ago": "hours ago"},
        )
        figure.update_layout(
            yaxis={"categoryorder": "array", "categoryarray": list(freshness["layer"])[::-1]}
        )
        figure.update_traces(textposition="outside", cliponaxis=False)
        figure.update_xaxes(range=[0, max(1.0, float(freshness["hours_ago"].max()) * 1.3)])
        st.plotly_chart(figure, width="stretch")
    if context.filters is not None and context.filters.data_end is not None:
        st.caption(f"Latest order date in the warehouse: {context.filters.data_end:%Y-%m-%d}")

st.subheader("Recent runs")
st.dataframe(runs, hide_index=True, width="stretch")
