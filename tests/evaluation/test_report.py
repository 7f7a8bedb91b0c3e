"""The Markdown report and the confusion-matrix pictures."""

import numpy as np
import pytest
from matplotlib import font_manager

from fnn_keras.evaluation import plots
from fnn_keras.evaluation.metrics import classification_metrics
from fnn_keras.evaluation.plots import confusion_matrix_png
from fnn_keras.evaluation.report import format_report, per_label_table

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_tables_escape_markdown_in_labels():
    metrics = classification_metrics(np.array([0, 1, 1]), np.array([0, 0, 1]), ["a|b", "x_y"])
    report = format_report(metrics)
    assert "| a\\|b | 0.5000 | 1.0000 | 0.6667 | 1 |" in report
    assert "| true \\ predicted | a\\|b | x\\_y |" in report
    # Every table row keeps its column count once the escaped pipes are set aside.
    for line in report.splitlines():
        if line.startswith("| true") or line.startswith("| a") or line.startswith("| x"):
            assert line.replace("\\|", "").count("|") in (4, 6), line


def test_averages_weight_by_support():
    metrics = classification_metrics(np.array([0, 0, 0, 1]), np.array([0, 0, 1, 1]), ["a", "b"])
    table = per_label_table(metrics)
    # F1: a = 0.8, b = 0.6667; macro 0.7333, support-weighted (3 * 0.8 + 0.6667) / 4 = 0.7667.
    assert "| macro average | 0.7500 | 0.8333 | 0.7333 | 4 |" in table
    assert "| weighted average | 0.8750 | 0.7500 | 0.7667 | 4 |" in table


def test_confusion_png_rejects_wrong_shape():
    with pytest.raises(ValueError, match="must be 3x3"):
        confusion_matrix_png([[1, 2], [3, 4]], ["a", "b", "c"])


def test_chinese_labels_use_a_cjk_font():
    system_fonts = [path for path in font_manager.findSystemFonts() if "CJK" in path]
    if not system_fonts:
        pytest.skip("No Noto CJK font on this machine (Debian: apt-get install fonts-noto-cjk).")
    assert "CJK" in plots._font_families()[0]
    png = confusion_matrix_png([[3, 1], [0, 4]], ["正面", "负面"], normalize=True)
    assert png.startswith(PNG_SIGNATURE)
