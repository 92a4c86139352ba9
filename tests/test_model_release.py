"""The fitted model ships: a tiny project whose notebook records a model and exports from_model.

One module-scoped project runs its component through the four gates once (four
kernel starts); the tests then load the frozen module, model and detector, parse every
signed statement with the in-toto attestation framework's bindings, and show that
``tcpkit verify`` exits 1 on a tampered model, an edited metric in SQLite, a
DEVELOPMENT statement presented as PRODUCTION and a broken chain.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import nbformat
import numpy as np
import pytest

from tcpkit.cli import main
from tcpkit.release.gates import GATES
from tcpkit.release.promote import FrozenModuleError, load_detector, load_frozen, load_model

pytestmark = pytest.mark.slow

EXPORT = '''import numpy as np


class Scorer:
    """Largest standardised deviation of a row from the fitted mean."""

    def __init__(self, mean, scale):
        self.mean_ = mean
        self.scale_ = scale

    def score(self, X):
        return np.abs((np.asarray(X, dtype=float) - self.mean_) / self.scale_).max(axis=1)


def fit(X):
    X = np.asarray(X, dtype=float)
    return Scorer(X.mean(axis=0), X.std(axis=0))


def from_model(arrays):
    return Scorer(arrays["mean"], arrays["scale"])
'''

BODY = '''from tcpkit.release.metrics import record, record_model
rng = np.random.default_rng(n)
X = rng.normal(loc=5.0, size=(400, 3))
detector = fit(X)
record("within_4", float((detector.score(X) < 4).mean()))
record_model({"mean": detector.mean_, "scale": detector.scale_, "names": np.array(["a", "b", "c"])})
'''


def make_project(root: Path) -> None:
    nbdir = root / "notebooks"
    nbdir.mkdir(parents=True)
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell("n = 0")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell("#| export\n" + EXPORT), nbformat.v4.new_code_cell(BODY)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, nbdir / "fitted.ipynb")
    text = '[components.fitted]\nnotebook = "fitted.ipynb"\nowner = "ada"\ncontributors = ["ada"]\n'
    for i, gate in enumerate(GATES):
        text += (f"[components.fitted.gates.{gate}]\nparameters = {{ n = {i + 10} }}\n"
                 f"quick = {{ n = {i + 1} }}\ntimeout_s = 60\n"
                 'criteria = [ { metric = "within_4", op = ">=", threshold = 0.95 } ]\n')
    (nbdir / "pipeline.toml").write_text(text)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    keys = tmp_path_factory.mktemp("keys")
    saved = {k: os.environ.get(k) for k in ("TCPKIT_KEYS", "TCPKIT_RUNNER", "CI")}
    os.environ.update({"TCPKIT_KEYS": str(keys), "TCPKIT_RUNNER": "runner-test", "CI": "1"})
    root = tmp_path_factory.mktemp("modelled")
    make_project(root)
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            code = main(["run", "--profile", "quick", "--root", str(root)])
        assert code == 0, out.getvalue()
        yield root
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextlib.contextmanager
def edited(path: Path, data: bytes) -> Iterator[None]:
    original = path.read_bytes()
    try:
        path.write_bytes(data)
        yield
    finally:
        path.write_bytes(original)


def _verify(root: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, dict]:
    capsys.readouterr()
    code = main(["verify", "--json", "--root", str(root)])
    return code, json.loads(capsys.readouterr().out)


def _failures(report: dict) -> dict[str, str]:
    return {a["name"]: a["reason"] for a in report["artifacts"] if not a["ok"]}


def test_production_freezes_module_and_model_and_load_detector_scores(project: Path) -> None:
    production = project / "production"
    assert {p.name for p in production.iterdir()} == {
        "fitted.py", "fitted.model.npz", "fitted.dsse.json", "fitted.chain.intoto.jsonl"}
    arrays = load_model("fitted", project)
    assert sorted(arrays) == ["mean", "names", "scale"]
    assert arrays["names"].tolist() == ["a", "b", "c"]
    np.testing.assert_allclose(arrays["mean"], 5.0, atol=0.2)  # fitted on the PRODUCTION data
    with np.load(production / "fitted.model.npz", allow_pickle=False) as npz:  # plain numpy reads it
        np.testing.assert_array_equal(npz["scale"], arrays["scale"])
    detector = load_detector("fitted", project)
    scores = detector.score(np.array([[5.0, 5.0, 5.0], [50.0, 5.0, 5.0]]))
    assert scores[0] < 1 < 4 < scores[1]
    assert load_frozen("fitted", project).from_model(arrays).scale_.shape == (3,)
    statement = json.loads(__import__("base64").b64decode(
        json.loads((production / "fitted.dsse.json").read_text())["payload"]))
    names = {s["name"] for s in statement["subject"]}
    assert names == {"production/fitted.py", "production/fitted.model.npz"}
    assert statement["predicate"]["verifiedLevels"] == ["TCPKIT_GATE_PRODUCTION"]


def test_verify_passes_on_the_untouched_project(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, report = _verify(project, capsys)
    assert code == 0, _failures(report)
    names = [a["name"] for a in report["artifacts"]]
    assert "production/fitted.py" in names and "production/fitted.chain.intoto.jsonl" in names
    assert sum(n.startswith("gate-run/") for n in names) == 4


def _statements(project: Path) -> list[dict]:
    import base64

    from tcpkit.release.chain import load_bundle
    from tcpkit.release.workspace import Workspace

    envelopes = load_bundle((project / "production" / "fitted.chain.intoto.jsonl").read_bytes())
    envelopes.append(json.loads((project / "production" / "fitted.dsse.json").read_text()))
    with Workspace.open(project) as ws:
        for run in ws.gate_runs():
            envelopes.extend(load_bundle(ws.store.get_bytes(run.envelope_digest)))
    return [json.loads(base64.b64decode(e["payload"])) for e in envelopes]


def test_every_statement_parses_with_the_in_toto_attestation_bindings(project: Path) -> None:
    from google.protobuf.json_format import ParseDict
    from in_toto_attestation.predicates.vsa.v1 import vsa_pb2
    from in_toto_attestation.v1 import statement_pb2
    from in_toto_attestation.v1.statement import Statement

    from tcpkit.release.attestation import GATE_RESULT_PREDICATE, VSA_PREDICATE

    statements = _statements(project)
    kinds = {s["predicateType"] for s in statements}
    assert kinds == {VSA_PREDICATE, GATE_RESULT_PREDICATE}
    levels_field = vsa_pb2.VerificationSummary.DESCRIPTOR.fields_by_name["verified_levels"]
    for statement in statements:
        parsed = Statement.copy_from_pb(ParseDict(statement, statement_pb2.Statement()))
        parsed.validate()  # raises on a missing subject digest, type or predicate
        if statement["predicateType"] != VSA_PREDICATE:
            continue
        predicate = dict(statement["predicate"])
        levels = predicate["verifiedLevels"]
        assert isinstance(levels, list)  # the SLSA spec: an array of levels
        assert all(not level.startswith("SLSA_") for level in levels)
        if not levels_field.is_repeated:
            # in-toto-attestation 0.9.3 declares verifiedLevels a single string, where the SLSA
            # verification summary spec says an array: hand its one value over as that string.
            assert len(levels) <= 1
            predicate["verifiedLevels"] = levels[0] if levels else ""
        summary = ParseDict(predicate, vsa_pb2.VerificationSummary())
        assert summary.verification_result in ("PASSED", "FAILED")
        assert summary.policy.digest["sha256"]


def test_chain_links_each_gate_to_the_previous_summary(project: Path) -> None:
    from tcpkit.release.attestation import GATE_RESULT_PREDICATE

    results = [s for s in _statements(project)[:8] if s["predicateType"] == GATE_RESULT_PREDICATE]
    assert [r["predicate"]["gate"] for r in results] == list(GATES)
    assert results[0]["predicate"]["previous"] is None
    for before, after in zip(results, results[1:], strict=False):
        assert after["predicate"]["previous"]["gate"] == before["predicate"]["gate"]
    for result in results:
        (criterion,) = result["predicate"]["criteria"]
        assert criterion["metric"] == "within_4" and criterion["verdict"] == "PASSED"
        assert criterion["value"] == result["predicate"]["metrics"]["within_4"]


def test_tampered_model_refuses_all_three_and_fails_verify(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = project / "production" / "fitted.model.npz"
    buffer = io.BytesIO()
    np.savez(buffer, mean=np.zeros(3), scale=np.ones(3), names=np.array(["a", "b", "c"]))
    with edited(path, buffer.getvalue()):
        for load in (load_frozen, load_model, load_detector):
            with pytest.raises(FrozenModuleError, match="digest mismatch for production/fitted.model.npz"):
                load("fitted", project)
        code, report = _verify(project, capsys)
        assert code == 1
        assert "digest mismatch" in _failures(report)["production/fitted.py"]
    module = project / "production" / "fitted.py"
    with edited(module, module.read_bytes() + b"\nX = 1\n"):
        for load in (load_frozen, load_model, load_detector):
            with pytest.raises(FrozenModuleError, match="digest mismatch for production/fitted.py"):
                load("fitted", project)
    assert load_detector("fitted", project) is not None


def test_edited_metric_in_the_database_fails_verify_by_name(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = project / ".tcpkit" / "tcpkit.db"
    with contextlib.closing(sqlite3.connect(db)) as conn:
        run_id, metrics, criteria = conn.execute(
            "SELECT id, metrics, criteria FROM gate_runs WHERE gate = 'STAGING'").fetchone()
        edited_metrics = json.loads(metrics)
        edited_metrics["within_4"] = 1.0 if edited_metrics["within_4"] != 1.0 else 0.99
        with conn:
            conn.execute("UPDATE gate_runs SET metrics = ? WHERE id = ?", (json.dumps(edited_metrics), run_id))
    try:
        code, report = _verify(project, capsys)
        assert code == 1
        reason = _failures(report)[f"gate-run/fitted/STAGING/{run_id}"]
        assert "metric 'within_4'" in reason and "in the database but" in reason
        capsys.readouterr()
        assert main(["audit", "verify", "--root", str(project)]) == 1
        assert "metric 'within_4'" in capsys.readouterr().err
        with contextlib.closing(sqlite3.connect(db)) as conn, conn:
            edited_criteria = json.loads(criteria)
            edited_criteria[0]["threshold"] = 0.5
            conn.execute("UPDATE gate_runs SET metrics = ?, criteria = ? WHERE id = ?",
                         (metrics, json.dumps(edited_criteria), run_id))
        code, report = _verify(project, capsys)
        assert code == 1
        assert "threshold is 0.5 in the database" in _failures(report)[f"gate-run/fitted/STAGING/{run_id}"]
    finally:
        with contextlib.closing(sqlite3.connect(db)) as conn, conn:
            conn.execute("UPDATE gate_runs SET metrics = ?, criteria = ? WHERE id = ?",
                         (metrics, criteria, run_id))
    assert _verify(project, capsys)[0] == 0
    assert main(["audit", "verify", "--root", str(project)]) == 0


def test_development_statement_presented_as_production_fails(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tcpkit.release.chain import load_bundle
    from tcpkit.release.dsse import dump_envelope

    development = load_bundle((project / "production" / "fitted.chain.intoto.jsonl").read_bytes())[0]
    envelope = project / "production" / "fitted.dsse.json"
    with edited(envelope, dump_envelope(development)):
        with pytest.raises(FrozenModuleError, match="not TCPKIT_GATE_PRODUCTION"):
            load_frozen("fitted", project)
        code, report = _verify(project, capsys)
        assert code == 1
        assert "TCPKIT_GATE_DEVELOPMENT" in _failures(report)["production/fitted.py"]


def test_broken_chain_fails_verify(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    chain = project / "production" / "fitted.chain.intoto.jsonl"
    lines = chain.read_bytes().splitlines(keepends=True)
    name = "production/fitted.chain.intoto.jsonl"
    swapped = lines[:2] + lines[4:6] + lines[2:4] + lines[6:]  # STAGING where TESTING belongs
    with edited(chain, b"".join(swapped)):
        code, report = _verify(project, capsys)
        assert code == 1 and "broken chain" in _failures(report)[name]
    with edited(chain, b"".join(lines[:4] + lines[6:])):  # STAGING left out
        code, report = _verify(project, capsys)
        assert code == 1 and "expected 8" in _failures(report)[name]
    chain.unlink()
    try:
        code, report = _verify(project, capsys)
        assert code == 1 and "missing" in _failures(report)[name]
    finally:
        chain.write_bytes(b"".join(lines))
    assert _verify(project, capsys)[0] == 0


def test_a_run_whose_previous_gate_is_not_recorded_breaks_the_chain(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = project / ".tcpkit" / "tcpkit.db"
    with contextlib.closing(sqlite3.connect(db)) as conn:
        conn.row_factory = sqlite3.Row
        row = dict(conn.execute("SELECT * FROM gate_runs WHERE gate = 'DEVELOPMENT'").fetchone())
        with conn:
            conn.execute("DELETE FROM gate_runs WHERE id = ?", (row["id"],))
    try:
        code, report = _verify(project, capsys)
        assert code == 1
        (reason,) = [r for n, r in _failures(report).items() if n.startswith("gate-run/fitted/TESTING/")]
        assert "broken chain: the DEVELOPMENT statement this run follows" in reason
    finally:
        with contextlib.closing(sqlite3.connect(db)) as conn, conn:
            columns = ", ".join(row)
            conn.execute(f"INSERT INTO gate_runs ({columns}) VALUES ({', '.join('?' * len(row))})",
                         tuple(row.values()))
    assert _verify(project, capsys)[0] == 0


def test_a_gate_changed_after_it_was_measured_fails_verify(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    toml = project / "notebooks" / "pipeline.toml"
    text = toml.read_text()
    loosened = text.replace("threshold = 0.95", "threshold = 0.5")
    with edited(toml, loosened.encode()):
        code, report = _verify(project, capsys)
        assert code == 1
        assert "changed since it was measured" in _failures(report)["production/fitted.chain.intoto.jsonl"]
    assert _verify(project, capsys)[0] == 0


def test_rerun_skips_and_restores_a_deleted_model(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = project / "production" / "fitted.model.npz"
    original = model.read_bytes()
    model.unlink()
    with pytest.raises(FrozenModuleError, match="does not exist"):
        load_detector("fitted", project)
    capsys.readouterr()
    assert main(["run", "--profile", "quick", "--root", str(project)]) == 0
    assert "(0 executed, 4 reused)" in capsys.readouterr().out  # nothing executed again
    assert model.read_bytes() == original  # re-frozen from the PRODUCTION run's executed notebook
    assert _verify(project, capsys)[0] == 0
