"""CoRE MOF 2019 as a source of reference structures: determinations, stems, the selection rule.

The ``core-mof`` package (CC-BY 4.0) ships two CSV tables and two tar.xz archives of P1 CIFs:
``2019-ASR`` (all solvent removed) and ``2019-FSR`` (free solvent removed). A *determination*
is one CSD refcode (FIQCEN01); a *stem* is its first six letters (FIQCEN), the material. The
CIFs are read straight from the archives with :mod:`tarfile` (one sequential pass), not through
``CoRE_MOF.get_structure``, which rescans the archive for every entry.

Entries named after a paper rather than a CSD refcode (547 ASR, 553 FSR: SI structures,
most of them duplicates of a CSD entry) are left out: they have no stem to group by.
"""

from __future__ import annotations

import csv
import hashlib
import re
import tarfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from xrd_agent.errors import LibraryError

#: Pattern source first: ASR is the larger set and what activated samples look like.
DATASETS = ("2019-ASR", "2019-FSR")
_CSD_NAME = re.compile(r"^(?P<refcode>[A-Z]{6}\d{0,2})_(?P<ext>.+)$")


@dataclass(frozen=True)
class Determination:
    """One CSD refcode and the CoRE files that hold it (dataset -> file stem without .cif)."""

    refcode: str
    files: dict[str, str] = field(hash=False, compare=False)

    @property
    def stem(self) -> str:
        return stem_of(self.refcode)

    @property
    def variants(self) -> list[str]:
        return [d for d in DATASETS if d in self.files]

    @property
    def source(self) -> tuple[str, str]:
        """(dataset, file stem) whose CIF is simulated: ASR when present, else FSR."""
        dataset = self.variants[0]
        return dataset, self.files[dataset]


def stem_of(refcode: str) -> str:
    """CSD refcode stem: FIQCEN01 -> FIQCEN (the six letters name the material)."""
    return refcode[:6]


def data_dir() -> Path:
    try:
        import CoRE_MOF
    except ModuleNotFoundError:
        raise LibraryError("the core-mof package is not installed: pip install 'xrd-agent[library]'") from None
    return Path(CoRE_MOF.__file__).parent / "data"  # a namespace folder: resources.files gives no plain path


def load_determinations(root: Path | None = None) -> dict[str, Determination]:
    """Every CSD refcode in CoRE MOF 2019 ASR and FSR, sorted by refcode."""
    root = root or data_dir()
    files: dict[str, dict[str, str]] = {}
    for dataset in DATASETS:
        with open(root / f"{dataset}.csv", newline="", encoding="utf-8", errors="replace") as f:
            for row in csv.DictReader(f):
                m = _CSD_NAME.match(row.get("filename", ""))
                if m:
                    files.setdefault(m["refcode"], {})[dataset] = row["filename"]
    return {ref: Determination(ref, files[ref]) for ref in sorted(files)}


def group_stems(determinations: dict[str, Determination]) -> dict[str, list[Determination]]:
    stems: dict[str, list[Determination]] = {}
    for det in determinations.values():
        stems.setdefault(det.stem, []).append(det)
    return stems


def stem_hash(stem: str) -> str:
    return hashlib.sha256(stem.encode()).hexdigest()


def candidate_order(stems: dict[str, list[Determination]], named: Iterable[str]) -> list[str]:
    """The default selection rule, as an ordered list of stems to try:

    1. the stems of the curated named MOFs, in ``names.toml`` order;
    2. every other stem with two or more determinations (they give the held-out set its
       pairs), ordered by sha256 of the stem;
    3. the remaining stems, ordered by sha256 of the stem.

    The build walks this list and keeps the first N stems whose training determination
    parses and fits the simulation cap.
    """
    first: list[str] = []
    for refcode in named:
        stem = stem_of(refcode)
        if stem in stems and stem not in first:
            first.append(stem)
    taken = set(first)
    multi = sorted((s for s, d in stems.items() if len(d) > 1 and s not in taken), key=stem_hash)
    single = sorted((s for s, d in stems.items() if len(d) == 1 and s not in taken), key=stem_hash)
    return first + multi + single


def iter_cifs(wanted: dict[str, set[str]], root: Path | None = None) -> Iterator[tuple[str, str, str]]:
    """Yield (dataset, file stem, CIF text) for the wanted file stems, one pass per archive."""
    root = root or data_dir()
    for dataset in DATASETS:
        names = wanted.get(dataset)
        if not names:
            continue
        with tarfile.open(root / f"{dataset}.tar.xz", "r:xz") as tar:
            for member in tar:
                if not member.isfile() or not member.name.endswith(".cif"):
                    continue
                stem = member.name.rsplit("/", 1)[-1][:-4]
                if stem in names:
                    handle = tar.extractfile(member)
                    if handle is not None:
                        yield dataset, stem, handle.read().decode("utf-8", errors="replace")
