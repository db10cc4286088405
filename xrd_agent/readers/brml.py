"""Reader for Bruker BRML files (DIFFRAC.SUITE Commander): a zip archive of XML.

Layout (field notes; GSAS-II, PyXRD and geddes readers): ``Experiment0/`` sits at the
archive root or under one folder named after the file. ``DataContainer.xml`` lists the
``RawData{n}.xml`` members and carries the sample name; each RawData holds
``DataRoutes/DataRoute`` elements, one per measured range, whose ``<Datum>`` rows are
comma-separated fields. Which field is what is declared by ``DataViews/RawDataView``
(``Start``/``Length``): the varying view lists the drive positions (TwoTheta, Theta, ...),
the recorded view the counts. Row widths differ between instruments (4 to 8 fields in
the fixtures), so nothing here relies on a fixed column.

Everything is parsed in memory from the bytes given, under hard limits (member count,
uncompressed size, compression ratio) so a hostile archive cannot exhaust the host.

``read`` does not refuse an unfinished measurement: it returns the scan with
``complete=False`` (running, aborted, fewer steps measured than planned) and records
why in ``metadata["incomplete_reason"]``; callers decide (the watcher waits, ``inspect``
shows it). ``is_complete`` is the cheap yes/no the watcher polls.
"""

from __future__ import annotations

import datetime as _dt
import io
import lzma
import os
import re
import stat
import struct
import zipfile
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from xml.etree.ElementTree import Element

import numpy as np

from xrd_agent.errors import CorruptScan, ScanError, TruncatedScan, UnsafeScan, UnsupportedFormat
from xrd_agent.readers._xml import XSI_TYPE, child_text, parse_xml, value_attr
from xrd_agent.scan import ANODE_LINES, Scan, ScanRange, Wavelength

FORMAT = "brml"
EXTENSIONS = (".brml",)

#: Limits against zip bombs. Real BRML files are a few MB (the largest fixture member
#: is 4.5 MB); these leave two orders of magnitude of headroom.
MAX_MEMBERS = 4096
MAX_TOTAL_UNCOMPRESSED = 256 * 1024 * 1024  # declared size of all members together
MAX_MEMBER_UNCOMPRESSED = 64 * 1024 * 1024  # one member we parse; its XML tree takes ~7x (tracemalloc)
MAX_COMPRESSION_RATIO = 200  # fixtures: at most 41:1 (MeasurementContainer), 6.6:1 for RawData
RATIO_CHECK_FLOOR = 64 * 1024  # members smaller than this cannot be bombs, whatever the ratio
READ_CHUNK = 1024 * 1024

_ZIP_MAGIC = b"PK\x03\x04"
_EOCD_MAGIC = b"PK\x05\x06"
_SNIFF_MARKERS = (b"Experiment", b"RawData", b"DataContainer", b"experimentCollection")
_DATA_CONTAINER = re.compile(r"^(?P<folder>(?:.*/)?Experiment(?P<n>\d+))/DataContainer\.xml$", re.I)
_RAW_DATA = re.compile(r"^(?P<folder>(?:.*/)?Experiment(?P<exp>\d+))/RawData(?P<n>\d+)\.xml$", re.I)
_TWO_THETA_IDS = ("TwoTheta", "2Theta")
#: Errors the standard library raises on damaged zip data (deflate, bzip2 and LZMA members;
#: RuntimeError is zipfile's "encrypted, password required").
_ZIP_ERRORS = (
    zipfile.BadZipFile,
    zlib.error,
    lzma.LZMAError,
    EOFError,
    OSError,
    ValueError,
    struct.error,
    KeyError,
    RuntimeError,
)


def sniff(head: bytes) -> bool:
    """Zip magic plus a BRML member name among the first local headers."""
    return head.startswith(_ZIP_MAGIC) and any(marker in head for marker in _SNIFF_MARKERS)


