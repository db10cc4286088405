"""Writers of real instrument formats (RAW4.00, BRML, .xy) for the simulated D8.

They write what DIFFRAC.SUITE writes, to the layout in the field notes and the real
fixtures (``TwoTheta_scan_scrambled.raw``, the BAM BRML files), so the project's own
readers read them like instrument files. Only the fields the readers and chemists use
are filled; the rest are zero, as in a minimal real export.
"""

from __future__ import annotations

import datetime as _dt
import io
import struct
import zipfile
from dataclasses import dataclass
from xml.sax.saxutils import quoteattr

import numpy as np

from xrd_agent.scan import ANODE_LINES

# -- RAW4.00 ---------------------------------------------------------------------------------
#: (offset, struct format) of every field written, per block. Offsets are from the block start.
RAW4_PREAMBLE = {"magic": (0, "8s"), "date": (12, "12s"), "time": (24, "12s")}
RAW4_PREAMBLE_SIZE = 61
#: Bytes 36..61 of the preamble as DIFFRAC.EVA writes them (fixture TwoTheta_scan_scrambled.raw).
RAW4_PREAMBLE_TAIL = bytes.fromhex("010000000100000001000000000000000000000082010000" "00")
RAW4_TEXT = {"type": (0, "<I"), "length": (4, "<I"), "name": (12, "24s")}  # value from +36
RAW4_TEXT_VALUE = 36
RAW4_HARDWARE = {
    "type": (0, "<I"), "length": (4, "<I"), "average": (72, "<d"), "alpha1": (80, "<d"),
    "alpha2": (88, "<d"), "beta": (96, "<d"), "ratio": (104, "<d"), "anode": (116, "4s"),
}
RAW4_HARDWARE_SIZE = 136
RAW4_RANGE = {
    "type": (0, "<I"), "steps_again": (4, "<I"), "scan_type": (32, "24s"), "start": (72, "<d"),
    "step": (80, "<d"), "steps": (88, "<I"), "time_per_step": (92, "<f"), "kv": (100, "<f"),
    "ma": (104, "<f"), "wavelength": (112, "<d"), "record_size": (136, "<I"), "extra_size": (140, "<I"),
}
RAW4_RANGE_SIZE = 160
RAW4_RECORD = "<fi"  # float32 intensity, int32 1: the 8-byte records of the real fixture


def _put(buf: bytearray, table: dict[str, tuple[int, str]], **values: object) -> None:
    for name, value in values.items():
        offset, fmt = table[name]
        struct.pack_into(fmt, buf, offset, value)


def _raw4_text(name: str, value: str) -> bytes:
    data = value.encode("latin-1", "replace")  # not terminated, as in the real fixture
    buf = bytearray(RAW4_TEXT_VALUE + len(data))
    _put(buf, RAW4_TEXT, type=10, length=len(buf), name=name.encode()[:23])
    buf[RAW4_TEXT_VALUE:] = data
    return bytes(buf)


@dataclass(frozen=True)
class Measurement:
    """What the simulated instrument measured: an even 2-theta axis and counts."""

    start: float
    step: float
    counts: np.ndarray
    sample_id: str
    anode: str = "Cu"
    time_per_step: float = 0.5
    kv: float = 40.0
    ma: float = 40.0
    scan_type: str = "Locked Coupled"
    operator: str = "xrd-agent demo"
    measured_at: _dt.datetime | None = None

    @property
    def two_theta(self) -> np.ndarray:
        return self.start + self.step * np.arange(self.counts.size)

    @property
    def stop(self) -> float:
        return self.start + self.step * (self.counts.size - 1)


