"""The public message contract: what xrd-agent publishes and what its control socket accepts.

One source, one generated copy. The TypedDicts below are the source, and so are the frozen
dataclasses for the values the code itself passes around (:class:`Candidate`,
:class:`Coverage`, :class:`CamRegion`: the identification holds these very objects). Each
field carries its description and constraints in ``Annotated[..., doc(...)]``. ``python -m
xrd_agent.messages`` writes the JSON Schemas in ``xrd_agent/schemas/`` from them; those
files are what validation uses at run time and what other labs' code reads, and
``tests/test_messages.py`` regenerates them and fails on drift (event-model's habit).

Three layers, as in jupyter_client: :func:`build` makes the dict, :func:`encode` /
:func:`decode` turn it into ``[topic, JSON]`` frames and back, and only
``service.publisher`` / ``service.control`` / ``client`` touch sockets. Nothing here
imports numpy or the model, so robot software installs light.

Sequence numbers: every durable message (identification, alert, rejected, status) gets
``seq`` from the ledger, gap-free and strictly increasing across restarts; those are
the messages ``replay`` returns. ``xrd.heartbeat`` is not stored: its ``seq`` repeats the
newest durable seq (``last_seq``), so a subscriber can tell that it missed the tail.

``SCHEMA_VERSION`` is the protocol version, separate from the package version; it
changes only when a field changes meaning or disappears.
"""

import dataclasses
import functools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from types import NoneType, UnionType
from typing import (Annotated, Any, Literal, NotRequired, TypedDict, Union, get_args, get_origin,
                    get_type_hints, is_typeddict)

import jsonschema
from jsonschema.exceptions import best_match

from xrd_agent.errors import MessageError

SCHEMA_VERSION = "1"

IDENTIFICATION = "xrd.identification"
ALERT = "xrd.alert"
REJECTED = "xrd.rejected"
STATUS = "xrd.status"
HEARTBEAT = "xrd.heartbeat"
REVIEW = "xrd.review"

#: Every topic, in the order the documentation lists them.
TOPICS: tuple[str, ...] = (IDENTIFICATION, ALERT, REJECTED, STATUS, HEARTBEAT, REVIEW)
#: Topics stored in the ledger: they carry a gap-free ``seq`` and can be replayed.
DURABLE_TOPICS: tuple[str, ...] = (IDENTIFICATION, ALERT, REJECTED, STATUS, REVIEW)

#: Keys :func:`build` sets; a body must not contain them.
HEADER_KEYS = ("schema_version", "topic", "agent_id", "instrument_id", "seq", "published_at",
               "model_version", "library_version")

#: Largest encoded message (bytes). A Top-5 identification is ~1.2 kB; the limit keeps a
#: hostile or broken peer from making a subscriber allocate without bound.
MAX_MESSAGE_BYTES = 1 << 20

_TIMESTAMP_PATTERN = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?Z$"
_NAME_PATTERN = r"^[^\x00-\x1f\x7f]*$"  # printable: no control characters


# --------------------------------------------------------------------------- the source


@dataclass(frozen=True)
class Doc:
    """Annotation metadata: a field's description and its JSON Schema constraints."""

    text: str
    constraints: tuple[tuple[str, Any], ...] = ()


def doc(text: str, **constraints: Any) -> Doc:
    return Doc(text, tuple(constraints.items()))


AgentId = Annotated[str, doc("Which xrd-agent installation sent this (config `service.agent_id`).",
                             minLength=1, maxLength=128, pattern=_NAME_PATTERN)]
InstrumentId = Annotated[str, doc("Which diffractometer the agent watches (config `service.instrument_id`).",
                                  minLength=1, maxLength=128, pattern=_NAME_PATTERN)]
Seq = Annotated[int, doc("Ledger sequence number: gap-free and strictly increasing across restarts; "
                         "a subscriber that sees a jump asks the control socket to replay the gap.",
                         minimum=1)]
Timestamp = Annotated[str, doc("RFC 3339 time in UTC.", pattern=_TIMESTAMP_PATTERN, format="date-time")]
PublishedAt = Annotated[str, doc("When the agent published the message (RFC 3339, UTC).",
                                 pattern=_TIMESTAMP_PATTERN, format="date-time")]
ModelVersion = Annotated[str, doc("Version of the identification model loaded when the message was made; "
                                  "empty before a model is loaded.", maxLength=128)]
LibraryVersion = Annotated[str, doc("Version of the reference library the model was trained on; "
                                    "empty before a model is loaded.", maxLength=128)]
SchemaVersion = Annotated[Literal["1"], doc("Protocol version of this message (not the package version).")]
ScanId = Annotated[str, doc("SHA-256 of the scan file's bytes, lower-case hex: the same file always has "
                            "the same scan_id, whatever its name.", pattern=r"^[0-9a-f]{64}$")]
ScanPath = Annotated[str, doc("Path of the scan file as the agent saw it (for people; robots key on "
                              "scan_id).", minLength=1, maxLength=4096)]
SampleId = Annotated[str | None, doc("Sample name written into the file by the instrument software "
                                     "(BRML SampleName, RAW sample id), or the file name stem when the "
                                     "file names none; null when the file could not be read.",
                                     maxLength=256)]
WrittenAt = Annotated[str, doc("Modification time of the scan file (RFC 3339, UTC).",
                               pattern=_TIMESTAMP_PATTERN, format="date-time")]
DetectedAt = Annotated[str, doc("When the agent first saw the finished file (RFC 3339, UTC).",
                                pattern=_TIMESTAMP_PATTERN, format="date-time")]
Refcode = Annotated[str, doc("Library key of a phase: the CSD refcode (CoRE MOF stem) or a user "
                             "library's key.", minLength=1, maxLength=128)]
PhaseFlag = Literal["unknown_phase", "amorphous", "mixture", "low_coverage", "low_crystallinity"]
AlertReason = Literal["expected_phase_missing", "expected_phase_uncertain", "amorphous", "unknown_phase", "mixture", "low_coverage",
                      "unreadable", "folder_missing", "folder_restored", "low_crystallinity"]
Severity = Literal["info", "warning", "critical"]
ServiceState = Literal["starting", "ready", "reloading", "draining", "stopped", "degraded"]
Count = Annotated[int, doc("A running total.", minimum=0)]
ElementSymbol = Annotated[str, doc("A chemical element symbol (e.g. Zn, Cu, N).", pattern=r"^[A-Z][a-z]?$")]
RequestId = Annotated[str, doc("Optional correlation id chosen by the client; the reply echoes it.",
                               maxLength=64)]


