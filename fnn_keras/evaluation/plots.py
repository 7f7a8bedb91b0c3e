"""Confusion-matrix pictures for TensorBoard and the evaluation report."""

from __future__ import annotations

import functools
import io
import os
import warnings

import numpy as np
from matplotlib import font_manager
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

# Fonts tried before matplotlib's default, so Chinese and Japanese label
# names draw where one of them is installed (the Noto CJK fonts on Debian
# come with `fonts-noto-cjk`).
CJK_FONTS = (
    "Noto Sans CJK SC",
    "Noto Sans CJK JP",
    "Source Han Sans SC",
    "WenQuanYi Zen Hei",
    "WenQuanYi Micro Hei",
    "SimHei",
    "Microsoft YaHei",
    "PingFang SC",
)


# File-name parts of those fonts, for fonts installed after matplotlib cached its font list.
CJK_FONT_FILES = ("notosanscjk", "sourcehansans", "wqy", "simhei", "msyh", "pingfang")


@functools.cache
def _font_families() -> tuple[str, ...]:
    installed = {font.name for font in font_manager.fontManager.ttflist}
    found = [name for name in CJK_FONTS if name in installed]
    if not found:
        # matplotlib caches the system font list once; a CJK font installed
        # later stays unknown to it until it is added by path.
        for path in font_manager.findSystemFonts():
            if any(part in os.path.basename(path).lower() for part in CJK_FONT_FILES):
                try:
                    font_manager.fontManager.addfont(path)
                except (OSError, RuntimeError, ValueError):
                    continue
        installed = {font.name for font in font_manager.fontManager.ttflist}
        found = [name for name in CJK_FONTS if name in installed]
    return (*found, "DejaVu Sans")


def confusion_matrix_png(
    confusion, labels: list[str], normalize: bool = False, title: str | None = None
) -> bytes:
    """Draw a confusion matrix as a PNG image.

    Rows are true labels and columns predicted labels. With `normalize`,
    each row is divided by its count, so a cell is the fraction of that true
    label predicted as the column's label. A label without examples gets a
    row of zeros. Each cell is written out as well as coloured.

    Args:
        confusion: Square matrix of counts, `(num_labels, num_labels)`.
        labels: Label names in class-id order.
        normalize: Draw row fractions instead of counts.
        title: Title above the matrix; defaults to one saying which kind.

    Returns:
        The PNG file's bytes.

    Example:

    ```python
    png = confusion_matrix_png([[5, 1], [2, 7]], ["neg", "pos"], normalize=True)
    open("confusion.png", "wb").write(png)
    ```
    """
    counts = np.asarray(confusion, dtype=np.float64)
    if counts.shape != (len(labels), len(labels)):
        raise ValueError(
            f"`confusion` must be {len(labels)}x{len(labels)} for {len(labels)} labels. "
            f"Received: shape {counts.shape}."
        )
    if normalize:
        totals = counts.sum(axis=1, keepdims=True)
        values = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
        cell_format = "{:.2f}"
    else:
        values = counts
        cell_format = "{:.0f}"
    if title is None:
        title = "Confusion matrix (row fractions)" if normalize else "Confusion matrix (counts)"

    # The figure grows with the label count so that names and cells stay legible.
    size = min(3.0 + 0.6 * len(labels), 24.0)
    figure = Figure(figsize=(size + 1.5, size), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    image = axes.imshow(values, cmap="Blues", vmin=0.0, vmax=1.0 if normalize else None)
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04)
    ticks = np.arange(len(labels))
    axes.set_xticks(
        ticks, labels=labels, rotation=45, ha="right", fontfamily=list(_font_families())
    )
    axes.set_yticks(ticks, labels=labels, fontfamily=list(_font_families()))
    axes.set_xlabel("predicted label")
    axes.set_ylabel("true label")
    axes.set_title(title)
    # Cells darker than the middle of the colour scale get white text.
    threshold = (1.0 if normalize else values.max()) / 2
    font_size = 10 if len(labels) <= 10 else 7
    for row in range(len(labels)):
        for column in range(len(labels)):
            value = values[row, column]
            axes.text(
                column,
                row,
                cell_format.format(value),
                ha="center",
                va="center",
                fontsize=font_size,
                color="white" if value > threshold else "black",
            )
    figure.tight_layout()

    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # A label character that no installed font has draws as a box;
        # matplotlib warns once per character, which would flood the log.
        warnings.filterwarnings("ignore", message="Glyph .* missing from")
        figure.savefig(buffer, format="png")
    return buffer.getvalue()
