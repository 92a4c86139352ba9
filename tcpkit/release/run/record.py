"""Recording and freezing: a gate run's statements, its row in the workspace, the frozen files.

:class:`Recorder` works on the calling thread, one run at a time. For each executed
run it stores the executed notebook and the report, signs the SLSA verification
summary and the gate result over the notebook and the module and model the run would
freeze (linked to the previous gate's summary), keeps both as one bundle in the object
store and records the run. A passing PRODUCTION run freezes its module and model with
the chain of the four bundles. A reused run (:mod:`tcpkit.release.run.reuse`) records
nothing: its outcome is the recorded run's decision; a reused PRODUCTION pass makes sure
the frozen files are those of the passing run it stands for, re-freezing them from the
stored evidence when they are not.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tcpkit.release.gates import GATES, CriterionResult, Pipeline, gate_index
from tcpkit.release.project import Project
from tcpkit.release.report import RunSummary
from tcpkit.release.run.execute import Execution, Job, now, run_summary
from tcpkit.release.store import digest_bytes

STATUSES = ("passed", "failed", "blocked", "error")
"""An outcome's decision: passed or failed (executed now, or reused), blocked by a dependency
that is not frozen, or a configuration error found before any kernel started."""


@dataclass(frozen=True)
class Outcome:
    """What happened to one component at one gate in this invocation.

    ``status`` is one of :data:`STATUSES`; ``reused`` says that no kernel ran: the decision is
    that of the recorded run with the same run key (``reason`` names it).
    """

    component: str
    gate: str
    status: str
    reason: str
    summary: RunSummary | None = None
    duration_s: float = 0.0
    reused: bool = False

    @property
    def executed(self) -> bool:
        """Whether a kernel ran the notebook in this invocation."""
        return self.status in ("passed", "failed") and not self.reused


def verifier_uri(runner: str) -> str:
    """The ``verifier.id`` of a runner's statements: a URI, as the SLSA summary asks."""
    return f"https://tcpkit.dev/runner/{runner}"