class PhysicsFit(TypedDict):
    """The whole-pattern fit of one candidate to the scan over its whole measured range
    (xrd_agent/verify: cell within +-12 % per axis under its metric symmetry, zero shift, widths,
    March-Dollase texture, a low-angle pore-solvent factor, Chebyshev background). A candidate that
    was not fitted alone (a phase found in the residual of a composition, or a further phase tried
    beside its phases) carries the fit of those phases together: rwp and explained are then the
    joint fit's, the cell its own."""

    rwp: Annotated[float, doc("Weighted profile R of the fit (unit weights).", minimum=0)]
    rwp_background: Annotated[float, doc("Rwp of a background-only fit of the same scan: the fit "
                                         "explains the scan when rwp is well below it.", minimum=0)]
    explained: Annotated[float, doc("Share of the background-only misfit (chi^2) the fit removes (the "
                                    "phases together where it is a joint fit).", minimum=0, maximum=1)]
    posterior: Annotated[float, doc("Posterior of this candidate among those fitted (network prior x fit "
                                    "likelihood x cell-change prior).", minimum=0, maximum=1)]
    cell: Annotated[list[float], doc("Refined cell a, b, c (angstrom), alpha, beta, gamma (deg).",
                                     minItems=6, maxItems=6)]
    cell_change: Annotated[list[float], doc("Change against the library cell: a, b, c in per cent, "
                                            "alpha, beta, gamma in degrees.", minItems=6, maxItems=6)]
    zero_shift: Annotated[float, doc("Refined zero shift (deg 2-theta, the scan's own scale).")]


class PhaseShare(TypedDict):
    """One phase of the fitted composition."""

    refcode: Refcode
    name: Annotated[str, doc("Common name of the phase, or the refcode.", maxLength=256)]
    weight_fraction: Annotated[float | None, doc("Hill-Howard weight fraction S(ZMV)/sum S(ZMV); null when "
                                                 "the library carries no absolute intensity scale (no fit.npz).",
                                                 minimum=0, maximum=1)]
    uncertainty: Annotated[float | None, doc("Standard uncertainty of the weight fraction (least-squares "
                                             "covariance).", minimum=0)]


class PhysicsSummary(TypedDict):
    """What the physics check concluded for the scan as a whole."""

    explained: Annotated[float, doc("Share of the diffraction signal the best candidate explains.",
                                    minimum=0, maximum=1)]
    fits: Annotated[bool, doc("False when no candidate explains enough of the scan (an unknown phase).")]
    confidence: Annotated[float, doc("Posterior of the top material x fit quality.", minimum=0, maximum=1)]
    seconds: Annotated[float, doc("Time the check took.", minimum=0)]


@dataclass(frozen=True)
class Determination:
    """One library class (one structure determination) of a material."""

    refcode: Refcode
    probability: Annotated[float, doc("Softmax probability the model gives this determination.",
                                      minimum=0, maximum=1)]

    def to_dict(self) -> dict[str, Any]:
        return {"refcode": self.refcode, "probability": round(float(self.probability), 6)}


@dataclass(frozen=True)
class Candidate:
    """One ranked material of the Top-k (several library determinations of one material are one
    answer; xrd_agent.materials)."""

    rank: Annotated[int, doc("1 for the most probable material.", minimum=1)]
    refcode: Annotated[str, doc("The library determination (CSD refcode or user key) that represents the "
                                "material best: the one the peak evidence supports.",
                                minLength=1, maxLength=128)]
    name: Annotated[str, doc("Common name of the material (e.g. HKUST-1), or its first refcode when the "
                             "library has none.", maxLength=256)]
    probability: Annotated[float, doc("Probability the model gives the material: the sum over its "
                                      "determinations.", minimum=0, maximum=1)]
    material: Annotated[str, doc("Material id: the refcode of the material's first library class; the "
                                 "same for all its determinations. Absent from class-level answers.",
                                 minLength=1, maxLength=128)] = ""
    determinations: Annotated[tuple[Determination, ...], doc(
        "The material's library determinations with their probabilities, most probable first.",
        maxItems=100)] = ()
    fit: Annotated[PhysicsFit | None, doc("The physics check's fit of the representing determination "
                                          "(absent when it was not fitted).")] = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"rank": self.rank, "refcode": self.refcode, "name": self.name,
                               "probability": round(float(self.probability), 6)}
        if self.material:
            out["material"] = self.material
            out["determinations"] = [d.to_dict() for d in self.determinations]
        if self.fit is not None:
            out["fit"] = self.fit
        return out


class Gate(TypedDict):
    """What the FFT noise gate (Wang et al. 2020) measured and did."""

    applied: Annotated[bool, doc("True when the high-frequency band was above threshold and was removed.")]
    high_band_mean: Annotated[float, doc("Mean FFT magnitude beyond the cut-off (scan normalised to max 1).",
                                         minimum=0)]
    threshold: Annotated[float, doc("Gate threshold in use (config `gate.threshold`).", minimum=0)]
    cutoff_bins: Annotated[int, doc("Cut-off in frequency bins (config `gate.cutoff_bins`).", minimum=0)]


@dataclass(frozen=True)
class Coverage:
    """How much of the model grid (2-theta 5-50 deg, Cu K-alpha1 scale) the scan measured."""

    first: Annotated[float, doc("First covered 2-theta on the model grid (deg, Cu K-alpha1 scale).")]
    last: Annotated[float, doc("Last covered 2-theta on the model grid (deg, Cu K-alpha1 scale).")]
    fraction: Annotated[float, doc("Covered share of the 5-50 deg grid.", minimum=0, maximum=1)]

    def to_dict(self) -> dict[str, Any]:
        return {"first": self.first, "last": self.last, "fraction": self.fraction}


@dataclass(frozen=True)
class CamRegion:
    """A 2-theta interval whose class activation drove the top decision."""

    start: Annotated[float, doc("Interval start (deg 2-theta, Cu K-alpha1 scale).")]
    end: Annotated[float, doc("Interval end (deg 2-theta, Cu K-alpha1 scale).")]
    weight: Annotated[float, doc("Share of the positive activation inside the interval.",
                                 minimum=0, maximum=1)]

    def to_dict(self) -> dict[str, float]:
        return {"start": round(self.start, 3), "end": round(self.end, 3), "weight": round(self.weight, 4)}