def read(path: Path, data: bytes, sha256: str) -> Scan:
    """Read a BRML file's bytes into a :class:`Scan`; raises ``ScanError`` subclasses only."""
    path = Path(path)
    archive = _Archive.open(data, path)
    experiments = _experiments(archive)
    parsed = [_parse_raw_data(archive, member) for exp in experiments for member in exp.members]
    return _build_scan(path, sha256, experiments, parsed)


def is_complete(path: Path) -> bool:
    """True when the archive opens and every range measured all its planned steps.

    DIFFRAC.SUITE writes the zip's central directory last, so a file still being
    written or copied fails to open and counts as not complete. Never raises.
    """
    try:
        path = Path(path)
        data = _read_regular_file(path, MAX_TOTAL_UNCOMPRESSED)
        return data is not None and read(path, data, "").complete
    except (ScanError, OSError):
        return False


def _read_regular_file(path: Path, limit: int) -> bytes | None:
    """The bytes of a regular file of at most ``limit`` bytes; None for links, pipes, devices."""
    if not stat.S_ISREG(os.lstat(path).st_mode):
        return None
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            return None
        data = handle.read(limit + 1)
    return data if len(data) <= limit else None


# --------------------------------------------------------------------------- archive


@dataclass(frozen=True)
class _Archive:
    """An opened, size-checked zip held in memory, with names normalised to ``/``."""

    zip: zipfile.ZipFile
    members: dict[str, zipfile.ZipInfo]
    path: Path

    @classmethod
    def open(cls, data: bytes, path: Path) -> _Archive:
        if not data.startswith(_ZIP_MAGIC):
            if _ZIP_MAGIC.startswith(data):
                raise TruncatedScan("the BRML file is cut off after a few bytes", path)
            if data.startswith(_EOCD_MAGIC):
                raise CorruptScan("the BRML archive is empty: it contains no measurement", path)
            raise UnsupportedFormat("not a BRML file: it is not a zip archive", path)
        try:
            archive = zipfile.ZipFile(io.BytesIO(data))
            infos = archive.infolist()
        except _ZIP_ERRORS:
            end = data.rfind(_EOCD_MAGIC, max(0, len(data) - 65536 - 22))
            if end < 0 or end + 22 > len(data):  # the 22-byte end record is missing or cut
                raise TruncatedScan(
                    "the BRML archive ends before its table of contents: it was cut off while being "
                    "written or copied (is the measurement still running?)",
                    path,
                ) from None
            raise CorruptScan("the BRML archive's table of contents is damaged", path) from None
        if len(infos) > MAX_MEMBERS:
            raise UnsafeScan(f"the BRML archive holds {len(infos)} entries (limit {MAX_MEMBERS})", path)
        total = sum(info.file_size for info in infos)
        if total > MAX_TOTAL_UNCOMPRESSED:
            raise UnsafeScan(
                f"the BRML archive would unpack to {total / 2**20:.0f} MiB "
                f"(limit {MAX_TOTAL_UNCOMPRESSED / 2**20:.0f} MiB): refused as a possible zip bomb",
                path,
            )
        members = {info.filename.replace("\\", "/"): info for info in infos if not info.is_dir()}
        return cls(archive, members, path)

    def read(self, name: str) -> bytes:
        """One member's bytes, decompressed in bounded chunks."""
        info = self.members[name]
        if info.flag_bits & 0x1:
            raise CorruptScan(f"{name} inside the BRML archive is password-protected", self.path)
        if info.file_size > MAX_MEMBER_UNCOMPRESSED:
            raise UnsafeScan(
                f"{name} would unpack to {info.file_size / 2**20:.0f} MiB "
                f"(limit {MAX_MEMBER_UNCOMPRESSED / 2**20:.0f} MiB)",
                self.path,
            )
        if info.file_size > RATIO_CHECK_FLOOR and info.file_size > MAX_COMPRESSION_RATIO * max(
            info.compress_size, 1
        ):
            raise UnsafeScan(
                f"{name} is compressed {info.file_size / max(info.compress_size, 1):.0f}:1, far beyond "
                "what instrument data allows: refused as a possible zip bomb",
                self.path,
            )
        chunks: list[bytes] = []
        size = 0
        try:
            with self.zip.open(info) as handle:
                while chunk := handle.read(READ_CHUNK):
                    size += len(chunk)
                    if size > info.file_size or size > MAX_MEMBER_UNCOMPRESSED:
                        raise UnsafeScan(f"{name} unpacks to more than its declared size", self.path)
                    chunks.append(chunk)
        except NotImplementedError:
            raise CorruptScan(
                f"{name} uses a compression method this reader does not support", self.path
            ) from None
        except _ZIP_ERRORS as exc:
            raise CorruptScan(
                f"{name} inside the BRML archive is damaged ({_describe(exc)})", self.path
            ) from None
        return b"".join(chunks)


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    if "CRC" in text:
        return "checksum mismatch"
    return text[:120] or type(exc).__name__