class Recorder:
    """Records runs of ``pipeline`` in the workspace of ``project`` and freezes passes.

    ``bundles`` holds, per component, the bundles of the gates passed (or skipped) so
    far in this invocation: the chain the next gate links to and PRODUCTION freezes.
    """

    def __init__(self, project: Project, pipeline: Pipeline) -> None:
        self.project = project
        self.root = project.root
        self.pipeline = pipeline
        self.bundles: dict[str, list[bytes]] = {}

    # -- recording (calling thread) ------------------------------------------------------------
    def previous(self, job: Job) -> tuple[str, str] | None:
        """The previous gate and the digest of its summary statement in this chain (None first)."""
        from tcpkit.release.attestation import payload_digest
        from tcpkit.release.chain import load_bundle

        index = gate_index(job.gate)
        bundles = self.bundles.get(job.component, [])
        if index == 0 or len(bundles) != index:
            return None
        return GATES[index - 1], payload_digest(load_bundle(bundles[-1])[0])

    def record(self, ws: Any, signer: Any, runner: str, ex: Execution) -> Outcome:
        from tcpkit.release.attestation import (
            frozen_model_subject_name,
            frozen_subject_name,
            make_gate_result,
            payload_digest,
            statement_uri,
        )
        from tcpkit.release.chain import dump_bundle
        from tcpkit.release.report import write_run_report
        from tcpkit.release.signing import make_statement, sign_statement
        from tcpkit.release.workspace import GateRun

        job = ex.job
        executed_digest = ws.store.put_bytes(ex.executed) if ex.executed is not None else None
        report_digest = ws.store.put_bytes(ex.page)
        summary = ex.summary if ex.summary is not None else run_summary(
            job, ex.started_at, ex.duration_s, ex.metrics, ex.results, ex.error, ex.error_cell,
            "passed" if ex.passed else "failed", signer.name)
        write_run_report(self.project.reports, summary, ex.page)
        evidence = {f"reports/{job.gate}/{job.component}.html": report_digest}
        if executed_digest is not None:
            evidence[f"tcpkit:executed/{job.component}-{job.gate}.ipynb"] = executed_digest
        previous = self.previous(job)
        if previous is not None:
            evidence[statement_uri(job.component, previous[0])] = previous[1]
        subjects: dict[str, str] = {}
        if job.module:
            subjects[frozen_subject_name(job.component)] = job.inputs["module"]
        if ex.model is not None:
            subjects[frozen_model_subject_name(job.component)] = digest_bytes(ex.model)
        decided_at = now()
        policy_uri = self.pipeline.policy_uri(job.component, job.gate)
        summary_statement = make_statement(
            f"notebooks/{job.notebook.name}",
            job.inputs["notebook"],
            gate=job.gate,
            policy_uri=policy_uri,
            policy_digest=job.inputs["gate"],
            inputs=evidence,
            passed=ex.passed,
            verifier_id=verifier_uri(runner),
            time=decided_at,
            resource_uri=f"tcpkit:component/{job.component}",
            extra_subjects=subjects,
        )
        summary_envelope = sign_statement(summary_statement, [signer])
        criteria = [r.as_dict() for r in ex.results]
        result_statement = make_gate_result(
            summary_statement["subject"], component=job.component, gate=job.gate, profile=job.profile,
            passed=ex.passed, policy=summary_statement["predicate"]["policy"], criteria=criteria,
            metrics=ex.metrics, inputs=job.inputs, input_digest=job.input_digest, previous=previous,
            summary_digest=payload_digest(summary_envelope), error=ex.error, verifier_id=verifier_uri(runner),
            time=decided_at,
        )
        bundle = dump_bundle([summary_envelope, sign_statement(result_statement, [signer])])
        envelope_digest = ws.store.put_bytes(bundle)
        ws.record_gate_run(GateRun(
            component=job.component, gate=job.gate, input_digest=job.input_digest,
            inputs=dict(job.inputs), decision="passed" if ex.passed else "failed",
            metrics=dict(ex.metrics), criteria=criteria,
            executed_notebook_digest=executed_digest, report_digest=report_digest,
            envelope_digest=envelope_digest, runner=runner, started_at=ex.started_at,
            duration_s=ex.duration_s,
        ))
        if not ex.passed:
            return Outcome(job.component, job.gate, "failed", failure_reason(ex), summary, ex.duration_s)
        self.bundles.setdefault(job.component, []).append(bundle)
        ws.set_level(job.component, job.gate, runner)
        reason = key_values(ex.results)
        if job.gate == "PRODUCTION":
            artifact = self.freeze(ws, signer, job, ex.model, payload_digest(summary_envelope),
                                    evidence)
            reason += f"; frozen production/{job.component}.py sha256 {artifact.digest[:12]}"
            if artifact.model_digest is not None:
                reason += f" with its model sha256 {artifact.model_digest[:12]}"
        return Outcome(job.component, job.gate, "passed", reason, summary, ex.duration_s)

    def freeze(self, ws: Any, signer: Any, job: Job, model: bytes | None, statement_digest: str,
                evidence: Mapping[str, str]) -> Any:
        """Freeze the module and model the PRODUCTION run measured, with the chain that led here."""
        from tcpkit.release.attestation import statement_uri
        from tcpkit.release.promote import freeze

        inputs = {k: v for k, v in evidence.items() if not k.startswith("tcpkit:statement/")}
        inputs[statement_uri(job.component, "PRODUCTION")] = statement_digest
        return freeze(
            self.root, job.component, job.module, signer=signer,
            policy_uri=self.pipeline.policy_uri(job.component, job.gate),
            policy_digest=job.inputs["gate"], inputs=inputs, verifier_id=verifier_uri(job.runner),
            model=model, chain=b"".join(self.bundles[job.component]),
            backup=ws.store.put_bytes, pin=lambda digest, why: ws.pin(digest, why, actor=job.runner),
        )

    def stored_bundle(self, ws: Any, run: Any) -> bytes | None:
        """The bundle of a recorded run, or None when it is missing or not a two-statement bundle
        (then the run cannot stand in the chain and the gate runs again)."""
        from tcpkit.release.chain import load_bundle
        from tcpkit.release.signing import VerificationError
        from tcpkit.release.store import StoreError

        if not run.envelope_digest:
            return None
        try:
            raw: bytes = ws.store.get_bytes(run.envelope_digest)
            if len(load_bundle(raw)) != 2:
                return None
        except (StoreError, VerificationError):
            return None
        return raw

    def reused(self, job: Job, previous: Any, bundle: bytes | None) -> Outcome:
        """The outcome of a gate that did not run: the decision of the recorded run ``previous``
        with the same run key (its report page is put back when it is missing)."""
        from tcpkit.release.run.reuse import failure_summary, recorded_error

        report = self.project.report(job.gate, job.component)
        if previous.report_digest and not report.is_file():
            from tcpkit.release.atomic import write_atomic

            report.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(Exception):
                write_atomic(report, self.store_bytes(previous.report_digest), mode=0o644)
        error = recorded_error(bundle) if previous.decision == "failed" else None
        summary = RunSummary(
            component=job.component, gate=job.gate, decision=previous.decision, profile=job.profile,
            criteria=tuple(previous.criteria), metrics=dict(previous.metrics), inputs=dict(job.inputs),
            input_digest=job.input_digest, input_details=dict(job.details),
            parameters=dict(job.parameters), runner=previous.runner,
            started_at=previous.started_at, duration_s=previous.duration_s, error=error,
            report=f"{job.gate}/{job.component}.html" if report.is_file() else None, reused=True,
        )
        since = f"run key unchanged since the run of {previous.started_at}"
        if previous.decision == "passed":
            reason = f"{since}: {key_values_of(previous.criteria)}"
        else:
            reason = f"{since}: {failure_summary(previous, error)} (--rerun executes it again)"
        return Outcome(job.component, job.gate, previous.decision, reason, summary, reused=True)

    def store_bytes(self, digest: str) -> bytes:
        from tcpkit.release.store import ObjectStore

        return ObjectStore(self.project.objects).get_bytes(digest)

    def refreeze(self, ws: Any, signer: Any, job: Job, previous: Any, bundle: bytes) -> bool:
        """For a skipped PRODUCTION: the frozen files must be those of the passing run ``previous``
        (module, model, chain) and verify, else they are frozen again from what that run recorded.
        False when that is impossible (then PRODUCTION runs again)."""
        import nbformat

        from tcpkit.release.attestation import payload_digest, statement_uri
        from tcpkit.release.chain import load_bundle
        from tcpkit.release.metrics import MetricError, read_model
        from tcpkit.release.promote import FrozenModuleError, PromotionError, verify_component
        from tcpkit.release.store import StoreError

        chain = b"".join([*self.bundles.get(job.component, []), bundle])
        statement_digest = payload_digest(load_bundle(bundle)[0])
        try:
            frozen = verify_component(job.component, self.root)
            links = [a.get("digest", {}).get("sha256")
                     for a in frozen.statement["predicate"].get("inputAttestations", [])
                     if a.get("uri") == statement_uri(job.component, "PRODUCTION")]
            path = self.project.frozen_chain(job.component)
            if (digest_bytes(frozen.module) == job.inputs["module"] and links == [statement_digest]
                    and path.is_file() and path.read_bytes() == chain):
                return True
        except FrozenModuleError:
            pass
        if not job.module or not previous.executed_notebook_digest:
            return False
        try:
            executed = ws.store.get_bytes(previous.executed_notebook_digest)
            model = read_model(nbformat.reads(executed.decode("utf-8"), as_version=4))
        except (StoreError, MetricError, ValueError):
            return False
        evidence = {f"reports/{job.gate}/{job.component}.html": previous.report_digest,
                    f"tcpkit:executed/{job.component}-{job.gate}.ipynb": previous.executed_notebook_digest}
        self.bundles.setdefault(job.component, []).append(bundle)
        try:
            self.freeze(ws, signer, job, model, statement_digest,
                         {k: v for k, v in evidence.items() if v})
        except PromotionError:
            return False
        finally:
            self.bundles[job.component].pop()
        return True


def failure_reason(ex: Execution) -> str:
    if ex.error:
        where = f" in cell {ex.error_cell.splitlines()[0]}" if ex.error_cell else ""
        return f"error{where}: {ex.error.splitlines()[0] if ex.error else ''}"
    failures = [r.reason for r in ex.results if not r.ok]
    return "; ".join(failures) if failures else "no criterion was evaluated"


def key_values(results: Sequence[CriterionResult], limit: int = 3) -> str:
    shown = [f"{r.metric}={_short(r.value)}" for r in results[:limit]]
    if len(results) > limit:
        shown.append(f"+{len(results) - limit} more")
    return ", ".join(shown)


def key_values_of(criteria: Sequence[Mapping[str, Any]], limit: int = 3) -> str:
    """:func:`key_values` of recorded criterion dicts."""
    shown = [f"{c.get('metric')}={_short(c.get('value'))}" for c in criteria[:limit]]
    if len(criteria) > limit:
        shown.append(f"+{len(criteria) - limit} more")
    return ", ".join(shown)


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
