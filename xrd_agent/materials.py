"""Answers are materials: the library's classes grouped by the material they determine.

The library holds several determinations of one material (HKUST-1 five times, ZIF-8 four
times, named and unnamed). The network splits its belief among them, so a Top-5 of classes
can be five HKUST-1 determinations with 0.3 each. Here the classes are grouped once per
library, and everything that names an answer (Top-k, expectations, alerts, scoring) works
on materials: a material's probability is the sum over its determinations.

Two classes are one material when

* **the structures say so** -- the held-out split's rule
  (:data:`xrd_agent.library.build.SAME_PHASE_RULE`, :func:`xrd_agent.library.cif.same_phase`:
  Niggli-reduced primitive cells with volumes and sorted lengths within 5 %) applied across
  the whole library, restricted to classes of the same chemistry: the same elements, in the
  same ratios apart from hydrogen and oxygen. CoRE drops or keeps hydrogens inconsistently,
  and oxygen is where determinations of one framework differ: coordinated water, oxo against
  hydroxo bridges, and disordered oxygen sites kept at full occupancy (two UiO-66
  determinations list O32 per Zr3 where RUBTAK02 lists O16; their powder patterns have a
  cosine of 0.994), or
* **the names table says so** -- classes that share a common name or an alias (its breathing
  forms keep MIL-53(Al) one material although their cells differ by tens of per cent).

The Niggli cells come from ``niggli.json`` beside the library (``xrd-agent library niggli``);
a library without it is grouped by the names alone. Pure functions over the library's
entries, no I/O besides what :class:`~xrd_agent.library.artifact.Library` already read.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from functools import reduce
from math import gcd
from typing import Any

import numpy as np

#: Relative tolerance of the structural rule (the held-out split's, library.cif.same_phase).
CELL_TOLERANCE = 0.05
#: One element and its count in a Hill formula ("C6 H2 Cu O4").
_FORMULA_TOKEN = re.compile(r"([A-Z][a-z]?)(\d*\.?\d*)")
#: How many suggestions a refused name gets.
SUGGESTIONS = 5


@dataclass(frozen=True)
class Material:
    """One material of the library: its determinations (classes) and what it is made of."""

    id: str  # the refcode of its first class (stable while the class order is)
    name: str  # common name where the names table gives one, else ``id``
    indices: tuple[int, ...]  # class indices of its determinations, ascending
    refcodes: tuple[str, ...]  # the same, as refcodes
    elements: tuple[str, ...]  # every element of its formulas, sorted
    metals: tuple[str, ...]  # the metals among them, sorted
    names: tuple[str, ...]  # every name it answers to: names, aliases, refcodes

    @property
    def named(self) -> bool:
        return self.name != self.id

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "refcodes": list(self.refcodes),
                "elements": list(self.elements), "metals": list(self.metals)}


@dataclass(frozen=True)
class Resolution:
    """What a name given by a person (``expect``) refers to in the library."""

    query: str
    matches: tuple[Material, ...]  # every material the name could mean
    suggestions: tuple[str, ...] = ()  # close library names when it means none

    @property
    def material(self) -> Material | None:
        return self.matches[0] if len(self.matches) == 1 else None

    def problem(self) -> str | None:
        """None when the name means exactly one material, else one sentence saying why not."""
        if len(self.matches) == 1:
            return None
        if self.matches:
            names = ", ".join(m.name for m in self.matches[:8])
            return (f"{self.query!r} is ambiguous: it matches {len(self.matches)} library materials "
                    f"({names}); name one of them")
        hint = f"; closest library names: {', '.join(self.suggestions)}" if self.suggestions else ""
        return f"{self.query!r} is not a material of the library{hint}"


@dataclass(frozen=True)
class RankedMaterial:
    """One line of a material Top-k."""

    material: Material
    probability: float  # summed over its determinations
    best: int  # class index of the determination that represents it (best evidence)
    determinations: tuple[tuple[int, float], ...]  # (class index, probability), most probable first


class Materials:
    """The library's classes grouped into materials (build once per library with :func:`group`)."""

    def __init__(self, materials: Sequence[Material], of_class: np.ndarray, rule: str):
        self.materials = tuple(materials)
        self.of_class = np.asarray(of_class, np.int64)  # class index -> material index
        self.rule = rule
        self._by_name: dict[str, list[int]] = {}
        for m, mat in enumerate(self.materials):
            for n in mat.names:
                key = _key(n)
                if m not in self._by_name.setdefault(key, []):
                    self._by_name[key].append(m)
        self._by_id = {mat.id: m for m, mat in enumerate(self.materials)}

    def __len__(self) -> int:
        return len(self.materials)

    def __getitem__(self, m: int) -> Material:
        return self.materials[m]

    def of(self, class_index: int) -> Material:
        return self.materials[int(self.of_class[class_index])]

    def by_id(self, material_id: str) -> Material | None:
        m = self._by_id.get(material_id)
        return self.materials[m] if m is not None else None

    def index(self, material: Material) -> int:
        """Position of ``material`` (the column of :meth:`summed` and :meth:`element_weights`)."""
        return self._by_id[material.id]

    def summed(self, probs: np.ndarray) -> np.ndarray:
        """Class probabilities (classes,) or (n, classes) -> material probabilities."""
        p = np.asarray(probs, np.float64)
        if p.ndim == 1:
            return np.bincount(self.of_class, weights=p, minlength=len(self))
        out = np.zeros((p.shape[0], len(self)))
        np.add.at(out.T, self.of_class, p.T)
        return out

    def resolve(self, name: str) -> Resolution:
        """The materials a name, alias or refcode means. A name that is the exact name of one
        material wins over looser matches (``MOF-74(Zn)``); a name that is only a prefix of
        several (``MOF-74``) is ambiguous; an unknown one gets the closest names."""
        key = _key(name)
        exact = self._by_name.get(key)
        if exact:
            return Resolution(name, tuple(self.materials[m] for m in exact))
        # A family name: MOF-74 -> MOF-74(Zn), MOF-74(Co), ...; MIL-53 -> MIL-53(Al), ...
        family = sorted({m for n, ms in self._by_name.items() for m in ms
                         if n.startswith(key) and n[len(key):len(key) + 1] in ("(", " ", "-")})
        if family:
            return Resolution(name, tuple(self.materials[m] for m in family))
        named = sorted({n for mat in self.materials if mat.named for n in (mat.name, *mat.names)
                        if not _looks_like_refcode(n)})
        close = difflib.get_close_matches(name, named, n=SUGGESTIONS, cutoff=0.5)
        if not close:  # case differences: match on the keys, report the library's spelling
            keyed = {_key(n): n for n in named}
            close = [keyed[k] for k in difflib.get_close_matches(key, list(keyed), n=SUGGESTIONS, cutoff=0.5)]
        return Resolution(name, (), tuple(dict.fromkeys(close)))

    def rank(self, probs: np.ndarray, k: int, *, evidence: dict[int, float] | None = None,
             power: float = 0.0, weights: np.ndarray | None = None) -> list[RankedMaterial]:
        """The Top-k materials of one class-probability vector.

        ``evidence`` (class index -> peak-match score in 0..1) reorders: a material's key is
        its summed probability x (its best determination's score)**power, over the materials
        whose determinations have evidence; the rest follow by summed probability.
        ``weights`` (per material) multiply the summed probabilities first (elements). They are
        NOT renormalised: when the network put its belief on materials the elements rule out,
        that is evidence the scan is none of the library's materials, and the lower
        probability (hence confidence) says so. Measured on the real Zn-TBAPy scans
        (docs/model.md): renormalising turned two unknown scans into confident wrong names.
        """
        p = np.asarray(probs, np.float64)
        summed = self.summed(p)
        if weights is not None:
            summed = summed * weights
        order = list(np.argsort(-summed, kind="stable"))
        if evidence:
            scored: dict[int, float] = {}
            for j, s in evidence.items():
                m = int(self.of_class[j])
                scored[m] = max(scored.get(m, 0.0), float(s))
            head = sorted(scored, key=lambda m: (-summed[m] * scored[m] ** power, order.index(m)))
            order = head + [m for m in order if m not in scored]
        if weights is not None:  # a material the elements contradict never ranks above one they allow
            order = [m for m in order if weights[m] >= 1.0] + [m for m in order if 0 < weights[m] < 1.0]
        out = []
        for m in order[:k]:
            mat = self.materials[m]
            dets = sorted(((i, float(p[i])) for i in mat.indices), key=lambda t: -t[1])
            if evidence:
                with_ev = [i for i in mat.indices if i in evidence]
                best = max(with_ev, key=lambda i: (evidence[i], p[i])) if with_ev else dets[0][0]
            else:
                best = dets[0][0]
            out.append(RankedMaterial(mat, float(summed[m]), int(best), tuple(dets)))
        return out

    def element_weights(self, elements: Iterable[str], *, mode: str = "demote", factor: float = 0.001) -> np.ndarray:
        """Per-material multipliers from the elements (or metals) a chemist says are in the pot.

        A material contradicts them when one of its metals is not among them (organic
        elements are not judged: a chemist who lists only the metals says nothing about
        C, H, N, O). Contradicting materials are multiplied by ``factor`` (``demote``: they
        also rank after every material the elements allow) or by 0 (``exclude``: they leave
        the Top-k); the others by 1."""
        given = {_element(e) for e in elements if str(e).strip()}
        w = np.ones(len(self))
        if not given:
            return w
        bad = np.array([bool(set(m.metals) - given) for m in self.materials])
        w[bad] = 0.0 if mode == "exclude" else float(factor)
        return w


