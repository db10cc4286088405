"""The model a benchmark runs: the shipped one when present, else a stand-in of the same shape.

Inference cost depends on the architecture and the number of classes, not on what the
weights learned, so before the trained model ships a benchmark can time an untrained
network of the paper's architecture over a made-up library of the shipped size. Every
report says which of the two it timed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: Classes of the shipped library (CoRE MOF 2019 selection, see docs/model.md).
DEFAULT_CLASSES = 1012


@dataclass(frozen=True)
class ModelChoice:
    model_dir: Path | None  # None: the shipped model
    library: Any  # a Library or a folder; None: the shipped library
    description: str


def shipped_model_present() -> bool:
    from xrd_agent.model import artifact

    try:
        artifact.read_manifest(None, verify=False)
    except Exception:  # noqa: BLE001 - any failure means: not usable here
        return False
    return True


def build_standin(directory: Path, classes: int = DEFAULT_CLASSES, arch: str = "paper") -> ModelChoice:
    """An untrained ``arch`` network over ``tiny_library(classes)``, saved as a model folder."""
    from xrd_agent.model import artifact
    from xrd_agent.model.network import build
    from xrd_agent.testing.library import tiny_library

    directory = Path(directory)
    lib_dir, model_dir = directory / "library", directory / "model"
    library = tiny_library(classes)
    library.save(lib_dir)
    from xrd_agent.library.artifact import Library

    library = Library.load(lib_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    build(arch, classes).save(model_dir / artifact.MODEL_FILE)
    artifact.write_manifest(model_dir, artifact.ModelManifest(
        arch=arch, classes=tuple(library.refcodes), library_version=library.version,
        library_sha256=artifact.library_fingerprint(library), command="xrd_agent.bench.standin"))
    return ModelChoice(model_dir, lib_dir, f"stand-in: untrained '{arch}' network, {classes} classes "
                                           "(same shape as the shipped model; the trained one was absent)")


def choose(workdir: Path, model_dir: Path | None = None, library: Path | None = None) -> ModelChoice:
    if model_dir is not None:
        return ModelChoice(model_dir, library, f"model {model_dir}")
    if shipped_model_present():
        return ModelChoice(None, library, "the shipped model (xrd_agent/data/model)")
    return build_standin(Path(workdir) / "standin")


def shipped_library_present() -> bool:
    from xrd_agent.library.artifact import Library

    try:
        Library.load(None)
    except Exception:  # noqa: BLE001
        return False
    return True


@dataclass(frozen=True)
class ServiceEngine:
    engine: str  # cnn | cosine
    model_dir: Path | None
    library_dir: Path | None
    description: str


def service_engine(workdir: Path, engine: str = "cnn", *, classes: int = 60) -> ServiceEngine:
    """What ``xrd-agent run`` should identify with in a benchmark: the CNN (shipped, else a
    stand-in of the shipped shape) or the cosine search-match (shipped library, else a tiny
    made-up one of ``classes`` entries)."""
    workdir = Path(workdir)
    if engine == "cnn":
        choice = choose(workdir)
        lib = Path(choice.library) if isinstance(choice.library, (str, Path)) else None
        return ServiceEngine("cnn", choice.model_dir, lib, choice.description)
    if shipped_library_present():
        return ServiceEngine("cosine", None, None, "cosine search-match over the shipped library")
    from xrd_agent.testing.library import save_tiny_library

    lib_dir = workdir / "standin" / f"library-{classes}"
    if not lib_dir.exists():
        save_tiny_library(lib_dir, classes)
    return ServiceEngine("cosine", None, lib_dir,
                         f"cosine search-match over a made-up {classes}-entry library (shipped one absent)")
