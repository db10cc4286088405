"""Curated common names of the MOFs labs make most, keyed by CSD refcode (``names.toml``).

Each refcode was checked against its CoRE CIF (metal, formula, cell) before it was listed;
the DOI is that of the paper reporting the structure.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from xrd_agent.errors import LibraryError


@dataclass(frozen=True)
class CommonName:
    refcode: str
    name: str
    aliases: tuple[str, ...] = ()
    doi: str | None = None
    #: True: the stem enters the library first and this refcode is its training determination.
    #: False: a name only (another determination of a famous MOF that the selection rule
    #: chose anyway); the stem keeps its place, so naming it never reorders the classes.
    first: bool = True


def load_names(path: str | Path | None = None) -> dict[str, CommonName]:
    """refcode -> CommonName, in file order (the order named stems enter the library)."""
    try:
        if path is None:
            text = (resources.files("xrd_agent.library") / "names.toml").read_text()
        else:
            text = Path(path).read_text()
        table = tomllib.loads(text)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise LibraryError(f"names table unreadable: {exc}") from None
    out: dict[str, CommonName] = {}
    for refcode, row in table.items():
        if not isinstance(row, dict) or not row.get("name"):
            raise LibraryError(f"names table: {refcode} needs a name")
        out[refcode] = CommonName(refcode, str(row["name"]), tuple(row.get("aliases", ())), row.get("doi"),
                                  bool(row.get("first", True)))
    return out