class CrystallinityResult(TypedDict):
    """How much of the product is crystalline (xrd_agent.crystallinity): sharp Bragg intensity
    against broad amorphous scattering, instrument background excluded, calibrated to mass."""

    fraction: Annotated[float, doc("Estimated crystalline mass fraction of the product.", minimum=0, maximum=1)]
    uncertainty: Annotated[float, doc("1-sigma uncertainty of the fraction (counting, method, calibration).",
                                      minimum=0)]
    index: Annotated[float, doc("Uncalibrated sharp share of the diffracted intensity after the noise-bias "
                                "correction (slightly negative when there is no sharp intensity at all).",
                                minimum=-1, maximum=1)]
    span: Annotated[list[float], doc("2-theta range the estimate read (deg, Cu K-alpha1 scale).",
                                     minItems=2, maxItems=2)]


class IdentificationResult(TypedDict):
    """``Identification.to_dict()``: the model's answer for one scan."""

    top: Annotated[list[Candidate], doc("The Top-k phases, most probable first.", maxItems=50)]
    confidence: Annotated[float, doc("Probability of the top phase after the unknown-phase check.",
                                     minimum=0, maximum=1)]
    flags: Annotated[list[PhaseFlag], doc("Warnings to act on: unknown_phase (nothing in the library "
                                          "explains the scan), amorphous (no crystalline product), "
                                          "mixture (a second phase is likely), low_coverage (too little "
                                          "of 5-50 deg measured), low_crystallinity (crystalline, but much "
                                          "of the product is amorphous).", uniqueItems=True)]
    gate: Annotated[Gate, doc("The FFT noise gate's decision.")]
    coverage: Annotated[Coverage, doc("Which part of the model grid the scan covered.")]
    cam_regions: Annotated[list[CamRegion], doc("2-theta intervals that drove the top decision "
                                                "(class activation map).", maxItems=100)]
    model_version: ModelVersion
    library_version: LibraryVersion
    crystallinity: NotRequired[Annotated[CrystallinityResult, doc(
        "Crystalline fraction of the product; absent when the scan holds too little to estimate it.")]]
    physics: NotRequired[Annotated[PhysicsSummary, doc("The physics check of the candidates (absent when "
                                                       "it did not run).")]]
    composition: NotRequired[Annotated[list[PhaseShare], doc("Phases found by fitting, best first, with "
                                                             "weight fractions; more than one means a "
                                                             "significant mixture.", maxItems=3)]]


class Evidence(TypedDict, total=False):
    """Why an alert fired: whichever of these facts apply."""

    expected_phases: Annotated[list[Refcode], doc("Phases the chemist said this sample should contain "
                                                  "(control op `expect` or config `service.expectations`).",
                                                  maxItems=50)]
    top_k: Annotated[int, doc("How deep in the ranking an expected phase had to appear.", minimum=1)]
    found: Annotated[list[Refcode], doc("Refcodes the model ranked in the Top-k, most probable first "
                                        "(each material's best determination).", maxItems=50)]
    found_names: Annotated[list[Annotated[str, doc("A material's common name.", maxLength=256)]],
                           doc("Common names of the materials in `found`, same order.", maxItems=50)]
    expected_materials: Annotated[list[Annotated[str, doc("A material's common name.", maxLength=256)]],
                                  doc("The library materials the expected phases name.", maxItems=50)]
    confidence: Annotated[float, doc("Probability of the top phase.", minimum=0, maximum=1)]
    threshold: Annotated[float, doc("The threshold the decision was compared with "
                                    "(e.g. `model.unknown_threshold`).")]
    flags: Annotated[list[PhaseFlag], doc("The identification's flags.", uniqueItems=True)]
    directory: Annotated[str, doc("The watched export folder (folder alerts).", maxLength=4096)]
    crystallinity: Annotated[float, doc("Estimated crystalline fraction of the product (amorphous and "
                                        "low_crystallinity alerts).", minimum=0, maximum=1)]
    detail: Annotated[str, doc("One sentence for people, e.g. the reader's reason for an unreadable file.",
                               maxLength=2000)]


class Header(TypedDict):
    """Fields every message carries (``topic`` and ``seq`` are declared per message)."""

    schema_version: SchemaVersion
    agent_id: AgentId
    instrument_id: InstrumentId
    published_at: PublishedAt
    model_version: ModelVersion
    library_version: LibraryVersion


class IdentificationMessage(Header):
    """xrd.identification: the Top-k phases of one finished scan."""

    topic: Annotated[Literal["xrd.identification"], doc("Topic frame of the message, repeated in the body.")]
    seq: Seq
    scan_id: ScanId
    path: ScanPath
    sample_id: SampleId
    written_at: WrittenAt
    detected_at: DetectedAt
    format: Annotated[str, doc("Reader that parsed the file (e.g. bruker_raw, brml, uxd).",
                               pattern=r"^[a-z0-9_]{1,32}$")]
    result: Annotated[IdentificationResult, doc("The identification (Identification.to_dict()).")]
    duplicate_of: Annotated[int | None, doc("seq of the original identification when this file is a "
                                            "byte-identical re-export of an earlier one, else null.",
                                            minimum=1)]


class AlertMessage(Header):
    """xrd.alert: something a chemist or robot should act on (a failed synthesis, a lost folder)."""

    topic: Annotated[Literal["xrd.alert"], doc("Topic frame of the message, repeated in the body.")]
    seq: Seq
    scan_id: Annotated[str | None, doc("SHA-256 of the scan file (lower-case hex); null for folder alerts.",
                                       pattern=r"^[0-9a-f]{64}$")]
    path: Annotated[str | None, doc("The scan file, or for folder alerts the watched folder.",
                                    minLength=1, maxLength=4096)]
    sample_id: SampleId
    written_at: Annotated[str | None, doc("Modification time of the scan file (RFC 3339, UTC); null for "
                                          "folder alerts.", pattern=_TIMESTAMP_PATTERN)]
    detected_at: Annotated[str | None, doc("When the agent saw the file or the folder change "
                                           "(RFC 3339, UTC).", pattern=_TIMESTAMP_PATTERN)]
    reason: Annotated[AlertReason, doc("What happened: expected_phase_missing (no expected material "
                                       "is in the Top-k), expected_phase_uncertain (an expected material "
                                       "is there but the answer is not confident), amorphous, unknown_phase, mixture, low_coverage, "
                                       "unreadable (a finished file could not be read), folder_missing, "
                                       "folder_restored, low_crystallinity (much of the product is amorphous).")]
    severity: Annotated[Severity, doc("info, warning or critical (critical: a synthesis most likely failed "
                                      "or the agent cannot see new scans).")]
    evidence: Annotated[Evidence, doc("The facts behind the alert.")]
    result: Annotated[IdentificationResult | None, doc("The identification that raised the alert, or null "
                                                       "when there is none (folder alerts, unreadable "
                                                       "files).")]


