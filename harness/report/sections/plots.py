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


# The picture the headline shows, the first of these that was drawn: a fit says the most.
KEY_FIGURES = ("plots/fit_aggregate_", "plots/fit_held-out_", "plots/aggregate.png", "plots/zero_shot.png")


def key_figure(figures: list[tuple[str, str]]) -> str:
    """The one figure under the headline (its image line), or "" without any of KEY_FIGURES."""
    for prefix in KEY_FIGURES:
        for title, png in figures:
            if png.startswith(prefix):
                return f"![{title}]({png})"
    return ""