def raw4_bytes(m: Measurement) -> bytes:
    """A Bruker RAW4.00 file: preamble, text variables, hardware block, one range."""
    when = m.measured_at or _dt.datetime.now()
    pre = bytearray(RAW4_PREAMBLE_SIZE)
    _put(pre, RAW4_PREAMBLE, magic=b"RAW4.00\0", date=when.strftime("%m/%d/%Y").encode(),
         time=when.strftime("%H:%M:%S").encode())
    struct.pack_into("<H", pre, 8, 0xFFEF)
    pre[36:61] = RAW4_PREAMBLE_TAIL
    a1, a2 = ANODE_LINES[m.anode]
    hw = bytearray(RAW4_HARDWARE_SIZE)
    _put(hw, RAW4_HARDWARE, type=30, length=RAW4_HARDWARE_SIZE, average=(2 * a1 + a2) / 3, alpha1=a1,
         alpha2=a2, beta=0.0, ratio=0.5, anode=m.anode.encode())
    steps = int(m.counts.size)
    rng = bytearray(RAW4_RANGE_SIZE)
    _put(rng, RAW4_RANGE, type=0, steps_again=steps, scan_type=m.scan_type.encode()[:23], start=m.start,
         step=m.step, steps=steps, time_per_step=m.time_per_step, kv=m.kv, ma=m.ma, wavelength=a1,
         record_size=struct.calcsize(RAW4_RECORD), extra_size=0)
    records = np.zeros(steps, dtype=[("i", "<f4"), ("one", "<i4")])
    records["i"], records["one"] = m.counts, 1
    texts = b"".join(_raw4_text(k, v) for k, v in (("USER", m.operator), ("SITE", "xrd-agent"),
                                                    ("SAMPLEID", m.sample_id), ("COMMENT", "simulated D8"),
                                                    ("CREATOR", "xrd-agent simulated D8")))
    return bytes(pre) + texts + bytes(hw) + bytes(rng) + records.tobytes()


# -- BRML ------------------------------------------------------------------------------------
_XSI = 'xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"'


def _data_container(m: Measurement, created: str) -> str:
    return f"""<?xml version="1.0"?>
<DataContainer {_XSI} RawDataLength="1">
  <CreatingVersion>8.6.4.0</CreatingVersion>
  <Identifier IdentificationType="RawData" UserName="demo" MachineName="simulated-d8">
    <TimeStampCreated>{created}</TimeStampCreated>
  </Identifier>
  <RawDataExpected>1</RawDataExpected>
  <RawDataReferenceList>
    <string>Experiment0/RawData0.xml</string>
  </RawDataReferenceList>
  <MeasurementInfo UserName={quoteattr(m.operator)} Site="" Comment="simulated D8" SampleName={quoteattr(m.sample_id)} ScriptName="" SamplePosition="1A01" />
</DataContainer>
"""


