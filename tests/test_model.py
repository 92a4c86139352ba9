"""record_model's validation, the .npz round trip, and load_detector's refusals (no kernel)."""

from __future__ import annotations

import base64
from pathlib import Path

import nbformat
import numpy as np
import pytest
from chainkit import freeze_with_chain, write_statement

from tcpkit.release.metrics import (
    MODEL_MIME,
    MetricError,
    check_model,
    load_model_bytes,
    model_bytes,
    read_model,
)
from tcpkit.release.promote import FrozenModuleError, load_detector, load_frozen, load_model
from tcpkit.release.signing import ensure_signer

GOOD = {"mean": np.arange(3.0), "count": np.array([1, 2], dtype=np.int32), "ok": np.array([True]),
        "names": np.array(["x", "y"]), "cov": np.eye(2, dtype=np.float32)}


@pytest.mark.parametrize(("arrays", "match"), [
    ({}, "non-empty mapping"),
    ({"a": [1, 2]}, "not a numpy.ndarray"),
    ({"a": np.array([object()])}, "dtype object"),
    ({"a": np.array([b"x"])}, "dtype |S1"),
    ({"a": np.zeros(2, dtype=[("x", "f8")])}, "allowed are"),
    ({"a": np.array(["2020-01-01"], dtype="datetime64[D]")}, "allowed are"),
    ({"file": np.zeros(1)}, "invalid"),
    ({"1a": np.zeros(1)}, "invalid"),
    ({"a/b": np.zeros(1)}, "invalid"),
])
def test_check_model_refuses_what_would_need_pickle_or_cannot_be_saved(arrays: dict, match: str) -> None:
    with pytest.raises(MetricError, match=match):
        check_model(arrays)


def test_model_round_trip_without_pickle() -> None:
    data = model_bytes(GOOD)
    with np.load(__import__("io").BytesIO(data), allow_pickle=False) as npz:
        assert sorted(npz.files) == sorted(GOOD)
    back = load_model_bytes(data)
    for name, value in GOOD.items():
        np.testing.assert_array_equal(back[name], value)
        assert back[name].dtype == value.dtype
    with pytest.raises(MetricError, match="not a loadable .npz"):
        load_model_bytes(data[:-10])


def test_read_model_takes_the_last_recorded_output() -> None:
    nb = nbformat.v4.new_notebook()
    cells = []
    for value in (1.0, 2.0):
        cell = nbformat.v4.new_code_cell("record_model(...)")
        encoded = base64.b64encode(model_bytes({"v": np.array([value])})).decode()
        cell.outputs = [nbformat.v4.new_output("display_data", data={MODEL_MIME: encoded})]
        cells.append(cell)
    nb.cells = cells
    assert load_model_bytes(read_model(nb) or b"")["v"].tolist() == [2.0]
    nb.cells = cells[:1]
    nb.cells[0].outputs[0]["data"][MODEL_MIME] = "not base64!"
    with pytest.raises(MetricError, match="not valid base64"):
        read_model(nb)
    nb.cells = []
    assert read_model(nb) is None


@pytest.fixture()
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, object]:
    monkeypatch.setenv("TCPKIT_KEYS", str(tmp_path / "keys"))
    project = tmp_path / "project"
    (project / ".tcpkit").mkdir(parents=True)
    signer, _ = ensure_signer("runner-unit", trust_dir=project / ".tcpkit" / "trust")
    return project, signer


MODULE = b"import numpy as np\n\ndef from_model(arrays):\n    return float(arrays['v'].sum())\n"


def test_load_detector_builds_from_the_frozen_model(root: tuple[Path, object]) -> None:
    project, signer = root
    freeze_with_chain(project, "alpha", MODULE, signer, model_bytes({"v": np.array([1.0, 2.0])}))
    assert load_detector("alpha", project) == 3.0
    assert load_model("alpha", project)["v"].tolist() == [1.0, 2.0]


def test_no_model_and_no_from_model_are_said_clearly(root: tuple[Path, object]) -> None:
    project, signer = root
    freeze_with_chain(project, "alpha", MODULE, signer)
    assert load_frozen("alpha", project).from_model({"v": np.ones(2)}) == 2.0
    with pytest.raises(FrozenModuleError, match="froze no model.*record_model"):
        load_detector("alpha", project)
    with pytest.raises(FrozenModuleError, match="froze no model"):
        load_model("alpha", project)
    (project / "production" / "alpha.model.npz").write_bytes(model_bytes({"v": np.ones(1)}))
    with pytest.raises(FrozenModuleError, match="not named by the signed statement"):
        load_frozen("alpha", project)
    (project / "production" / "alpha.model.npz").unlink()
    freeze_with_chain(project, "beta", b"X = 1\n", signer, model_bytes({"v": np.ones(1)}))
    with pytest.raises(FrozenModuleError, match="defines no from_model"):
        load_detector("beta", project)


def test_a_statement_of_another_gate_is_refused(root: tuple[Path, object]) -> None:
    project, signer = root
    model = model_bytes({"v": np.ones(1)})
    freeze_with_chain(project, "alpha", MODULE, signer, model)
    write_statement(project, "alpha", MODULE, signer, "STAGING", model)
    for load in (load_frozen, load_model, load_detector):
        with pytest.raises(FrozenModuleError, match="not TCPKIT_GATE_PRODUCTION"):
            load("alpha", project)


def test_a_pickled_array_never_loads() -> None:
    import io

    buffer = io.BytesIO()
    np.savez(buffer, evil=np.array([{"a": 1}], dtype=object))  # needs pickle to load
    with pytest.raises(MetricError, match="not a loadable .npz without pickle"):
        load_model_bytes(buffer.getvalue())