class RejectedMessage(Header):
    """xrd.rejected: a finished file that could not be turned into a trustworthy scan."""

    topic: Annotated[Literal["xrd.rejected"], doc("Topic frame of the message, repeated in the body.")]
    seq: Seq
    scan_id: Annotated[str | None, doc("SHA-256 of the file's bytes (lower-case hex); null when the file "
                                       "could not even be read.", pattern=r"^[0-9a-f]{64}$")]
    path: ScanPath
    sample_id: SampleId
    written_at: Annotated[str | None, doc("Modification time of the file (RFC 3339, UTC); null when it "
                                          "could not be read.", pattern=_TIMESTAMP_PATTERN)]
    detected_at: DetectedAt
    reason: Annotated[str, doc("Why, in one sentence a chemist understands (the ScanError's reason).",
                               minLength=1, maxLength=2000)]
    error: Annotated[str, doc("Machine-readable error code (the ScanError's `code`): e.g. truncated, "
                              "corrupt, incomplete, unsafe, unsupported_format, not_a_file, "
                              "unknown_wavelength, no_coverage. New codes may appear in later versions; "
                              "treat unknown ones like scan_error.", pattern=r"^[a-z][a-z0-9_]{0,63}$")]


class StatusMessage(Header):
    """xrd.status: the service changed state (published on every transition)."""

    topic: Annotated[Literal["xrd.status"], doc("Topic frame of the message, repeated in the body.")]
    seq: Seq
    state: Annotated[ServiceState, doc("starting, ready (identifying scans), reloading (model or config), "
                                       "draining (finishing queued scans before a stop), stopped, "
                                       "degraded (running but something needs a person: see detail).")]
    detail: Annotated[str, doc("One sentence for people; empty when there is nothing to add.",
                               maxLength=2000)]
    counters: Annotated[dict[str, Count], doc("Running totals since start, e.g. scans_seen, identified, "
                                            "alerts, rejected, duplicates.",
                                            propertyNames={"pattern": r"^[a-z][a-z0-9_]{0,63}$"})]


class HeartbeatMessage(Header):
    """xrd.heartbeat: the agent is alive (every `publish.heartbeat_s`); not stored, not replayed."""

    topic: Annotated[Literal["xrd.heartbeat"], doc("Topic frame of the message, repeated in the body.")]
    seq: Annotated[int, doc("Equal to last_seq: a heartbeat does not take a sequence number of its own.",
                            minimum=0)]
    last_seq: Annotated[int, doc("seq of the newest durable message (0 before the first); a subscriber "
                                 "behind it has missed messages and replays them.", minimum=0)]
    uptime_s: Annotated[float, doc("Seconds since the service started.", minimum=0)]
    queue_depth: Annotated[int, doc("Scans waiting to be identified.", minimum=0)]


ReviewDecision = Literal["confirmed", "corrected", "failed", "unknown"]
Reviewer = Annotated[str, doc("Who decided (free text, e.g. initials); empty when not given.",
                              maxLength=128, pattern=_NAME_PATTERN)]
ReviewComment = Annotated[str, doc("Anything the chemist wants to add; empty when nothing.", maxLength=2000)]
_DECISION_TEXT = ("confirmed (the model's first candidate is right), corrected (another candidate of the "
                  "Top-k is right: see refcode), failed (the synthesis failed: no intended product), "
                  "unknown (none of the candidates; the phase is not known)")


class ReviewMessage(Header):
    """xrd.review: a chemist's decision on an identification that needed a person (review page)."""

    topic: Annotated[Literal["xrd.review"], doc("Topic frame of the message, repeated in the body.")]
    seq: Seq
    of_seq: Annotated[int, doc("seq of the xrd.identification this decision is about.", minimum=1)]
    scan_id: ScanId
    path: ScanPath
    sample_id: SampleId
    decision: Annotated[ReviewDecision, doc("The decision: " + _DECISION_TEXT + ".")]
    refcode: Annotated[str | None, doc("The phase the chemist says the scan shows (confirmed, corrected); "
                                       "null for failed and unknown.", minLength=1, maxLength=128)]
    name: Annotated[str | None, doc("Common name of that phase; null for failed and unknown.",
                                    maxLength=256)]
    model_refcode: Annotated[str | None, doc("The model's first candidate, for the record (null when the "
                                             "result had none).", maxLength=128)]
    reviewer: Reviewer
    comment: ReviewComment


class ReviewRequest(TypedDict):
    """HTTP POST /results/{seq}/review: a chemist's decision on one identification."""

    decision: Annotated[ReviewDecision, doc("The decision: " + _DECISION_TEXT + ".")]
    refcode: NotRequired[Annotated[str, doc("corrected: the candidate (a refcode of the result's Top-k) "
                                            "that is right; confirmed: optional, must be the first "
                                            "candidate; failed, unknown: leave out.",
                                            minLength=1, maxLength=128)]]
    reviewer: NotRequired[Reviewer]
    comment: NotRequired[ReviewComment]


class HttpError(TypedDict):
    """An HTTP API error body (400, 401, 404, 503)."""

    error: Annotated[str, doc("What was wrong, in one sentence.", minLength=1, maxLength=2000)]
    status: Annotated[int, doc("The HTTP status code, repeated.", minimum=400, maximum=599)]


# ---- control socket (ROUTER, JSON): requests


class ReplayRequest(TypedDict):
    """Ask for the stored messages after ``since_seq``, in seq order."""

    op: Annotated[Literal["replay"], doc("The operation.")]
    id: NotRequired[RequestId]
    since_seq: Annotated[int, doc("Return messages with seq greater than this (0: from the start).",
                                  minimum=0)]
    limit: NotRequired[Annotated[int, doc("Most messages in one reply (default 100); page on with the "
                                          "last seq while the reply says more.", minimum=1, maximum=1000)]]


class StatusRequest(TypedDict):
    """Ask for the service state and counters."""

    op: Annotated[Literal["status"], doc("The operation.")]
    id: NotRequired[RequestId]


