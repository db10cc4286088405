"""Element symbols a chemist names for what is in the pot (``expect --elements``, sidecars,
``identify --elements``). Pure Python, so the light client install can check them too."""

from __future__ import annotations

from collections.abc import Sequence

#: Element symbols, for checking ``elements`` (a typo must not exclude every candidate).
ELEMENTS = frozenset("""H He Li Be B C N O F Ne Na Mg Al Si P S Cl Ar K Ca Sc Ti V Cr Mn Fe Co Ni Cu Zn Ga Ge
As Se Br Kr Rb Sr Y Zr Nb Mo Tc Ru Rh Pd Ag Cd In Sn Sb Te I Xe Cs Ba La Ce Pr Nd Pm Sm Eu Gd Tb Dy Ho Er
Tm Yb Lu Hf Ta W Re Os Ir Pt Au Hg Tl Pb Bi Po At Rn Fr Ra Ac Th Pa U Np Pu Am Cm Bk Cf Es Fm Md No Lr
D""".split())


def clean_elements(elements: object) -> tuple[str, ...]:
    """Element symbols, any case (``zn`` -> ``Zn``), from a list or a comma-separated string."""
    if elements is None:
        return ()
    if isinstance(elements, str):
        elements = [e for e in elements.replace(" ", ",").split(",") if e]
    if not isinstance(elements, Sequence) or not all(isinstance(e, str) for e in elements):
        raise ValueError("elements must be a list of element symbols")
    out = []
    for e in elements:
        sym = e.strip()[:1].upper() + e.strip()[1:].lower()
        if sym not in ELEMENTS:
            raise ValueError(f"{e!r} is not an element symbol")
        out.append(sym)
    return tuple(dict.fromkeys(out))
