"""Matplotlib figures of a weight report. matplotlib is imported inside the functions only."""

from __future__ import annotations

from .report import STATUS_COLORS, STATUSES


def params_chart(report, *, title: str | None = None, width: float = 8.0, height: float = 2.6):
    """Bar chart of parameters per layer, in graph order, each bar coloured by its weight status.

    Layers without parameters are left out (they would be empty bars); removed layers are drawn
    at the end, in grey. Returns a ``matplotlib.figure.Figure`` that belongs to no pyplot state,
    so it shows once in a notebook and can be saved with ``fig.savefig(...)``.

    Layer names come from model files: every label is drawn as literal text (no mathtext for
    ``$...$``, no TeX), so a name such as ``d$\\foo{$`` shows as written instead of raising.
    """
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    literal = {"parse_math": False, "usetex": False}  # names are text, never markup
    rows = [row for row in report.rows if row.params > 0]
    fig = Figure(figsize=(width, height), layout="constrained")
    ax = fig.add_subplot()
    if not rows:
        ax.text(0.5, 0.5, "no layer has parameters", ha="center", va="center", transform=ax.transAxes,
                **literal)
        ax.set_axis_off()
        return fig
    colors = [STATUS_COLORS.get(row.status, "#000000") for row in rows]
    ax.bar(range(len(rows)), [row.params for row in rows], color=colors, width=0.85)
    if len(rows) <= 30:  # names stay readable only on small models
        ax.set_xticks(range(len(rows)), [row.layer.split("/")[-1] for row in rows], rotation=60, ha="right", fontsize=7,
                      **literal)
    else:
        ax.set_xlabel(f"{len(rows)} layers with parameters, in graph order", **literal)
    ax.set_ylabel("parameters", **literal)
    if max(row.params for row in rows) > 50 * max(1, min(row.params for row in rows)):
        ax.set_yscale("log")
    present = [s for s in STATUSES if any(row.status == s for row in rows)]
    ax.legend(handles=[Patch(color=STATUS_COLORS[s], label=s) for s in present], fontsize=7, loc="upper left",
              bbox_to_anchor=(1.0, 1.0), frameon=False)
    ax.set_title(title or report.summary(), fontsize=8, loc="left", **literal)
    ax.spines[["top", "right"]].set_visible(False)
    return fig
