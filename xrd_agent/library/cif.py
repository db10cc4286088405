"""Reading CIFs at the edge: text in, a :class:`~xrd_agent.library.simulate.Crystal` and its
metadata out. pymatgen does the parsing and symmetry expansion (any space group, partial
occupancies); nothing downstream needs pymatgen."""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from xrd_agent.errors import StructureError
from xrd_agent.library.simulate import Crystal


@dataclass(frozen=True, eq=False)
class ParsedCif:
    crystal: Crystal
    formula: str  # Hill formula of the cell contents reduced to the smallest integers
    metals: tuple[str, ...]
    cell: tuple[float, float, float, float, float, float]  # a b c alpha beta gamma
    volume: float
    space_group: str  # as written in the CIF
    common_name: str | None
    doi: str | None
    niggli: tuple[float, float, float, float, float, float]  # Niggli cell of the primitive lattice
    extra: dict[str, Any] = field(default_factory=dict)


_SG_TAGS = ("_space_group_name_H-M_alt", "_symmetry_space_group_name_H-M", "_space_group_name_Hall",
            "_symmetry_space_group_name_Hall")


def _tag(block: dict[str, Any], names: tuple[str, ...]) -> str | None:
    for name in names:
        value = block.get(name)
        if isinstance(value, list):
            value = value[0] if value else None
        if value and str(value).strip() not in ("?", "."):
            return re.sub(r"\s+", " ", str(value)).strip().strip("'\"")
    return None


def parse_cif(text: str, name: str = "structure") -> ParsedCif:
    """Parse one CIF (first data block). Raises :class:`StructureError` with a plain reason."""
    from pymatgen.io.cif import CifParser  # build-time dependency only

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            parser = CifParser.from_str(text)
            structures = parser.parse_structures(primitive=False)
    except Exception as exc:  # pymatgen raises ValueError, KeyError, IndexError ... on bad CIFs
        raise StructureError(f"{name}: the CIF cannot be read as a crystal structure ({_short(exc)})") from None
    if not structures:
        raise StructureError(f"{name}: the CIF holds no structure with atoms")
    structure = structures[0]
    block = next(iter(parser.as_dict().values()), {})
    frac, elements, occupancy = [], [], []
    for site in structure:
        for species, occ in site.species.items():
            symbol = getattr(species, "symbol", None) or getattr(species, "element", species).symbol
            frac.append(site.frac_coords)
            elements.append(str(symbol))
            occupancy.append(float(occ))
    crystal = Crystal(
        lattice=np.array(structure.lattice.matrix, float),
        frac=np.array(frac, float).reshape(-1, 3),
        elements=tuple(elements),
        occupancy=np.array(occupancy, float),
    )
    comp = structure.composition
    lat = structure.lattice
    niggli = _primitive_niggli(structure)
    metals = tuple(sorted({el.symbol for el in comp.elements if el.is_metal or el.symbol in ("Ge", "Sb", "Te")}))
    return ParsedCif(
        crystal=crystal,
        formula=comp.reduced_composition.hill_formula if comp.num_atoms else "",
        metals=metals,
        cell=tuple(round(float(x), 4) for x in (*lat.abc, *lat.angles)),  # type: ignore[arg-type]
        volume=round(float(lat.volume), 2),
        space_group=_tag(block, _SG_TAGS) or "unknown",
        common_name=_tag(block, ("_chemical_name_common",)),
        doi=_tag(block, ("_journal_paper_doi", "_citation_doi")),
        niggli=tuple(float(x) for x in (*niggli.abc, *niggli.angles)),  # type: ignore[arg-type]
    )


def _primitive_niggli(structure: Any) -> Any:
    """Niggli cell of the primitive lattice: CoRE gives some determinations in a centred
    (conventional) P1 cell and others in the primitive one, so the given cell is not
    comparable. spglib finds the primitive cell (symprec 0.1 A); if it cannot, the given
    cell is used."""
    import spglib
    from pymatgen.core import Lattice

    numbers = [max(site.species.items(), key=lambda kv: kv[1])[0].Z for site in structure]
    cell = (structure.lattice.matrix, structure.frac_coords, numbers)
    try:
        with warnings.catch_warnings():  # spglib 2.x warns about its own error-handling switch
            warnings.simplefilter("ignore", DeprecationWarning)
            prim = spglib.find_primitive(cell, symprec=0.1)
    except Exception:  # spglib raises on degenerate input; fall back to the cell as given
        prim = None
    lattice = Lattice(prim[0]) if prim is not None else structure.lattice
    return lattice.get_niggli_reduced_lattice()


def same_phase(a: ParsedCif | tuple, b: ParsedCif | tuple, tol: float = 0.05) -> bool:
    """Same material by the structures: the Niggli-reduced primitive cells have volumes and
    sorted lengths that agree within ``tol`` (relative). Patterns are never consulted."""
    na = a.niggli if isinstance(a, ParsedCif) else a
    nb = b.niggli if isinstance(b, ParsedCif) else b
    va, vb = _volume(na), _volume(nb)
    if abs(va - vb) > tol * max(va, vb):
        return False
    la, lb = np.sort(na[:3]), np.sort(nb[:3])
    return bool(np.all(np.abs(la - lb) <= tol * np.maximum(la, lb)))


def _volume(p: tuple) -> float:
    a, b, c = p[:3]
    al, be, ga = np.radians(p[3:6])
    return float(a * b * c * np.sqrt(max(0.0, 1 - np.cos(al) ** 2 - np.cos(be) ** 2 - np.cos(ga) ** 2
                                         + 2 * np.cos(al) * np.cos(be) * np.cos(ga))))


def _short(exc: Exception) -> str:
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return msg[:160]
