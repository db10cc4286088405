"""Safe XML parsing for readers of XML-based scan formats (BRML, XRDML).

Instrument files never need a DTD, so any ``<!DOCTYPE`` or ``<!ENTITY`` is refused
before the parser sees the document: that closes billion-laughs expansion and
external-entity tricks without a new dependency (defusedxml does the same by
patching expat handlers; the standard library's C ``XMLParser`` does not expose them,
hence this pre-check). Text must be UTF-8 (or UTF-16 with a byte-order mark), as
DIFFRAC.SUITE and Data Collector write it.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

from xrd_agent.errors import CorruptScan, UnsafeScan

#: XML keywords are case-sensitive, but a case-insensitive check costs nothing and
#: also refuses the mis-cased variants some parsers tolerate.
_DECLARATION = re.compile(r"<!\s*(DOCTYPE|ENTITY)", re.IGNORECASE)
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")


def decode_xml_text(data: bytes, what: str, path: Path | None = None) -> str:
    """Bytes of one XML document to text; :class:`CorruptScan` if it is not UTF-8/UTF-16."""
    try:
        if data.startswith(_UTF16_BOMS):
            return data.decode("utf-16")
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise CorruptScan(
            f"{what} is not valid UTF-8 text (bad byte at position {exc.start}): the file is damaged",
            path,
        ) from None


def parse_xml(data: bytes, what: str, path: Path | None = None) -> ET.Element:
    """Parse one XML document held in memory and return its root element.

    ``what`` names the document in error messages (e.g. ``"Experiment0/RawData0.xml"``).
    Raises :class:`UnsafeScan` for DTD/entity declarations and :class:`CorruptScan`
    for undecodable or malformed text.
    """
    text = decode_xml_text(data, what, path)
    match = _DECLARATION.search(text)
    if match:
        raise UnsafeScan(
            f"{what} declares a {match.group(1).upper()}; instrument files never do, and such "
            "declarations are used to attack XML readers, so the file was not read",
            path,
        )
    if not text.strip():
        raise CorruptScan(f"{what} is empty", path)
    try:
        # A str goes to expat as UTF-8 and the document's encoding declaration is
        # ignored, which is what we want after decoding above.
        return ET.fromstring(text)
    except ET.ParseError as exc:
        line, column = exc.position
        raise CorruptScan(
            f"{what} is not well-formed XML (line {line}, column {column}): the file is damaged "
            "or was cut off while being written",
            path,
        ) from None


XSI_TYPE = "{http://www.w3.org/2001/XMLSchema-instance}type"


def child_text(element: ET.Element | None, tag: str) -> str | None:
    """Stripped text of the first child ``tag``; None when absent or empty."""
    if element is None:
        return None
    child = element.find(tag)
    if child is None or child.text is None:
        return None
    text = child.text.strip()
    return text or None


def value_attr(element: ET.Element | None, tag: str) -> str | None:
    """``@Value`` of the first descendant ``tag`` (Bruker writes ``<X Unit=".." Value=".."/>``)."""
    if element is None:
        return None
    child = element.find(f".//{tag}")
    if child is None:
        return None
    value = child.get("Value")
    return value.strip() if value and value.strip() else None