# ----------------------------------------------------------------------- experiments


@dataclass(frozen=True)
class _Experiment:
    folder: str  # e.g. "SRM1976b_.../Experiment0"
    container: Element | None
    members: tuple[str, ...]  # RawData members in measurement order
    expected: int | None  # DataContainer RawDataExpected


def _numbered(names: Iterable[tuple[str, re.Match[str]]], key: str) -> list[str]:
    return [name for name, _ in sorted(names, key=lambda item: (item[1].group("folder"), int(item[1][key])))]


def _experiments(archive: _Archive) -> list[_Experiment]:
    containers: dict[str, str] = {}
    raw_by_folder: dict[str, list[tuple[str, re.Match[str]]]] = {}
    for name in archive.members:
        if m := _DATA_CONTAINER.match(name):
            containers[m.group("folder")] = name
        elif m := _RAW_DATA.match(name):
            raw_by_folder.setdefault(m.group("folder"), []).append((name, m))
    folders = sorted(set(containers) | set(raw_by_folder), key=_folder_order)
    if not folders:
        raise CorruptScan(
            "the archive contains no Experiment*/RawData*.xml: it is not a BRML measurement "
            "(or the export is damaged)",
            archive.path,
        )
    experiments = []
    for folder in folders:
        found = _numbered(raw_by_folder.get(folder, []), "n")
        container = None
        members = found
        expected = None
        if folder in containers:
            container = parse_xml(archive.read(containers[folder]), containers[folder], archive.path)
            expected = _int(child_text(container, "RawDataExpected"))
            listed = [s.text.strip() for s in container.findall("RawDataReferenceList/string") if s.text]
            if listed:
                members = list(dict.fromkeys(_resolve(archive, folder, ref) for ref in listed))
        if not members:
            raise CorruptScan(f"{folder} in the BRML archive holds no RawData*.xml", archive.path)
        experiments.append(_Experiment(folder, container, tuple(members), expected))
    return experiments


def _folder_order(folder: str) -> tuple[str, int]:
    head, _, tail = folder.rpartition("Experiment")
    return head, int(tail) if tail.isdigit() else 0


def _resolve(archive: _Archive, folder: str, reference: str) -> str:
    """Find a RawDataReferenceList entry; entries omit the folder prefix some exports add."""
    reference = reference.replace("\\", "/").lstrip("/")
    prefix = folder.rpartition("Experiment")[0]
    base = reference.rpartition("/")[2]
    for candidate in (prefix + reference, reference, f"{folder}/{base}"):
        if candidate in archive.members:
            return candidate
    raise CorruptScan(
        f"DataContainer.xml lists {reference} but the archive does not contain it: the export is incomplete",
        archive.path,
    )


# -------------------------------------------------------------------------- raw data


