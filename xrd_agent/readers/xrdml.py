"""PANalytical XRDML (XML) through xylib, with the radiation read from the XML itself.

xylib takes the counts and the 2-theta axis but ignores ``usedWavelength`` (a
"todo" in its xrdml.cpp), so the metadata comes from a standard-library parse. That
parse runs first (``_xml.parse_xml``: no DTDs, no entities, well-formed UTF-8), so
xylib only ever sees a sound XML document.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

from xrd_agent.errors import CorruptScan, ScanError, UnsupportedFormat
from xrd_agent.readers import _common as c
from xrd_agent.readers import _xylib
from xrd_agent.readers._xml import parse_xml
from xrd_agent.scan import Scan, ScanRange

FORMAT = "xrdml"
EXTENSIONS = (".xrdml",)
LABEL = "XRDML"
_NAMESPACE_VERSION = re.compile(rb"www\.xrdml\.com/XRDMeasurement/([0-9.]+)")


def sniff(head: bytes) -> bool:
    return b"www.xrdml.com" in head or b"<xrdMeasurements" in head


def is_complete(path: Path) -> bool:
    """The XML is whole and every scan in it says status="Completed"."""
    try:
        return read(path, c.read_bytes(path), "").complete
    except (ScanError, OSError):
        return False


def _find(node: ET.Element | None, path: str) -> ET.Element | None:
    return None if node is None else node.find(path)


def _text(node: ET.Element | None, path: str) -> str | None:
    found = _find(node, path)
    return c.text_or_none(found.text) if found is not None else None


def read(path: Path, data: bytes, sha256: str) -> Scan:
    root = parse_xml(data, "the XRDML file")
    parsed = _xylib.load(data, FORMAT, LABEL)
    if not parsed.blocks:
        raise CorruptScan("the XRDML file holds no scan with data points")
    measurement = root.find("{*}xrdMeasurement")
    scans = root.findall("{*}xrdMeasurement/{*}scan")
    if len(scans) != len(parsed.blocks):
        scans = [None] * len(parsed.blocks)  # type: ignore[list-item]
    tube = _find(measurement, "{*}incidentBeamPath/{*}xRayTube")
    kv, ma = c.positive_or_none(_text(tube, "{*}tension")), c.positive_or_none(_text(tube, "{*}current"))
    ranges = []
    for number, (block, scan) in enumerate(zip(parsed.blocks, scans, strict=True), 1):
        if "2theta" not in block.x_name.lower():
            raise UnsupportedFormat(
                f"XRDML scan {number} steps the {block.x_name or 'unnamed'} axis, not 2Theta; "
                "only 2-theta scans can be identified"
            )
        ranges.append(
            ScanRange(
                two_theta=block.x,
                intensity=block.y,
                step=c.finite_or_none(block.x_step) if block.x_step is not None else c.step_of(block.x),
                time_per_step=c.positive_or_none(_text(scan, "{*}dataPoints/{*}commonCountingTime")),
                scan_type=c.text_or_none(scan.get("scanAxis")) if scan is not None else None,
                kv=kv,
                ma=ma,
            )
        )
    used = _find(measurement, "{*}usedWavelength")
    wavelength = c.make_wavelength(
        alpha1=_text(used, "{*}kAlpha1"),
        alpha2=_text(used, "{*}kAlpha2"),
        ratio=_text(used, "{*}ratioKAlpha2KAlpha1"),
        beta=_text(used, "{*}kBeta"),
        anode=_text(tube, "{*}anodeMaterial"),
    )
    statuses = [s.get("status") for s in scans if s is not None]
    header = _find(scans[0], "{*}header")
    app = _find(header, "{*}source/{*}applicationSoftware")
    software = None
    if app is not None and c.text_or_none(app.text):
        software = " ".join(filter(None, [c.text_or_none(app.text), app.get("version")]))
    version = _NAMESPACE_VERSION.search(data[:4096])
    metadata = {"status": ", ".join(s for s in statuses if s)} if any(statuses) else {}
    return Scan(
        ranges=tuple(ranges),
        source_path=path,
        format=FORMAT,
        format_version=version.group(1).decode("ascii") if version else "",
        sha256=sha256,
        wavelength=wavelength,
        sample_id=_text(root, "{*}sample/{*}id") or _text(root, "{*}sample/{*}name"),
        operator=_text(header, "{*}author/{*}name"),
        instrument=_text(header, "{*}source/{*}instrumentControlSoftware"),
        software=software,
        measured_at=c.parse_datetime(_text(header, "{*}startTimeStamp")),
        complete=all(s in (None, "Completed") for s in statuses),
        metadata=metadata,
    )
