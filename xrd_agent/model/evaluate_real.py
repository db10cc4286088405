"""Scoring on measured scans (``xrd-agent evaluate --real DIR --labels FILE``).

Simulations are not the judge; measured scans are. A labels file (TOML) says, per scan
file under DIR, which library material it holds, or that the library does not hold it::

    [scans."mof/ZIF-67_XRED.csv"]
    material = "ZIF-67"          # a name the library resolves to exactly one material
    wavelength = "Cu"            # for files that do not say (.csv)
    elements = ["Co", "C", "H", "N"]
    note = "..."

    [scans."mof/Zn2-(TBAPy)_AsMade.xy"]
    material = "none"            # not in the library: the right answer is unknown_phase

Every scan is identified twice, without and with its labelled elements (``expect
--elements``). Scored per scan: material Top-1 / Top-5, flags, and **confident wrong
names** (no unknown_phase/amorphous flag, confidence at or above the unknown threshold, and
the Top-1 is not the labelled material: what a robot would act on wrongly). For "none"
scans, the Top-1's metals are also checked against the elements (a Zn synthesis named as a
Cu MOF); for scans whose Top-1 is right, whether a robot that expected that material would
still get a critical alert (it must not).
"""

from __future__ import annotations

import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xrd_agent.errors import ConfigError, ScanError
from xrd_agent.identification import Flag

NONE = "none"  # the label of a scan whose material the library does not hold


@dataclass(frozen=True)
class Label:
    file: str  # relative to the scans folder
    material: str  # a library name, or NONE
    wavelength: str | None = None
    elements: tuple[str, ...] = ()
    note: str = ""


def load_labels(path: str | Path) -> list[Label]:
    """Labels from a TOML file (``[scans."relative/path"]`` tables); raises ConfigError."""
    try:
        table = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"labels {path}: {exc}") from None
    scans = table.get("scans")
    if not isinstance(scans, dict) or not scans:
        raise ConfigError(f"labels {path}: no [scans.\"FILE\"] tables")
    out = []
    for file, row in scans.items():
        unknown = set(row) - {"material", "wavelength", "elements", "note"}
        if unknown or not isinstance(row.get("material"), str):
            raise ConfigError(f"labels {path}: {file}: needs material (a library name or \"none\")"
                              + (f"; unknown keys {sorted(unknown)}" if unknown else ""))
        out.append(Label(file, row["material"], row.get("wavelength"), tuple(row.get("elements", ())),
                         str(row.get("note", ""))))
    return out


def evaluate_real(engine: Any, directory: str | Path, labels: Sequence[Label]) -> dict[str, Any]:
    """Identify every labelled scan (without and with its elements) and score it."""
    from xrd_agent.readers import parse_wavelength, read_scan

    materials = engine.library_.materials
    threshold = float(engine.policy.unknown_threshold)
    rows: list[dict[str, Any]] = []
    for label in labels:
        row: dict[str, Any] = {"file": label.file, "label": label.material, "elements": list(label.elements),
                               "note": label.note}
        want = None
        if label.material.lower() != NONE:
            res = materials.resolve(label.material)
            if res.material is None:
                raise ConfigError(f"labels: {label.file}: {res.problem()}")
            want = res.material
        try:
            wl = parse_wavelength(label.wavelength) if label.wavelength else None
            scan = read_scan(Path(directory) / label.file, wavelength=wl)
        except ScanError as exc:
            rows.append({**row, "error": exc.reason})
            continue
        for mode, elements in (("plain", None), ("told", label.elements or None)):
            try:
                result = engine.identify(scan, elements=elements)
            except ScanError as exc:
                row[mode] = {"error": exc.reason}
                continue
            row[mode] = _score(result, want, label.elements, materials, threshold)
        rows.append(row)
    return {"threshold": threshold, "rows": rows, "summary": _summary(rows),
            "model_version": engine.manifest_.version, "library_version": engine.library_.version,
            "verify": bool(getattr(engine, "verify", False))}


def _score(result: Any, want: Any, elements: Sequence[str], materials: Any, threshold: float) -> dict[str, Any]:
    top = result.top
    ids = [c.material or _material_id(materials, c.refcode) for c in top]
    flags = sorted(f.value for f in result.flags)
    unsure = bool(result.flags & {Flag.UNKNOWN_PHASE, Flag.AMORPHOUS})
    top1_right = want is not None and bool(ids) and ids[0] == want.id
    first = materials.by_id(ids[0]) if ids else None
    foreign_metals = sorted(set(first.metals) - set(elements)) if first is not None and elements else []
    return {
        "top": [c.name for c in top],
        "confidence": round(float(result.confidence), 4),
        "flags": flags,
        "top1": top1_right,
        "top5": want is not None and want.id in ids[:5],
        "rank": ids.index(want.id) + 1 if want is not None and want.id in ids else None,
        "right": top1_right and not unsure if want is not None else unsure,
        "confident_wrong": (not unsure and float(result.confidence) >= threshold and not top1_right),
        "foreign_metal_top1": foreign_metals,
        "critical_when_right": critical_when_right(result, want, materials) if want is not None else [],
    }