@dataclass(frozen=True)
class _Route:
    range: ScanRange
    planned: int | None
    measured: int
    blanked: int
    two_theta_source: str  # "datum" or "axis"
    scan_mode: str | None


@dataclass(frozen=True)
class _RawData:
    member: str
    root: Element
    routes: tuple[_Route, ...]
    status: str | None


def _parse_raw_data(archive: _Archive, member: str) -> _RawData:
    root = parse_xml(archive.read(member), member, archive.path)
    if root.tag != "RawData":
        raise CorruptScan(f"{member} is not Bruker raw data (root element <{root.tag}>)", archive.path)
    kv, ma = _generator(root)
    routes = [
        _parse_route(route, f"{member} range {i + 1}", archive.path, kv, ma)
        for i, route in enumerate(
            r for r in root.findall("DataRoutes/DataRoute") if r.get("RouteFlag", "Measured") == "Measured"
        )
    ]
    if not routes:
        raise CorruptScan(f"{member} holds no measured data route", archive.path)
    return _RawData(member, root, tuple(routes), child_text(root, "MeasurementStatus"))


@dataclass(frozen=True)
class _Axis:
    start: float | None
    stop: float | None
    increment: float | None


def _scan_axes(info: Element | None) -> dict[str, _Axis]:
    axes: dict[str, _Axis] = {}
    if info is None:
        return axes
    for axis in info.findall("ScanAxes/ScanAxisInfo"):
        reference = _float(child_text(axis, "Reference")) or 0.0
        start, stop = _float(child_text(axis, "Start")), _float(child_text(axis, "Stop"))
        axes[axis.get("AxisId") or axis.get("AxisName") or ""] = _Axis(
            None if start is None else start + reference,
            None if stop is None else stop + reference,
            _float(child_text(axis, "Increment")),
        )
    return axes


@dataclass(frozen=True)
class _Columns:
    two_theta: int | None
    counts: int | None
    counts_length: int
    blank_two_theta: float | None
    blank_counts: float | None


def _columns(route: Element) -> _Columns:
    """Which Datum field holds 2-theta and which the counts, from the declared views."""
    candidates: list[tuple[int, int, float | None]] = []  # (preference, column, blanking value)
    recorded: list[tuple[bool, int, int, float | None]] = []  # (not primary, column, length, blank)
    for view in route.findall("DataViews/RawDataView"):
        kind = view.get(XSI_TYPE, "")
        start = _int(view.get("Start"))
        if start is None:
            continue
        if kind.endswith("VaryingRawDataView"):
            for varying in view.findall("Varying"):
                blank = _float(child_text(varying, "BlankingValue"))
                preference = 0 if varying.get("LogicName") == "ScanAxes" else 1
                for offset, definition in enumerate(varying.findall("FieldDefinitions")):
                    axis = definition.get("AxisId") or definition.get("FieldName") or ""
                    if axis in _TWO_THETA_IDS:
                        candidates.append((preference, start + offset, blank))
        elif kind.endswith("RecordedRawDataView"):
            recording = view.find("Recording")
            blank = _float(child_text(recording, "BlankingValue"))
            primary = view.get("MeasuredDataIndex", "0") == "0"
            recorded.append((not primary, start, _int(view.get("Length")) or 1, blank))
    # The first declared 2-theta of the "ScanAxes" view, else of any varying view; the
    # primary (MeasuredDataIndex 0) counter, else the first one declared.
    counts = min(recorded, key=lambda r: r[0]) if recorded else None
    tt = min(candidates) if candidates else None
    return _Columns(
        two_theta=tt[1] if tt else None,
        counts=counts[1] if counts else None,
        counts_length=counts[2] if counts else 1,
        blank_two_theta=tt[2] if tt else None,
        blank_counts=counts[3] if counts else None,
    )


