"""Draws docs/img/team.svg: a leader, its cut, the frozen copy with a new head, and followers.

Run from the repository root: `python docs/img/make_team_diagram.py`.
"""

import pathlib

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch  # noqa: E402

OUT = pathlib.Path(__file__).with_name("team.svg")
KEPT, CUT_AWAY, NEW, FOLLOWER = "#9ecae1", "#e0e0e0", "#fdae6b", "#a1d99b"


def box(ax, x, y, text, color, w=1.5, h=0.55, style="-"):
    ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.04", fc=color, ec="#333", ls=style))
    ax.text(x + w / 2, y + h / 2, text, ha="center", va="center", fontsize=9)


def arrow(ax, start, end, text=None):
    ax.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=12, color="#333"))
    if text:
        ax.text((start[0] + end[0]) / 2 + 0.08, (start[1] + end[1]) / 2, text, fontsize=8, color="#333")


def main():
    matplotlib.rcParams["svg.hashsalt"] = "keras-team"  # the same file on every run
    fig, ax = plt.subplots(figsize=(9, 4.2))
    ax.set_xlim(0, 10.5)
    ax.set_ylim(0, 5)
    ax.axis("off")

    # The leader, trained on the source task, and where it is cut.
    ax.text(0.2, 4.6, "leader (trained on the source task)", fontsize=10, weight="bold")
    for i, (name, color) in enumerate([("conv1", KEPT), ("conv2", KEPT), ("fc1", KEPT), ("fc2", CUT_AWAY),
                                       ("logits", CUT_AWAY)]):
        box(ax, 0.2 + i * 1.75, 3.8, name, color)
    ax.plot([5.35, 5.35], [3.6, 4.55], color="#c00", lw=2, ls="--")
    ax.text(5.42, 3.42, "cut: keep=3", color="#c00", fontsize=9)

    # The team, trained on the target task.
    ax.text(0.2, 2.75, "team (one keras.Model, trained on the target task)", fontsize=10, weight="bold")
    box(ax, 0.2, 1.8, "kept layers\ncopied, frozen", KEPT, w=2.2, h=0.75)
    arrow(ax, (1.3, 3.75), (1.3, 2.6), "copy")
    box(ax, 3.3, 2.0, "new head", NEW, w=1.5, h=0.5)
    arrow(ax, (2.45, 2.25), (3.25, 2.25))
    box(ax, 5.6, 2.0, "leader's logits", NEW, w=1.9, h=0.5)
    arrow(ax, (4.85, 2.25), (5.55, 2.25))
    box(ax, 3.3, 0.7, "follower (MLP)", FOLLOWER, w=1.5, h=0.5)
    arrow(ax, (1.3, 1.75), (3.25, 0.95), "tap: features")
    box(ax, 7.9, 0.7, "follower (distils)", FOLLOWER, w=1.9, h=0.5)
    arrow(ax, (6.55, 1.95), (8.5, 1.25), "tap: probs")
    arrow(ax, (4.85, 0.95), (5.55, 0.95))
    ax.text(5.6, 0.88, "its logits", fontsize=9)
    ax.text(0.2, 0.15, "team loss = sum of w_i x (member i's loss on the target task); "
            "followers read taps computed once", fontsize=9, style="italic")
    fig.savefig(OUT, format="svg", bbox_inches="tight", metadata={"Date": None})
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