def group(library: Any) -> Materials:
    """Group a :class:`~xrd_agent.library.artifact.Library` (or anything with ``entries`` and
    optional ``niggli``: refcode -> cell) into materials. Deterministic: the same library
    always gives the same materials, ids and order (by first class index)."""
    entries = list(getattr(library, "entries", []) or [])
    cells: dict[str, Sequence[float]] = dict(getattr(library, "niggli", None) or {})
    n = len(entries)
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def union(i: int, j: int) -> None:
        a, b = find(i), find(j)
        if a != b:
            parent[max(a, b)] = min(a, b)

    # names table: one name or alias, one material
    by_name: dict[str, int] = {}
    for i, e in enumerate(entries):
        for nm in _own_names(e):
            j = by_name.setdefault(_key(nm), i)
            if j != i:
                union(i, j)
    # structures: same chemistry and the held-out rule's cells
    chem: dict[str, list[int]] = {}
    for i, e in enumerate(entries):
        if e.get("refcode") in cells:
            chem.setdefault(_chemistry(str(e.get("formula") or "")), []).append(i)
    for members in chem.values():
        if len(members) < 2:
            continue
        cell = np.array([cells[entries[i]["refcode"]] for i in members], np.float64)
        vol, lengths = _volumes(cell), np.sort(cell[:, :3], axis=1)
        close_v = np.abs(vol[:, None] - vol[None, :]) <= CELL_TOLERANCE * np.maximum(vol[:, None], vol[None, :])
        close_l = np.all(np.abs(lengths[:, None, :] - lengths[None, :, :])
                         <= CELL_TOLERANCE * np.maximum(lengths[:, None, :], lengths[None, :, :]), axis=2)
        for a, b in zip(*np.nonzero(np.triu(close_v & close_l, 1))):
            union(members[a], members[b])

    roots: dict[int, list[int]] = {}
    for i in range(n):
        roots.setdefault(find(i), []).append(i)
    materials, of_class = [], np.zeros(n, np.int64)
    for m, (_, idx) in enumerate(sorted(roots.items())):
        for i in idx:
            of_class[i] = m
        materials.append(_material(entries, idx))
    rule = ("same material: a shared common name or alias (names table)" + (
        ", or the same elements, in the same ratios apart from hydrogen and oxygen, and Niggli-reduced primitive cells "
        f"whose volumes and sorted lengths agree within {CELL_TOLERANCE:.0%}" if cells
        else "; no niggli.json, so no structural grouping"))
    return Materials(materials, of_class, rule)