def _parse_route(route: Element, what: str, path: Path, kv: float | None, ma: float | None) -> _Route:
    info = route.find("ScanInformation")
    axes = _scan_axes(info)
    columns = _columns(route)
    if columns.counts_length > 1:
        raise UnsupportedFormat(
            f"{what} stores {columns.counts_length} detector channels per step (a stationary-detector "
            "or 2-D frame); only 1-D scans can be read",
            path,
        )
    tt_axis = next((axes[a] for a in _TWO_THETA_IDS if a in axes), None)
    scan_name = (info.get("ScanName") or info.get("VisibleName")) if info is not None else None
    axis_grid = (
        (tt_axis.start, tt_axis.increment)
        if tt_axis is not None and tt_axis.start is not None and tt_axis.increment
        else None
    )
    if columns.two_theta is None and axis_grid is None:
        scanned = ", ".join(a for a in axes if a) or "no axis"
        raise UnsupportedFormat(
            f"{what} is a {scan_name or 'non-2-theta'} scan over {scanned}: 2-theta does not vary, so it "
            "is not a powder pattern",
            path,
        )
    rows = [d.text or "" for d in route.findall("Datum")]
    table = _table(rows, what, path)
    width = table.shape[1] if table.size else 0
    counts_col = columns.counts if columns.counts is not None else width - 1
    if table.size:
        needed = max(counts_col, columns.two_theta if columns.two_theta is not None else 0)
        if needed >= width or counts_col < 0:
            raise CorruptScan(
                f"{what} declares data in field {needed + 1} but its rows have {width} fields", path
            )
    counts = table[:, counts_col] if table.size else np.empty(0)
    if columns.two_theta is not None:
        two_theta = table[:, columns.two_theta] if table.size else np.empty(0)
        source = "datum"
    elif axis_grid is not None:  # older exports: rows without positions, rebuild from the axis
        two_theta = axis_grid[0] + axis_grid[1] * np.arange(counts.size)
        source = "axis"
    keep = np.ones(counts.size, dtype=bool)
    if columns.blank_counts is not None:
        keep &= counts != columns.blank_counts
    if columns.blank_two_theta is not None and source == "datum":
        keep &= two_theta != columns.blank_two_theta
    blanked = int(counts.size - keep.sum())
    if not (np.isfinite(two_theta[keep]).all() and np.isfinite(counts[keep]).all()):
        raise CorruptScan(f"{what} contains non-numeric values (NaN or infinity)", path)
    subscans = route.findall("SubScans/SubScanInfo")
    planned_sub = [_int(s.get("Steps")) for s in subscans]
    measured_sub = [_int(s.get("MeasuredSteps")) for s in subscans]
    planned = _int(child_text(info, "MeasurementPoints"))
    if subscans and all(p is not None for p in planned_sub):
        planned = sum(p for p in planned_sub if p is not None)
    measured = len(rows)
    if subscans and all(m is not None for m in measured_sub):
        measured = min(measured, sum(m for m in measured_sub if m is not None))
    scan_range = ScanRange(
        two_theta=two_theta[keep],
        intensity=counts[keep],
        step=tt_axis.increment if tt_axis else _median_step(two_theta[keep]),
        time_per_step=_float(child_text(info, "TimePerStep")),
        scan_type=scan_name,
        kv=kv,
        ma=ma,
    )
    return _Route(scan_range, planned, measured, blanked, source, child_text(info, "ScanMode"))


