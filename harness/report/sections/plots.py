"""Plots: each figure of harness.report.figures as an image, with a link to its SVG.

    plots_section([("Aggregate with intervals", "plots/aggregate.png")]) ->
        ## Plots

        ### Aggregate with intervals

        ![Aggregate with intervals](plots/aggregate.png)

        [SVG](plots/aggregate.svg)
"""

from __future__ import annotations


def plots_section(figures: list[tuple[str, str]]) -> str:
    """The Plots section, or "" without a figure. `figures`: (title, PNG path relative to the
    suite's folder); each has an SVG of the same name beside it (harness.report.plots.save)."""
    if not figures:
        return ""
    parts = ["## Plots", "PNG in the report; each links its SVG (vector, for papers and slides)."]
    for title, png in figures:
        svg = png[: -len(".png")] + ".svg"
        parts += [f"### {title}", f"![{title}]({png})", f"[SVG]({svg})"]
    return "\n\n".join(parts)
