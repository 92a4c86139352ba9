"""record() inside a real papermill run, read back by read_metrics()."""

from __future__ import annotations

import math
from pathlib import Path

import nbformat
import numpy as np
import papermill as pm
import pytest

from tcpkit.release.metrics import METRIC_MIME, MetricError, _check_value, read_metrics


def _notebook(path: Path, *sources: str) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(src) for src in sources]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


def test_papermill_run_records_and_later_value_wins(tmp_path: Path) -> None:
    source = _notebook(
        tmp_path / "in.ipynb",
        "from tcpkit.release.metrics import record\nimport numpy as np",
        "record('recall', 0.5)\nrecord('flags', np.array([1, 2]))\nrecord('ok', True)",
        "record('recall', np.float64(0.97))\nrecord('label', 'drift')",
    )
    out = tmp_path / "out.ipynb"
    pm.execute_notebook(str(source), str(out), kernel_name="python3", progress_bar=False)
    metrics = read_metrics(out)
    assert metrics == {"flags": [1, 2], "ok": True, "recall": 0.97, "label": "drift"}
    assert list(metrics) == ["flags", "ok", "recall", "label"]


def test_refuses_values_that_are_not_json_data() -> None:
    with pytest.raises(MetricError, match="object"):
        _check_value("x", object())
    with pytest.raises(MetricError, match="dict"):
        _check_value("x", {"a": 1})


def test_non_finite_numbers_become_readable_strings() -> None:
    assert _check_value("x", math.nan) == "nan"
    assert _check_value("x", np.float32(np.inf)) == "inf"
    assert _check_value("x", [1.5, -math.inf]) == [1.5, "-inf"]


def test_record_refuses_bad_names() -> None:
    from tcpkit.release.metrics import record

    with pytest.raises(MetricError, match="invalid"):
        record("../etc", 1)


def test_read_metrics_reports_missing_and_malformed_notebooks(tmp_path: Path) -> None:
    with pytest.raises(MetricError, match="does not exist"):
        read_metrics(tmp_path / "absent.ipynb")
    bad = tmp_path / "bad.ipynb"
    bad.write_text("{not json")
    with pytest.raises(MetricError, match="not a valid notebook"):
        read_metrics(bad)


def test_read_metrics_on_a_notebook_without_metrics_is_empty(tmp_path: Path) -> None:
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("1")
    cell.outputs = [nbformat.v4.new_output("display_data", data={"text/plain": "1"})]
    nb.cells = [cell]
    assert read_metrics(nb) == {}
    cell.outputs.append(
        nbformat.v4.new_output("display_data", data={METRIC_MIME: {"value": 1}})
    )
    with pytest.raises(MetricError, match="no name"):
        read_metrics(nb)