def _raw_data(m: Measurement, started: str, finished: str) -> str:
    a1, a2 = ANODE_LINES[m.anode]
    n = int(m.counts.size)
    rows = "\n".join(
        f"      <Datum>{m.time_per_step:g},1,{t:.4f},{c:.0f}</Datum>" for t, c in zip(m.two_theta, m.counts)
    )
    return f"""<?xml version="1.0"?>
<RawData {_XSI} PlannedTimePerStep="{m.time_per_step:g}">
  <MeasurementStatus>Measured</MeasurementStatus>
  <TimeStampStarted>{started}</TimeStampStarted>
  <TimeStampFinished>{finished}</TimeStampFinished>
  <DataRoutes>
    <DataRoute RouteFlag="Measured" ProcLevel="0" ProcLevelPre="0" Description="Originally measured data.">
      <ScanInformation ScanName="Coupled TwoTheta/Theta" VisibleName="Coupled TwoTheta/Theta">
        <MeasurementPoints>{n}</MeasurementPoints>
        <TimePerStep>{m.time_per_step:g}</TimePerStep>
        <ScanMode>ContinuousScan</ScanMode>
        <ScanAxes>
          <ScanAxisInfo AxisId="TwoTheta" AxisName="TwoTheta" VisibleName="2Theta" Unit="°">
            <Reference>0</Reference>
            <Start>{m.start:.6f}</Start>
            <Stop>{m.stop:.6f}</Stop>
            <Increment>{m.step:.6f}</Increment>
          </ScanAxisInfo>
          <ScanAxisInfo AxisId="Theta" AxisName="Theta" VisibleName="Theta" Unit="°">
            <Reference>0</Reference>
            <Start>{m.start / 2:.6f}</Start>
            <Stop>{m.stop / 2:.6f}</Stop>
            <Increment>{m.step / 2:.6f}</Increment>
          </ScanAxisInfo>
        </ScanAxes>
      </ScanInformation>
      <SubScans>
        <SubScanInfo Steps="{n}" MeasuredSteps="{n}" ViewSteps="{n}" StartStepNo="0" PlannedTimePerStep="{m.time_per_step:g}" />
      </SubScans>
{rows}
      <DataViews>
        <RawDataView xsi:type="FixedRawDataView" Start="0" Length="1" LogicName="MeasuredTime" Unit="s" />
        <RawDataView xsi:type="FixedRawDataView" Start="1" Length="1" LogicName="AbsorptionFactor" Unit="" />
        <RawDataView xsi:type="VaryingRawDataView" Start="2" Length="1">
          <Varying xsi:type="VaryingStepData2D" LogicName="ScanAxes" VectorLength="1">
            <FieldDefinitions FieldName="TwoTheta" AxisId="TwoTheta" />
          </Varying>
        </RawDataView>
        <RawDataView xsi:type="RecordedRawDataView" Start="3" Length="1" MeasuredDataIndex="0">
          <Recording VisibleName="LYNXEYE: PSD counter" LogicName="ScanCounter" Category="Count" />
        </RawDataView>
      </DataViews>
    </DataRoute>
  </DataRoutes>
  <FixedInformation>
    <Instrument xsi:type="GoniometerInfo">
      <PrimaryTracks>
        <TrackInfoData LogicName="PrimaryTrack" VisibleName="PrimaryTrack">
          <MountedOptics>
            <InfoData xsi:type="TubeMountInfoData" baseType="OpticInfoData" LogicName="TubeMount" VisibleName="TubeMount">
              <Tube LogicName="Tube{m.anode}" VisibleName="Tube">
                <WaveLengthAlpha1 Unit="Å" Value="{a1}" />
                <WaveLengthAlpha2 Unit="Å" Value="{a2}" />
                <WaveLengthAverage Unit="Å" Value="{(2 * a1 + a2) / 3:.5f}" />
                <WaveLengthRatio Unit="" Value="0.5" />
                <TubeMaterial>{m.anode}</TubeMaterial>
                <Generator LogicName="Tube{m.anode}" VisibleName="Generator">
                  <Voltage Unit="kV" Value="{m.kv:g}" />
                  <Current Unit="mA" Value="{m.ma:g}" />
                </Generator>
              </Tube>
            </InfoData>
          </MountedOptics>
        </TrackInfoData>
      </PrimaryTracks>
    </Instrument>
  </FixedInformation>
</RawData>
"""


def brml_bytes(m: Measurement, folder_prefix: str | None = None) -> bytes:
    """A BRML archive (zip of XML), entries under ``<folder_prefix>/`` like the D8 ADVANCE fixtures."""
    when = (m.measured_at or _dt.datetime.now(_dt.timezone.utc)).astimezone()
    started = when.isoformat()
    finished = (when + _dt.timedelta(seconds=m.time_per_step * m.counts.size)).isoformat()
    prefix = f"{folder_prefix}/" if folder_prefix else ""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(f"{prefix}experimentCollection.xml",
                   '<?xml version="1.0"?>\n<ExperimentCollection><Experiment>Experiment0</Experiment></ExperimentCollection>\n')
        z.writestr(f"{prefix}Experiment0/DataContainer.xml", _data_container(m, started))
        z.writestr(f"{prefix}Experiment0/RawData0.xml", _raw_data(m, started, finished))
    return out.getvalue()


# -- plain text ------------------------------------------------------------------------------
def xy_bytes(m: Measurement) -> bytes:
    """Two columns, 2-theta and counts, with a comment header (no wavelength: the config's applies)."""
    head = f"# sample: {m.sample_id}\n# simulated D8, {m.anode} K-alpha, 2theta counts\n"
    body = "\n".join(f"{t:.4f} {c:.0f}" for t, c in zip(m.two_theta, m.counts))
    return (head + body + "\n").encode()


WRITERS = {".raw": raw4_bytes, ".brml": brml_bytes, ".xy": xy_bytes}