def _material(entries: list[dict[str, Any]], idx: list[int]) -> Material:
    first = entries[idx[0]]
    refcodes = tuple(str(entries[i]["refcode"]) for i in idx)
    common = [str(entries[i].get("name")) for i in idx
              if entries[i].get("name") and entries[i].get("name") != entries[i]["refcode"]]
    name = common[0] if common else str(first["refcode"])
    elements = sorted({el for i in idx for el in _formula(str(entries[i].get("formula") or ""))})
    metals = sorted({str(x) for i in idx for x in entries[i].get("metals", [])})
    names = tuple(dict.fromkeys([name, *common, *(a for i in idx for a in entries[i].get("aliases", [])), *refcodes]))
    return Material(id=str(first["refcode"]), name=name, indices=tuple(idx), refcodes=refcodes,
                    elements=tuple(elements), metals=tuple(metals), names=names)


def _own_names(entry: dict[str, Any]) -> list[str]:
    """The names-table names of an entry (not its refcode: a refcode names one class)."""
    out = []
    if entry.get("name") and entry.get("name") != entry.get("refcode"):
        out.append(str(entry["name"]))
    out += [str(a) for a in entry.get("aliases", []) if str(a).strip()]
    return out


def _key(name: str) -> str:
    return re.sub(r"\s+", " ", str(name).strip().lower())