def _table(rows: list[str], what: str, path: Path) -> np.ndarray:
    """The Datum rows as a 2-D float array; every row must have the same number of fields."""
    if not rows:
        return np.empty((0, 0))
    width = rows[0].count(",") + 1
    joined = ",".join(rows)
    if joined.count(",") + 1 != width * len(rows):
        for number, row in enumerate(rows, 1):
            if row.count(",") + 1 != width:
                raise CorruptScan(
                    f"{what}: data row {number} has {row.count(',') + 1} fields where the first row has "
                    f"{width}: the file is damaged",
                    path,
                )
    try:
        # One vectorised conversion instead of a Python loop over ~10^4-10^5 rows.
        return np.array(joined.split(","), dtype=np.float64).reshape(len(rows), width)
    except ValueError:
        for number, row in enumerate(rows, 1):
            for value in row.split(","):
                try:
                    float(value)
                except ValueError:
                    raise CorruptScan(
                        f"{what}: data row {number} holds {value.strip()[:40]!r}, which is not a number",
                        path,
                    ) from None
        raise CorruptScan(f"{what}: the data rows cannot be read as numbers", path) from None


def _median_step(two_theta: np.ndarray) -> float | None:
    if two_theta.size < 2:
        return None
    return float(np.median(np.abs(np.diff(two_theta))))


# --------------------------------------------------------------------------- metadata


def _generator(root: Element) -> tuple[float | None, float | None]:
    tube = _tube(root)
    generator = tube.find("Generator") if tube is not None else None
    if generator is None:
        generator = root.find(".//Generator")
    if generator is None:
        return None, None
    kv = _scaled(generator.find("Voltage"), {"kV": 1.0, "V": 1e-3})
    ma = _scaled(generator.find("Current"), {"mA": 1.0, "A": 1e3, "µA": 1e-3, "uA": 1e-3})
    return kv, ma


def _scaled(element: Element | None, units: dict[str, float]) -> float | None:
    if element is None:
        return None
    value = _float(element.get("Value"))
    factor = units.get((element.get("Unit") or "").strip(), None)
    if value is None or factor is None:
        return None
    return value * factor


def _tube(root: Element) -> Element | None:
    for tube in root.iterfind(".//Tube"):
        if tube.find("WaveLengthAlpha1") is not None or tube.find("TubeMaterial") is not None:
            return tube
    return None


def _wavelength(root: Element) -> Wavelength | None:
    tube = _tube(root)
    if tube is None:
        return None

    def positive(tag: str) -> float | None:
        value = _float(tube.find(tag).get("Value")) if tube.find(tag) is not None else None
        return value if value is not None and value > 0 else None

    material = child_text(tube, "TubeMaterial")
    anode = None
    if material:
        key = material.strip().capitalize()
        anode = key if key in ANODE_LINES else material.strip()
    alpha1, alpha2 = positive("WaveLengthAlpha1"), positive("WaveLengthAlpha2")
    average, beta = positive("WaveLengthAverage"), positive("WaveLengthBeta")
    ratio = _float(value_attr(tube, "WaveLengthRatio"))
    if alpha1 is None and alpha2 is None and average is None:
        if anode in ANODE_LINES:
            return Wavelength.for_anode(anode)
        return Wavelength(anode=anode) if anode else None
    return Wavelength(alpha1=alpha1, alpha2=alpha2, ratio=ratio, average=average, beta=beta, anode=anode)


def _info_items(root: Element) -> dict[str, str]:
    items: dict[str, str] = {}
    for item in root.iterfind(".//MethodInformation//InfoItem"):
        name, value = item.get("Name"), item.get("Value")
        if name and value and value.strip() and name not in items:
            items[name] = value.strip()
    return items


def _timestamp(text: str | None) -> _dt.datetime | None:
    if not text:
        return None
    try:
        return _dt.datetime.fromisoformat(text.strip())
    except ValueError:
        return None