def critical_when_right(result: Any, material: Any, materials: Any) -> list[str]:
    """Issue 12's target "no correct Top-1 answer raises a critical alert": the critical alerts
    the service raises for ``result`` (:func:`xrd_agent.decide.alerts`, as the pipeline calls it)
    when the robot expected ``material`` and the first answer is that material. Empty when the
    first answer is another material: a critical alert is then what the robot should get."""
    from xrd_agent import decide

    top = getattr(result, "top", ())
    if not top or (top[0].material or _material_id(materials, top[0].refcode)) != material.id:
        return []
    expected = decide.Expectation("evaluate", (material.id,), source="evaluate")
    return [a.reason for a in decide.alerts(result, expected, materials=materials) if a.severity == "critical"]


def _material_id(materials: Any, refcode: str) -> str:
    """The material of a class-level candidate (an engine that ranks classes, e.g. cosine)."""
    found = materials.resolve(refcode).material
    return found.id if found is not None else refcode


def _summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for mode in ("plain", "told"):
        scored = [r for r in rows if isinstance(r.get(mode), dict) and "error" not in r[mode]]
        known = [r for r in scored if r["label"].lower() != NONE]
        none = [r for r in scored if r["label"].lower() == NONE]
        out[mode] = {
            "scans": len(scored),
            "in_library": len(known),
            "top1": sum(r[mode]["top1"] for r in known),
            "top5": sum(r[mode]["top5"] for r in known),
            "critical_when_right": sum(bool(r[mode].get("critical_when_right")) for r in known),
            "not_in_library": len(none),
            "unknown_flagged": sum(r[mode]["right"] for r in none),
            "confident_wrong": sum(r[mode]["confident_wrong"] for r in scored),
            "foreign_metal_top1": sum(bool(r[mode]["foreign_metal_top1"]) for r in none),
            "foreign_metal_top1_unflagged": sum(bool(r[mode]["foreign_metal_top1"]) and not r[mode]["right"]
                                                for r in none),
        }
    out["errors"] = sum(1 for r in rows if "error" in r)
    return out


def markdown_real(results: dict[str, Any], command: str = "") -> str:
    """The per-scan table and the summary, for docs/model.md."""
    lines = []
    if command:
        lines += [f"Command: `{command}`", ""]
    check = "physics check on" if results.get("verify") else "network and peak match alone (no physics check)"
    lines += [f"Model {results['model_version']}, library {results['library_version']}, {check}; confident = no "
              f"unknown_phase/amorphous flag and confidence >= {results['threshold']:.2f}.", "",
              "| scan | label | Top-1 (confidence) | flags | Top-1 with elements (confidence) | flags |",
              "| --- | --- | --- | --- | --- | --- |"]
    for r in results["rows"]:
        if "error" in r:
            lines.append(f"| {r['file']} | {r['label']} | not read: {r['error']} | | | |")
            continue
        cells = []
        for mode in ("plain", "told"):
            s = r.get(mode, {})
            if "error" in s:
                cells += [f"error: {s['error']}", ""]
                continue
            mark = " ✓" if s["right"] else (" ✗ confident wrong" if s["confident_wrong"] else "")
            rank = f", label at {s['rank']}" if s.get("rank") and s["rank"] > 1 else ""
            cells += [f"{s['top'][0] if s['top'] else '-'} ({s['confidence']:.2f}){rank}{mark}",
                      ", ".join(s["flags"]) or "none"]
        label = r["label"] + (f" [{','.join(r['elements'])}]" if r["elements"] else "")
        lines.append(f"| {r['file']} | {label} | " + " | ".join(cells) + " |")
    lines += ["", "| summary | without elements | with the labelled elements |", "| --- | ---: | ---: |"]
    p, e = results["summary"]["plain"], results["summary"]["told"]
    for key, what in (("top1", "in-library scans: material Top-1"), ("top5", "in-library scans: material Top-5"),
                      ("critical_when_right", "... right first and a critical alert with it expected"),
                      ("unknown_flagged", "not-in-library scans flagged unknown_phase/amorphous"),
                      ("confident_wrong", "confident wrong names (all scans)"),
                      ("foreign_metal_top1", "not-in-library scans whose Top-1 has a metal outside the "
                                             "labelled elements"),
                      ("foreign_metal_top1_unflagged", "... of them unflagged (named as that material)")):
        of = {"top1": "in_library", "top5": "in_library", "critical_when_right": "top1",
              "unknown_flagged": "not_in_library",
              "foreign_metal_top1_unflagged": "not_in_library", "foreign_metal_top1": "not_in_library",
              "confident_wrong": "scans"}[key]
        lines.append(f"| {what} | {p[key]} / {p[of]} | {e[key]} / {e[of]} |")
    return "\n".join(lines) + "\n"
