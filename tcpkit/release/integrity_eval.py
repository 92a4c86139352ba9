"""Measurements of the integrity layer: tamper trials and signature cost per algorithm.

:func:`tamper_trials` applies random single-byte flips, truncations and substitutions
to the three things an attacker could edit - the frozen module, the statement (the
envelope payload, re-encoded so the envelope still parses) and the envelope JSON file
- and counts how many :func:`~tcpkit.release.attestation.verify_artifact` refuses.

What counts as a trial. Every module and statement mutation changes bytes that are
hashed or signed, so each is a trial. A mutation of the envelope *file* can leave the
document the same (e.g. a space replaced by a tab between fields) or change only a
``keyid``, which DSSE defines as an unsigned hint that verification must ignore. Such
mutations are not tampering with signed content or signatures; they are counted apart
(``equivalent`` and ``hint_only``) and checked to be *accepted*, as they should be.
All other envelope mutations - anything in the payload, payloadType or signature text,
the field names, or the JSON structure - are trials. Only
:class:`~tcpkit.release.dsse.VerificationError` counts as detection; any other
exception propagates, so a crash in the verifier is never scored as a catch.

:func:`signature_benchmark` times signing and verification of a DSSE PAE per algorithm
and for the hybrid pair, and reports key and signature sizes.
"""

from __future__ import annotations

import base64
import copy
import random
import statistics
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tcpkit.release.algorithms import REQUIRED_ALGORITHMS, get_algorithm, raw_public_bytes
from tcpkit.release.attestation import make_statement, sha256_hex, verify_artifact
from tcpkit.release.dsse import (
    PAYLOAD_TYPE,
    VerificationError,
    canonical_payload,
    dump_envelope,
    pae,
    sign_statement,
    strict_json,
)
from tcpkit.release.keys import HybridSigner, TrustList

TARGETS = ("module", "statement", "envelope")
OPERATIONS = ("flip", "truncate", "substitute")


@dataclass(frozen=True)
class TamperReport:
    """Counts from :func:`tamper_trials`.

    Attributes
    ----------
    trials : int
        Mutations that changed hashed or signed content, signatures or envelope structure.
    detected : int
        Of those, how many ``verify_artifact`` refused with VerificationError.
    equivalent : int
        Envelope-file mutations that parse to the identical document (not tampering).
    hint_only : int
        Envelope-file mutations that changed only a keyid (an unsigned hint).
    hint_only_accepted : int
        Of those, how many still verified (all should: keyids are ignored).
    by_target : dict
        ``{target: (trials, detected)}`` for module, statement and envelope.
    by_operation : dict
        ``{operation: (trials, detected)}`` for flip, truncate and substitute.
    undetected : tuple of str
        Descriptions of up to ten trials that were not detected.
    """

    trials: int
    detected: int
    equivalent: int
    hint_only: int
    hint_only_accepted: int
    by_target: dict[str, tuple[int, int]] = field(default_factory=dict)
    by_operation: dict[str, tuple[int, int]] = field(default_factory=dict)
    undetected: tuple[str, ...] = ()

    @property
    def detected_rate(self) -> float:
        """``detected / trials`` (NaN when there were no trials)."""
        return self.detected / self.trials if self.trials else float("nan")


def mutate(data: bytes, operation: str, rng: random.Random) -> tuple[bytes, str]:
    """One random mutation of ``data``; always returns different bytes and a description.

    ``flip`` XORs one bit of one byte, ``truncate`` keeps a strict prefix (possibly
    empty), ``substitute`` replaces one byte by a different one.
    """
    if not data:
        raise ValueError("cannot mutate empty data")
    if operation == "flip":
        pos, bit = rng.randrange(len(data)), rng.randrange(8)
        out = bytearray(data)
        out[pos] ^= 1 << bit
        return bytes(out), f"flip bit {bit} of byte {pos}"
    if operation == "truncate":
        keep = rng.randrange(len(data))
        return data[:keep], f"truncate to {keep} of {len(data)} bytes"
    if operation == "substitute":
        pos = rng.randrange(len(data))
        value = (data[pos] + rng.randrange(1, 256)) % 256
        out = bytearray(data)
        out[pos] = value
        return bytes(out), f"substitute byte {pos} {data[pos]:#04x} -> {value:#04x}"
    raise ValueError(f"unknown mutation {operation!r} (known: {', '.join(OPERATIONS)})")


