"""Data quality: the score and grade of every run, the latest checks, quarantine by reason."""

from __future__ import annotations

import plotly.express as px
import streamlit as st

from dashboards import ui

context = ui.page_context("Data quality", needs="ops")
endpoint = context.access.warehouse

runs = ui.cached("quality_runs", endpoint)
if runs.empty:
    st.info("No data-quality result is recorded yet: the quality and production stages write one.")
else:
    latest = runs.iloc[0]
    columns = st.columns(4)
    previous_score = runs.iloc[1]["score"] if len(runs) > 1 else None
    score = latest["score"]
    columns[0].metric(
        "Quality score (latest run)",
        "-" if score is None else f"{float(score):.1f}",
        delta=None
        if score is None or previous_score is None
        else f"{float(score) - float(previous_score):+.1f}",
    )
    columns[1].metric("Grade", latest["grade"] or "-")
    columns[2].metric("Checks", ui.count(latest["checks"]))
    columns[3].metric("Failed checks", ui.count(latest["failed_checks"]))
    history = runs.sort_values("run_id").astype({"score": float})
    history["run"] = "#" + history["run_id"].astype(str)
    figure = px.line(
        history,
        x="run",
        y="score",
        text="grade",
        markers=True,
        title="Score and grade over runs",
        labels={"run": "run"},
    )
    figure.update_traces(textposition="top center")
    figure.update_xaxes(type="category")
    figure.update_yaxes(range=[min(0.0, history["score"].min() - 5), 105])
    st.plotly_chart(figure, width="stretch")

left, right = st.columns(2)
with left:
    quarantine = ui.cached("quarantine", endpoint)
    if quarantine.empty:
        st.success("No row has been quarantined.")
    else:
        figure = px.bar(
            quarantine,
            x="rows",
            y="reason",
            color="table_name",
            orientation="h",
            hover_data=["open_rows"],
            title="Quarantined rows by reason",
            labels={"reason": "", "table_name": "table"},
        )
        figure.update_layout(yaxis={"categoryorder": "total ascending"})
        st.plotly_chart(figure, width="stretch")
with right:
    checks = ui.cached("quality_checks", endpoint)
    if not checks.empty:
        by_dimension = checks.groupby("dimension", as_index=False).agg(
            checks=("check_name", "count"), passed=("passed", "sum")
        )
        by_dimension["pass_rate"] = 100 * by_dimension["passed"] / by_dimension["checks"]
        figure = px.bar(
            by_dimension,
            x="dimension",
            y="pass_rate",
            hover_data=["checks", "passed"],
            title="Checks passed by dimension (latest run, %)",
            labels={"dimension": "", "pass_rate": "% passed"},
        )
        figure.update_yaxes(range=[0, 100])
        st.plotly_chart(figure, width="stretch")
if not checks.empty:
    st.subheader("Checks of the latest run")
    st.dataframe(checks, hide_index=True, width="stretch")