class ExpectRequest(TypedDict):
    """Tell the agent which phases a sample should contain; a scan of it without them raises an alert."""

    op: Annotated[Literal["expect"], doc("The operation.")]
    id: NotRequired[RequestId]
    sample_id: Annotated[str, doc("Sample name as the instrument writes it into the scan file.",
                                  minLength=1, maxLength=256, pattern=_NAME_PATTERN)]
    phases: Annotated[list[Refcode], doc("Expected phases (library refcodes); an empty list forgets the "
                                         "expectation.", maxItems=50)]
    top_k: NotRequired[Annotated[int, doc("An expected phase must rank within this many (default 5).",
                                          minimum=1, maximum=50)]]
    elements: NotRequired[Annotated[list[ElementSymbol], doc(
        "Chemical elements the sample was made from (the synthesis' metals and linker atoms); "
        "identification may use them to rule out phases that need other elements.",
        maxItems=50, uniqueItems=True)]]


class BySampleRequest(TypedDict):
    """Ask for every stored result of one sample (identifications, alerts, rejections, reviews)."""

    op: Annotated[Literal["by_sample"], doc("The operation.")]
    id: NotRequired[RequestId]
    sample_id: Annotated[str, doc("Sample name as the instrument writes it into the scan file.",
                                  minLength=1, maxLength=256, pattern=_NAME_PATTERN)]
    limit: NotRequired[Annotated[int, doc("Most messages in one reply (default 100), newest first.",
                                          minimum=1, maximum=1000)]]


class HealthRequest(TypedDict):
    """Ask whether the agent is fit to identify scans now, and if not, why."""

    op: Annotated[Literal["health"], doc("The operation.")]
    id: NotRequired[RequestId]
    amorphous_below: NotRequired[Annotated[float, doc(
        "This sample's crystalline-fraction threshold for `amorphous` (default: config "
        "`model.amorphous_below`).", minimum=0, maximum=1)]]
    low_crystallinity_below: NotRequired[Annotated[float, doc(
        "This sample's threshold for `low_crystallinity` (default: config `model.low_crystallinity_below`).",
        minimum=0, maximum=1)]]


class PingRequest(TypedDict):
    """Is the agent there?"""

    op: Annotated[Literal["ping"], doc("The operation.")]
    id: NotRequired[RequestId]


# ---- control socket: replies


class ErrorReply(TypedDict):
    """The request was refused or failed; nothing changed."""

    ok: Annotated[Literal[False], doc("False: see error.")]
    op: Annotated[str | None, doc("The requested op, when it could be read.", maxLength=64)]
    id: NotRequired[RequestId]
    error: Annotated[str, doc("What was wrong, in one sentence.", minLength=1, maxLength=2000)]


class ReplayReply(TypedDict):
    """Stored messages after since_seq, in seq order."""

    ok: Annotated[Literal[True], doc("True: the request succeeded.")]
    op: Annotated[Literal["replay"], doc("The operation answered.")]
    id: NotRequired[RequestId]
    messages: Annotated[list[dict[str, Any]], doc("Messages exactly as published (each valid against its "
                                                  "topic's schema), in seq order.", maxItems=1000)]
    more: Annotated[bool, doc("True when more messages follow: ask again from the last seq received.")]
    last_seq: Annotated[int, doc("Newest seq in the ledger now.", minimum=0)]


class StatusReply(TypedDict):
    """The service state, counters and progress."""

    ok: Annotated[Literal[True], doc("True: the request succeeded.")]
    op: Annotated[Literal["status"], doc("The operation answered.")]
    id: NotRequired[RequestId]
    state: Annotated[ServiceState, doc("Current service state (see xrd.status).")]
    detail: Annotated[str, doc("One sentence for people; empty when there is nothing to add.",
                               maxLength=2000)]
    counters: Annotated[dict[str, Count], doc("Running totals since start.",
                                            propertyNames={"pattern": r"^[a-z][a-z0-9_]{0,63}$"})]
    last_seq: Annotated[int, doc("Newest seq in the ledger.", minimum=0)]
    uptime_s: Annotated[float, doc("Seconds since the service started.", minimum=0)]
    queue_depth: Annotated[int, doc("Scans waiting to be identified.", minimum=0)]
    model_version: ModelVersion
    library_version: LibraryVersion


class ExpectReply(TypedDict):
    """The expectation now in force for the sample."""

    ok: Annotated[Literal[True], doc("True: the request succeeded.")]
    op: Annotated[Literal["expect"], doc("The operation answered.")]
    id: NotRequired[RequestId]
    sample_id: Annotated[str, doc("The sample.", maxLength=256)]
    phases: Annotated[list[Refcode], doc("Expected phases now recorded (empty: forgotten).", maxItems=50)]
    top_k: Annotated[int, doc("Rank an expected phase must reach.", minimum=1, maximum=50)]
    elements: NotRequired[Annotated[list[ElementSymbol], doc("Elements recorded with the request, "
                                                             "when it gave any.", maxItems=50)]]


class BySampleReply(TypedDict):
    """Every stored message that names the sample, newest first."""

    ok: Annotated[Literal[True], doc("True: the request succeeded.")]
    op: Annotated[Literal["by_sample"], doc("The operation answered.")]
    id: NotRequired[RequestId]
    sample_id: Annotated[str, doc("The sample asked for.", maxLength=256)]
    messages: Annotated[list[dict[str, Any]], doc("Messages exactly as published (identification, alert, "
                                                  "rejected, review), newest (highest seq) first.",
                                                  maxItems=1000)]
    more: Annotated[bool, doc("True when older messages of the sample were left out (raise limit).")]


class HealthReply(TypedDict):
    """Whether the agent can identify scans now; ``reasons`` says why not."""

    ok: Annotated[Literal[True], doc("True: the request succeeded.")]
    op: Annotated[Literal["health"], doc("The operation answered.")]
    id: NotRequired[RequestId]
    state: Annotated[ServiceState, doc("Current service state (see xrd.status).")]
    healthy: Annotated[bool, doc("True when state is ready and nothing in reasons: scans are being "
                                 "identified as they arrive.")]
    reasons: Annotated[list[Annotated[str, doc("One problem, in a sentence a person can act on.",
                                               maxLength=500)]],
                       doc("Why the agent is not healthy (empty when it is): the export folder is "
                           "missing, the worker is silent or stopped, the queue is nearly full, the "
                           "model is not loaded.", maxItems=20)]
    queue_depth: Annotated[int, doc("Scans waiting to be identified.", minimum=0)]
    queue_size: Annotated[int, doc("Capacity of the queue (config `watch.queue_size`).", minimum=0)]
    last_scan_age_s: Annotated[float | None, doc("Seconds since the newest scan outcome was recorded "
                                                 "(also across restarts); null before the first scan.",
                                                 minimum=0)]
    worker_silent_s: Annotated[float, doc("Seconds since the worker thread last turned.", minimum=0)]
    last_seq: Annotated[int, doc("Newest seq in the ledger.", minimum=0)]
    uptime_s: Annotated[float, doc("Seconds since the service started.", minimum=0)]
    model_version: ModelVersion
    library_version: LibraryVersion