def _without_keyids(envelope: Any) -> Any:
    if not isinstance(envelope, dict) or not isinstance(envelope.get("signatures"), list):
        return envelope
    stripped = copy.deepcopy(envelope)
    for entry in stripped["signatures"]:
        if isinstance(entry, dict):
            entry.pop("keyid", None)
    return stripped


def _detected(
    data: bytes, name: str, envelope: Mapping[str, Any] | bytes, trust: TrustList
) -> bool:
    try:
        verify_artifact(data, name, envelope, trust)
    except VerificationError:
        return True
    return False


def _subject_name(envelope: Mapping[str, Any]) -> str:
    statement = strict_json(base64.b64decode(envelope["payload"]), "payload")
    subjects = statement.get("subject", [])
    if len(subjects) != 1:
        raise ValueError("give name=...: the statement has more than one subject")
    return str(subjects[0]["name"])


def tamper_trials(
    module_bytes: bytes,
    envelope: Mapping[str, Any],
    trust: TrustList,
    n: int,
    seed: int,
    *,
    name: str | None = None,
) -> TamperReport:
    """Apply ``n`` random mutations and count how many ``verify_artifact`` detects.

    Parameters
    ----------
    module_bytes : bytes
        The frozen module, which must verify with ``envelope`` before any mutation.
    envelope : mapping
        Its DSSE envelope.
    trust : TrustList
        The trust list that vouches for ``envelope``.
    n : int
        Number of mutations; targets and operations are cycled evenly, positions random.
    seed : int
        Seed of the random positions (same seed, same trials).
    name : str, optional
        Subject name; default the statement's only subject.

    Returns
    -------
    TamperReport
        ``trials`` counts only real changes (see the module docstring); every one should
        be ``detected``.
    """
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    name = name if name is not None else _subject_name(envelope)
    verify_artifact(module_bytes, name, envelope, trust)  # the untouched artifact must pass
    rng = random.Random(seed)
    payload = base64.b64decode(envelope["payload"])
    envelope_raw = dump_envelope(envelope)
    original = strict_json(envelope_raw, "envelope")
    counts = {key: [0, 0] for key in TARGETS + OPERATIONS}
    trials = detected = equivalent = hint_only = hint_accepted = 0
    undetected: list[str] = []
    for i in range(n):
        target = TARGETS[i % len(TARGETS)]
        operation = OPERATIONS[(i // len(TARGETS)) % len(OPERATIONS)]
        if target == "module":
            mutated, how = mutate(module_bytes, operation, rng)
            caught = _detected(mutated, name, envelope, trust)
        elif target == "statement":
            mutated, how = mutate(payload, operation, rng)
            forged = dict(envelope, payload=base64.b64encode(mutated).decode("ascii"))
            caught = _detected(module_bytes, name, forged, trust)
        else:
            mutated, how = mutate(envelope_raw, operation, rng)
            try:
                parsed = strict_json(mutated, "envelope")
            except VerificationError:
                parsed = None
            if parsed == original:
                equivalent += 1
                continue
            if parsed is not None and _without_keyids(parsed) == _without_keyids(original):
                hint_only += 1
                hint_accepted += not _detected(module_bytes, name, mutated, trust)
                continue
            caught = _detected(module_bytes, name, mutated, trust)
        trials += 1
        detected += caught
        for key in (target, operation):
            counts[key][0] += 1
            counts[key][1] += caught
        if not caught and len(undetected) < 10:
            undetected.append(f"{target}: {how}")
    return TamperReport(
        trials=trials,
        detected=detected,
        equivalent=equivalent,
        hint_only=hint_only,
        hint_only_accepted=hint_accepted,
        by_target={t: (counts[t][0], counts[t][1]) for t in TARGETS},
        by_operation={o: (counts[o][0], counts[o][1]) for o in OPERATIONS},
        undetected=tuple(undetected),
    )


def _median_ms(samples: list[int]) -> float:
    return statistics.median(samples) / 1e6


def signature_benchmark(
    repeats: int = 50, *, signer: HybridSigner | None = None
) -> list[dict[str, Any]]:
    """Time signing and verifying a DSSE PAE per algorithm, and the hybrid pair.

    The message is the PAE of a typical gate statement (about 1 kB). Times are medians
    over ``repeats`` calls of ``time.perf_counter_ns``; they depend on the machine and its
    load, so compare ratios, not absolute values.

    Returns
    -------
    list of dict
        One row per algorithm plus ``"hybrid"``, with keys ``algorithm``,
        ``public_key_bytes``, ``signature_bytes``, ``sign_ms``, ``verify_ms``,
        ``envelope_bytes`` (the ``.dsse.json`` file with one signer; hybrid row only, else
        ``None``) and ``repeats``.
    """
    if not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats must be a positive integer, got {repeats!r}")
    signer = signer if signer is not None else HybridSigner.generate("benchmark")
    statement = make_statement(
        "production/component.py",
        sha256_hex(b"module"),
        gate="PRODUCTION",
        policy_uri="notebooks/pipeline.toml#component.PRODUCTION",
        policy_digest=sha256_hex(b"policy"),
        inputs={
            "reports/PRODUCTION/component.html": sha256_hex(b"report"),
            "executed/PRODUCTION/component.ipynb": sha256_hex(b"notebook"),
        },
        passed=True,
        verifier_id="tcpkit-benchmark",
        time="2025-01-01T00:00:00Z",
    )
    message = pae(PAYLOAD_TYPE, canonical_payload(statement))
    rows: list[dict[str, Any]] = []
    total_pub = total_sig = 0
    sign_sum: list[int] = [0] * repeats
    verify_sum: list[int] = [0] * repeats
    for alg_name, key in signer.private_keys:
        algorithm = get_algorithm(alg_name)
        public = key.public_key()
        sign_ns, verify_ns = [], []
        signature = b""
        for r in range(repeats):
            start = time.perf_counter_ns()
            signature = algorithm.sign(key, message)
            sign_ns.append(time.perf_counter_ns() - start)
            start = time.perf_counter_ns()
            ok = algorithm.verify(public, signature, message)
            verify_ns.append(time.perf_counter_ns() - start)
            if not ok:
                raise RuntimeError(f"{alg_name} signature failed to verify during the benchmark")
            sign_sum[r] += sign_ns[-1]
            verify_sum[r] += verify_ns[-1]
        pub_size = len(raw_public_bytes(public))
        total_pub += pub_size
        total_sig += len(signature)
        rows.append(
            {
                "algorithm": alg_name,
                "public_key_bytes": pub_size,
                "signature_bytes": len(signature),
                "sign_ms": _median_ms(sign_ns),
                "verify_ms": _median_ms(verify_ns),
                "envelope_bytes": None,
                "repeats": repeats,
            }
        )
    envelope_bytes = len(dump_envelope(sign_statement(statement, [signer])))
    rows.append(
        {
            "algorithm": "hybrid (" + " + ".join(REQUIRED_ALGORITHMS) + ")",
            "public_key_bytes": total_pub,
            "signature_bytes": total_sig,
            "sign_ms": _median_ms(sign_sum),
            "verify_ms": _median_ms(verify_sum),
            "envelope_bytes": envelope_bytes,
            "repeats": repeats,
        }
    )
    return rows