def _build_scan(path: Path, sha256: str, experiments: list[_Experiment], parsed: list[_RawData]) -> Scan:
    first = parsed[0].root
    container = next((e.container for e in experiments if e.container is not None), None)
    measurement = container.find("MeasurementInfo") if container is not None else None
    instrument_el = container.find(".//InstrumentDescription") if container is not None else None
    items = _info_items(first)

    def attr(name: str) -> str | None:
        value = measurement.get(name) if measurement is not None else None
        return value.strip() if value and value.strip() else None

    version = child_text(container, "CreatingVersion")
    metadata: dict[str, str] = {}

    def put(key: str, value: object) -> None:
        if value is not None and str(value).strip():
            metadata[key] = str(value).strip()

    routes = [route for raw in parsed for route in raw.routes]
    put("measurement_status", ", ".join(sorted({raw.status for raw in parsed if raw.status})))
    put("time_stamp_started", child_text(first, "TimeStampStarted"))
    put("time_stamp_finished", child_text(parsed[-1].root, "TimeStampFinished"))
    put("sample_position", attr("SamplePosition") or items.get("SamplePosition"))
    put("comment", attr("Comment") or items.get("Comment"))
    put("method_file", attr("BsmlFileName") or items.get("BsmlFileName"))
    put("script", attr("ScriptName") or items.get("ScriptName"))
    put("site", attr("Site"))
    identifier = container.find("Identifier") if container is not None else None
    if identifier is not None:
        put("windows_user", identifier.get("UserName"))
        put("computer", identifier.get("MachineName"))
    put("instrument_model", child_text(instrument_el, "DeviceTypeDesc"))
    put("instrument_serial", child_text(instrument_el, "SerialNo"))
    put("ics_version", child_text(instrument_el, "IcsVersion"))
    if container is not None:
        put("application", child_text(container.find("ExperimentInfo"), "ApplicationType"))
    put("scan_mode", ", ".join(dict.fromkeys(r.scan_mode for r in routes if r.scan_mode)))
    put("goniometer", child_text(first.find(".//Instrument"), "GoniometerType"))
    put("raw_data_members", ", ".join(raw.member for raw in parsed))
    put("archive_folder", experiments[0].folder.rpartition("Experiment")[0].rstrip("/"))
    put("planned_steps", sum(r.planned for r in routes if r.planned is not None))
    put("measured_steps", sum(r.measured for r in routes))
    if any(r.two_theta_source == "axis" for r in routes):
        put("two_theta_source", "scan axis start/increment (the data rows carry no 2-theta)")
    blanked = sum(r.blanked for r in routes)
    if blanked:
        put("blanked_points", blanked)

    reasons = _incomplete_reasons(experiments, parsed, routes)
    put("incomplete_reason", "; ".join(reasons))
    instrument = child_text(instrument_el, "InstrumentName") or child_text(instrument_el, "DeviceTypeDesc")
    return Scan(
        ranges=tuple(r.range for r in routes),
        source_path=path,
        format=FORMAT,
        format_version=version or "unknown",
        sha256=sha256,
        wavelength=_wavelength(first),
        sample_id=attr("SampleName") or items.get("SampleName"),
        measured_at=_timestamp(child_text(first, "TimeStampStarted"))
        or _timestamp(child_text(identifier, "TimeStampCreated")),
        operator=attr("UserName") or items.get("User"),
        instrument=instrument,
        software=f"DIFFRAC.SUITE {version}" if version else "DIFFRAC.SUITE",
        complete=not reasons,
        metadata=metadata,
    )


def _incomplete_reasons(experiments: list[_Experiment], parsed: list[_RawData], routes: list[_Route]) -> list[str]:
    reasons = []
    for raw in parsed:
        if raw.status and raw.status.lower() != "measured":
            reasons.append(f"{raw.member} says the measurement is {raw.status}")
    for number, route in enumerate(routes, 1):
        if route.planned is not None and route.measured < route.planned:
            reasons.append(f"range {number} has {route.measured} of {route.planned} planned steps")
    for exp in experiments:
        if exp.expected is not None and len(exp.members) < exp.expected:
            reasons.append(f"{exp.folder} expects {exp.expected} raw data sets but lists {len(exp.members)}")
    return reasons


def _float(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        value = float(text.strip())
    except ValueError:
        return None
    return value if np.isfinite(value) else None


def _int(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        return int(text.strip())
    except ValueError:
        return None