class PingReply(TypedDict):
    """The agent is there and speaks this protocol version."""

    ok: Annotated[Literal[True], doc("True: the request succeeded.")]
    op: Annotated[Literal["ping"], doc("The operation answered.")]
    id: NotRequired[RequestId]
    schema_version: SchemaVersion
    time: Annotated[str, doc("The agent's clock (RFC 3339, UTC).", pattern=_TIMESTAMP_PATTERN)]


MESSAGE_TYPES: dict[str, type] = {
    IDENTIFICATION: IdentificationMessage,
    ALERT: AlertMessage,
    REJECTED: RejectedMessage,
    STATUS: StatusMessage,
    HEARTBEAT: HeartbeatMessage,
    REVIEW: ReviewMessage,
}
#: Bodies of the HTTP API that are not messages (``schemas/http.json``).
HTTP_TYPES: dict[str, type] = {"review_request": ReviewRequest, "error": HttpError}
REQUEST_TYPES: dict[str, type] = {"replay": ReplayRequest, "status": StatusRequest,
                                  "expect": ExpectRequest, "ping": PingRequest,
                                  "by_sample": BySampleRequest, "health": HealthRequest}
REPLY_TYPES: dict[str, type] = {"replay": ReplayReply, "status": StatusReply,
                                "expect": ExpectReply, "ping": PingReply,
                                "by_sample": BySampleReply, "health": HealthReply, "error": ErrorReply}
#: Control operations, for clients and the server.
OPS: tuple[str, ...] = tuple(REQUEST_TYPES)


# --------------------------------------------------------------------------- generation

_SCALARS = {str: "string", int: "integer", float: "number", bool: "boolean", NoneType: "null"}
_FIRST_KEYS = ("schema_version", "topic", "seq", "ok", "op", "id")


def _json_type(value: object) -> str:
    return _SCALARS[type(value)]


def _to_schema(tp: Any) -> dict[str, Any]:
    """JSON Schema for one annotation. Hand-written because no schema generator
    (pydantic, msgspec) is a dependency, and the subset used here is small."""
    meta: list[Doc] = []
    while get_origin(tp) in (Annotated, NotRequired):
        if get_origin(tp) is Annotated:
            meta.extend(m for m in tp.__metadata__ if isinstance(m, Doc))
            tp = tp.__origin__
        else:
            tp = get_args(tp)[0]
    origin = get_origin(tp)
    if tp in _SCALARS:
        out: dict[str, Any] = {"type": _SCALARS[tp]}
    elif tp is Any:
        out = {}
    elif origin is Literal:
        values = list(get_args(tp))
        types = sorted({_json_type(v) for v in values})
        out = {"type": types[0] if len(types) == 1 else types}
        out.update({"const": values[0]} if len(values) == 1 else {"enum": values})
    elif origin in (Union, UnionType):
        members = [_to_schema(a) for a in get_args(tp)]
        if all(set(m) <= {"type", "enum"} for m in members):
            types: list[str] = []
            for m in members:
                for t in m["type"] if isinstance(m["type"], list) else [m["type"]]:
                    if t not in types:
                        types.append(t)
            out = {"type": types}
            enums = [m["enum"] for m in members if "enum" in m]
            if enums:
                out["enum"] = [v for e in enums for v in e] + [None] * ("null" in types)
        else:
            out = {"anyOf": members}
    elif origin is list or (origin is tuple and len(get_args(tp)) == 2 and get_args(tp)[1] is Ellipsis):
        out = {"type": "array", "items": _to_schema(get_args(tp)[0])}
    elif origin is dict:
        out = {"type": "object", "additionalProperties": _to_schema(get_args(tp)[1])}
    elif is_typeddict(tp) or dataclasses.is_dataclass(tp):
        out = _object_schema(tp)
    else:  # pragma: no cover - a contract author's mistake, caught by the drift test
        raise TypeError(f"no JSON Schema mapping for {tp!r}")
    for m in meta:
        out["description"] = m.text
        out.update(m.constraints)
    return out


def _object_schema(cls: type) -> dict[str, Any]:
    hints = get_type_hints(cls, include_extras=True)
    names = sorted(hints, key=lambda n: (_FIRST_KEYS.index(n) if n in _FIRST_KEYS else len(_FIRST_KEYS)))
    properties = {name: _to_schema(hints[name]) for name in names}
    if dataclasses.is_dataclass(cls):  # a value the code also uses (Candidate, Coverage, CamRegion)
        fields_ = {f.name: f for f in dataclasses.fields(cls)}
        names = [n for n in names if n in fields_]
        properties = {name: properties[name] for name in names}
        # required unless it has a default (a field added later, absent from older agents' messages)
        required = [n for n in names if fields_[n].default is dataclasses.MISSING
                    and fields_[n].default_factory is dataclasses.MISSING]
    else:
        required = [name for name in names if name in cls.__required_keys__]  # type: ignore[attr-defined]
    out: dict[str, Any] = {"type": "object", "description": " ".join((cls.__doc__ or "").split()),
                           "properties": properties}
    if required:
        out["required"] = required
    out["additionalProperties"] = False
    return out


def _document(name: str, body: dict[str, Any], title: str) -> dict[str, Any]:
    return {"$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": f"urn:xrd-agent:schema:{SCHEMA_VERSION}:{name}", "title": title, **body}


def _union_document(name: str, title: str, description: str, types: Mapping[str, type]) -> dict[str, Any]:
    return _document(name, {
        "description": description,
        "oneOf": [{"$ref": f"#/$defs/{key}"} for key in types],
        "$defs": {key: _object_schema(cls) for key, cls in types.items()},
    }, title)