def _looks_like_refcode(name: str) -> bool:
    return bool(re.fullmatch(r"[A-Z]{6}\d{0,2}", name))


def _element(symbol: str) -> str:
    s = str(symbol).strip()
    return s[:1].upper() + s[1:].lower()


def _formula(formula: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for el, count in _FORMULA_TOKEN.findall(formula):
        out[el] = out.get(el, 0.0) + (float(count) if count else 1.0)
    return out


def _chemistry(formula: str) -> str:
    """The elements (hydrogen aside) and their ratios with hydrogen and oxygen left out, reduced
    to the smallest integers: C6 H2 Cu O4, C6 Cu O4 (CoRE dropped the hydrogens) and C6 Cu O5
    (a coordinated water) are one chemistry; an element present in one formula only still
    tells two apart (UiO-66 and UiO-66-NH2)."""
    parts = _formula(formula)
    counts = {el: Fraction(c).limit_denominator(1000) for el, c in parts.items() if el not in ("H", "D", "O")}
    elements = " ".join(sorted(el for el in parts if el not in ("H", "D")))
    if not counts:
        return elements
    lcm = reduce(lambda a, b: a * b // gcd(a, b), (c.denominator for c in counts.values()), 1)
    ints = {el: int(c * lcm) for el, c in counts.items()}
    g = reduce(gcd, ints.values())
    return " ".join(f"{el}{ints[el] // g}" for el in sorted(ints)) + " | " + elements


def _volumes(cell: np.ndarray) -> np.ndarray:
    a, b, c = cell[:, 0], cell[:, 1], cell[:, 2]
    al, be, ga = (np.radians(cell[:, k]) for k in (3, 4, 5))
    ca, cb, cg = np.cos(al), np.cos(be), np.cos(ga)
    return a * b * c * np.sqrt(np.maximum(0.0, 1 - ca ** 2 - cb ** 2 - cg ** 2 + 2 * ca * cb * cg))