def generate_schemas() -> dict[str, dict[str, Any]]:
    """Every schema file's content, keyed by file name, generated from the TypedDicts above."""
    out = {}
    for topic, cls in MESSAGE_TYPES.items():
        name = topic.removeprefix("xrd.")
        out[f"{name}.json"] = _document(name, _object_schema(cls), topic)
    out["control_request.json"] = _union_document(
        "control_request", "xrd-agent control request",
        "A JSON object sent to the control socket (ROUTER); `op` selects the operation.", REQUEST_TYPES)
    out["control_reply.json"] = _union_document(
        "control_reply", "xrd-agent control reply",
        "The control socket's answer: `ok` true with the op's fields, or `ok` false with `error`.",
        REPLY_TYPES)
    out["http.json"] = _document("http", {
        "description": "Bodies of the HTTP API that are not messages: the review request and the error body.",
        "$defs": {key: _object_schema(cls) for key, cls in HTTP_TYPES.items()},
    }, "xrd-agent HTTP bodies")
    return out


def object_schema(cls: type) -> dict[str, Any]:
    """The JSON Schema of one TypedDict of this module (the HTTP API's OpenAPI document uses it)."""
    return _object_schema(cls)


def validate_http(kind: str, body: Any) -> dict[str, Any]:
    """Check an HTTP body (``review_request``) against ``schemas/http.json``; MessageError names the field."""
    if not isinstance(body, dict):
        raise MessageError(f"the body must be a JSON object, not {type(body).__name__}")
    _check(_validator("http.json", kind), body, kind)
    return body


def render(schema_doc: Mapping[str, Any]) -> str:
    """The exact text a schema file holds (stable, so drift shows as a diff)."""
    return json.dumps(schema_doc, indent=2, ensure_ascii=False) + "\n"


def write_schemas(directory: str | Path | None = None) -> list[Path]:
    """Regenerate ``xrd_agent/schemas/*.json`` (run after editing the TypedDicts)."""
    target = Path(directory) if directory else Path(__file__).with_name("schemas")
    target.mkdir(parents=True, exist_ok=True)
    written = []
    for name, content in generate_schemas().items():
        (target / name).write_text(render(content), encoding="utf-8")
        written.append(target / name)
    return written


# --------------------------------------------------------------------------- run time


@functools.cache
def _load(name: str) -> dict[str, Any]:
    text = resources.files("xrd_agent").joinpath("schemas", name).read_text(encoding="utf-8")
    return json.loads(text)


@functools.cache
def _validator(name: str, definition: str | None = None) -> jsonschema.protocols.Validator:
    document = _load(name)
    if definition is not None:
        # Validate against one branch of a oneOf: the error then names the field, not "not valid
        # under any of the given schemas".
        document = {**document["$defs"][definition], "$defs": document["$defs"]}
    cls = jsonschema.validators.validator_for(document)
    return cls(document)


def schema(topic: str) -> dict[str, Any]:
    """The JSON Schema of a topic's message (or of ``control_request`` / ``control_reply``)."""
    if topic in TOPICS:
        return _load(f"{topic.removeprefix('xrd.')}.json")
    if topic in ("control_request", "control_reply"):
        return _load(f"{topic}.json")
    raise MessageError(f"unknown topic {topic!r}; known topics: {', '.join(TOPICS)}")


def _check(validator: jsonschema.protocols.Validator, instance: Any, what: str) -> None:
    error = None if validator.is_valid(instance) else best_match(validator.iter_errors(instance))
    if error is not None:
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path).lstrip(".")
        raise MessageError(f"{what}: {where + ': ' if where else ''}{error.message}")
    try:
        dumps(instance)
    except (TypeError, ValueError) as exc:
        raise MessageError(f"{what}: not representable as JSON ({exc})") from None


def validate(message: Mapping[str, Any]) -> None:
    """Raise :class:`MessageError` naming the first offending field unless ``message``
    follows its topic's schema (and is plain JSON: no NaN, no numpy scalars)."""
    if not isinstance(message, Mapping):
        raise MessageError(f"a message must be a JSON object, not {type(message).__name__}")
    topic = message.get("topic")
    if topic not in TOPICS:
        raise MessageError(f"unknown topic {topic!r}; known topics: {', '.join(TOPICS)}")
    version = message.get("schema_version")
    if version != SCHEMA_VERSION:
        raise MessageError(f"{topic}: schema_version {version!r} is not {SCHEMA_VERSION!r}; "
                           "this xrd-agent speaks protocol version " + SCHEMA_VERSION)
    _check(_validator(f"{topic.removeprefix('xrd.')}.json"), message, topic)
    if topic == HEARTBEAT and message["seq"] != message["last_seq"]:
        raise MessageError(f"{topic}: seq {message['seq']} must equal last_seq {message['last_seq']}")


def validate_request(request: Any) -> dict[str, Any]:
    """Check a control request; returns it, or raises :class:`MessageError` with a reason
    the requester can act on."""
    if not isinstance(request, dict):
        raise MessageError(f"a request must be a JSON object, not {type(request).__name__}")
    op = request.get("op")
    if op not in REQUEST_TYPES:
        raise MessageError(f"unknown op {op!r}; known ops: {', '.join(OPS)}")
    _check(_validator("control_request.json", op), request, f"request {op}")
    return request


def validate_reply(reply: Any) -> dict[str, Any]:
    """Check a control reply (the server does before sending, the client after receiving)."""
    if not isinstance(reply, dict):
        raise MessageError(f"a reply must be a JSON object, not {type(reply).__name__}")
    key = reply.get("op") if reply.get("ok") is True else "error"
    if key not in REPLY_TYPES:
        raise MessageError(f"reply for unknown op {key!r}")
    _check(_validator("control_reply.json", key), reply, f"reply {key}")
    return reply


def rfc3339(when: float | datetime | None = None) -> str:
    """A timestamp as the contract writes it: UTC, milliseconds, ``Z`` (now when ``when`` is None;
    a float is a POSIX time such as ``os.stat().st_mtime``)."""
    if when is None:
        moment = datetime.now(UTC)
    elif isinstance(when, datetime):
        if when.tzinfo is None:
            raise MessageError("naive datetime: give a time zone (UTC) so the timestamp is unambiguous")
        moment = when.astimezone(UTC)
    else:
        moment = datetime.fromtimestamp(float(when), UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def build(topic: str, seq: int, body: Mapping[str, Any], *, agent_id: str, instrument_id: str,
          model_version: str = "", library_version: str = "", published_at: str | None = None,
          ) -> dict[str, Any]:
    """A complete, validated message: the header fields plus ``body`` (the topic's own
    fields, see the TypedDicts above). Raises :class:`MessageError` on anything the
    schema refuses, so an invalid message never reaches the wire."""
    if topic not in TOPICS:
        raise MessageError(f"unknown topic {topic!r}; known topics: {', '.join(TOPICS)}")
    clash = sorted(set(body) & set(HEADER_KEYS))
    if clash:
        raise MessageError(f"{topic}: the body must not set header field(s) {', '.join(clash)}")
    message: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "topic": topic,
        "seq": seq,
        "agent_id": agent_id,
        "instrument_id": instrument_id,
        "published_at": published_at if published_at is not None else rfc3339(),
        "model_version": model_version,
        "library_version": library_version,
        **body,
    }
    validate(message)
    return message


def dumps(obj: Any) -> str:
    """Compact JSON as it goes on the wire (UTF-8 text, no NaN/Infinity)."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def loads(data: bytes | str) -> Any:
    """Parse wire JSON, refusing NaN/Infinity (Python's json accepts them by default)."""
    return json.loads(data, parse_constant=_refuse_constant)


def encode(message: Mapping[str, Any]) -> list[bytes]:
    """``[topic, JSON]`` frames for a validated message."""
    validate(message)
    return [message["topic"].encode("ascii"), dumps(message).encode("utf-8")]


def decode(frames: Sequence[bytes]) -> dict[str, Any]:
    """The message in ``[topic, JSON]`` frames, validated; :class:`MessageError` otherwise."""
    if len(frames) != 2:
        raise MessageError(f"expected 2 frames [topic, JSON], got {len(frames)}")
    raw_topic, payload = bytes(frames[0]), bytes(frames[1])
    if len(payload) > MAX_MESSAGE_BYTES:
        raise MessageError(f"message of {len(payload)} bytes exceeds the {MAX_MESSAGE_BYTES}-byte limit")
    try:
        topic = raw_topic.decode("ascii")
        message = loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise MessageError(f"frames are not [topic, UTF-8 JSON]: {exc}") from None
    if not isinstance(message, dict):
        raise MessageError(f"{topic}: the JSON frame must be an object, not {type(message).__name__}")
    if message.get("topic") != topic:
        raise MessageError(f"topic frame {topic!r} does not match the message's topic "
                           f"{message.get('topic')!r}")
    validate(message)
    return message


_EXAMPLE_RESULT: dict[str, Any] = {
    "top": [
        {"rank": 1, "refcode": "FIQCEN", "name": "HKUST-1", "probability": 0.953, "material": "FIQCEN",
         "determinations": [{"refcode": "FIQCEN", "probability": 0.912}, {"refcode": "DIHVIB", "probability": 0.041}]},
        {"rank": 2, "refcode": "OFERUN", "name": "ZIF-8", "probability": 0.017},
        {"rank": 3, "refcode": "EDUSIF", "name": "MOF-5", "probability": 0.009},
        {"rank": 4, "refcode": "RUBTAK02", "name": "UiO-66", "probability": 0.006},
        {"rank": 5, "refcode": "GITTOT", "name": "ZIF-67", "probability": 0.004},
    ],
    "confidence": 0.912,
    "flags": [],
    "gate": {"applied": False, "high_band_mean": 0.42, "threshold": 1.0, "cutoff_bins": 200},
    "coverage": {"first": 5.0, "last": 50.0, "fraction": 1.0},
    "cam_regions": [{"start": 6.6, "end": 7.0, "weight": 0.41}, {"start": 11.5, "end": 11.8, "weight": 0.22}],
    "model_version": "wang2020-cnn-7f3a1c2",
    "library_version": "coremof2019-asr-5b81e0d",
}

_EXAMPLE_SCAN: dict[str, Any] = {
    "scan_id": "9f2c1b7e4a5d6c8b0e1f2a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f",
    "path": "/data/d8-export/2026-11-26/S-042_HKUST1.brml",
    "sample_id": "S-042",
    "written_at": "2026-11-26T09:14:03.000Z",
    "detected_at": "2026-11-26T09:14:05.112Z",
}

_EXAMPLE_BODIES: dict[str, dict[str, Any]] = {
    IDENTIFICATION: {**_EXAMPLE_SCAN, "format": "brml", "result": _EXAMPLE_RESULT, "duplicate_of": None},
    ALERT: {**_EXAMPLE_SCAN, "reason": "expected_phase_missing", "severity": "critical",
            "evidence": {"expected_phases": ["ZIF-8"], "expected_materials": ["ZIF-8"], "top_k": 1,
                         "found": ["FIQCEN"], "found_names": ["HKUST-1"], "confidence": 0.912,
                         "detail": "expected ZIF-8, found HKUST-1 (expectation from control)"},
            "result": _EXAMPLE_RESULT},
    REJECTED: {**_EXAMPLE_SCAN, "reason": "the file ends after 1,204 of 2,374 data points",
               "error": "truncated"},
    STATUS: {"state": "ready", "detail": "",
             "counters": {"scans_seen": 12, "identified": 11, "alerts": 1, "rejected": 1, "duplicates": 0}},
    HEARTBEAT: {"last_seq": 41, "uptime_s": 3600.5, "queue_depth": 0},
    REVIEW: {"of_seq": 41, "scan_id": _EXAMPLE_SCAN["scan_id"], "path": _EXAMPLE_SCAN["path"], "sample_id": "S-042",
             "decision": "corrected", "refcode": "DOTSOV", "name": "HKUST-1", "model_refcode": "FIQCEN",
             "reviewer": "AK", "comment": "solvated cell; second candidate fits the low-angle peaks"},
}


def example(topic: str, seq: int = 1, **overrides: Any) -> dict[str, Any]:
    """A valid message of ``topic`` (for documentation and for tests, yours included);
    ``overrides`` replace body fields."""
    body = {**_EXAMPLE_BODIES[topic], **overrides}
    if topic == HEARTBEAT:
        body["last_seq"] = seq
    return build(topic, seq, body, agent_id="xrd-agent", instrument_id="bruker-d8-lab2",
                 model_version=_EXAMPLE_RESULT["model_version"],
                 library_version=_EXAMPLE_RESULT["library_version"],
                 published_at="2026-11-26T09:14:06.250Z")


if __name__ == "__main__":  # python -m xrd_agent.messages: regenerate the schema files
    for path in write_schemas():
        print(path)
