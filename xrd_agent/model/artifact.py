"""The trained-model folder: ``model.keras`` plus a ``manifest.json`` that says what it is.

Layout (the default model ships in ``xrd_agent/data/model``)::

    model.keras     the Keras 3 network (weights and architecture)
    manifest.json   format, version, architecture, class refcodes in order, the library
                    it was trained on (version + sha256 of its manifest), training
                    config and metrics, sha256 of model.keras, the exact command
    history.json    per-epoch training metrics
    training.png    the training curves
    library/        a copy of the library it was trained on, unless that is the shipped one

The manifest ties a model to one library: the engine refuses to pair a model with a
library whose class list differs, because class ``i`` would then name another MOF. A model
folder knows its library (:func:`library_dir_for`): its copy in ``library/``, else the path
it was trained from, each used only when the sha256 of its manifest is the one recorded;
else the shipped library. So ``identify --model DIR`` alone works for a model trained on a
``library build --cif-dir`` library.
Only json/hashlib here; Keras is imported by whoever loads the network.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from xrd_agent.errors import LibraryMismatch, ModelError

FORMAT = "xrd-agent-model"
FORMAT_VERSION = 1
MODEL_FILE = "model.keras"
MANIFEST_FILE = "manifest.json"
HISTORY_FILE = "history.json"
REPORT_FILE = "training.png"
LIBRARY_COPY = "library"


def default_model_path() -> Path:
    return Path(str(resources.files("xrd_agent") / "data" / "model"))


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def library_fingerprint(library: Any) -> str:
    """sha256 of the library's manifest.json (of its refcodes when it was never saved)."""
    path = getattr(library, "path", None)
    if path is not None and (Path(path) / "manifest.json").is_file():
        return sha256_file(Path(path) / "manifest.json")
    return hashlib.sha256("\n".join(library.refcodes).encode()).hexdigest()


@dataclass(frozen=True)
class ModelManifest:
    """What a model folder holds; written once by training, read by the engine."""

    arch: str
    classes: tuple[str, ...]
    library_version: str
    library_sha256: str
    model_sha256: str = ""
    training: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    command: str = ""
    created: str = ""
    device: str = ""
    library_path: str = ""  # absolute folder of the library at training time ("" for the shipped one)
    format: str = FORMAT
    format_version: int = FORMAT_VERSION

    @property
    def version(self) -> str:
        """Short, stable identity: architecture, class count and the weights' digest."""
        return f"{self.arch}-{len(self.classes)}-{self.model_sha256[:12]}"

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["classes"] = list(self.classes)
        out["version"] = self.version
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelManifest:
        if data.get("format") != FORMAT or data.get("format_version") != FORMAT_VERSION:
            raise ModelError(f"not an xrd-agent model folder of format version {FORMAT_VERSION}")
        try:
            return cls(
                arch=str(data["arch"]),
                classes=tuple(str(c) for c in data["classes"]),
                library_version=str(data["library_version"]),
                library_sha256=str(data["library_sha256"]),
                model_sha256=str(data.get("model_sha256", "")),
                training=dict(data.get("training", {})),
                metrics=dict(data.get("metrics", {})),
                command=str(data.get("command", "")),
                created=str(data.get("created", "")),
                device=str(data.get("device", "")),
                library_path=str(data.get("library_path", "")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"model manifest is incomplete: {exc}") from None


def write_manifest(directory: str | Path, manifest: ModelManifest) -> ModelManifest:
    """Write ``manifest.json`` with the digest of the ``model.keras`` already saved there."""
    out = Path(directory)
    digest = sha256_file(out / MODEL_FILE)
    final = ModelManifest(**{**asdict(manifest), "model_sha256": digest})
    (out / MANIFEST_FILE).write_text(json.dumps(final.to_dict(), indent=1) + "\n")
    return final


def read_manifest(directory: str | Path | None = None, *, verify: bool = True) -> ModelManifest:
    """Read and check a model folder (the shipped one when ``directory`` is empty)."""
    path = Path(directory) if directory else default_model_path()
    try:
        data = json.loads((path / MANIFEST_FILE).read_text())
    except (OSError, ValueError) as exc:
        raise ModelError(f"no readable model at {path}: {exc}") from None
    manifest = ModelManifest.from_dict(data)
    if not (path / MODEL_FILE).is_file():
        raise ModelError(f"{path} has a manifest but no {MODEL_FILE}")
    if verify and manifest.model_sha256 and sha256_file(path / MODEL_FILE) != manifest.model_sha256:
        raise ModelError(f"{path / MODEL_FILE} does not match its manifest checksum (damaged or replaced)")
    return manifest


def is_shipped_library(path: str | Path | None) -> bool:
    from xrd_agent.library.artifact import default_library_path

    if path is None:
        return False
    try:
        return Path(path).resolve() == default_library_path().resolve()
    except OSError:
        return False


def keep_library(directory: str | Path, library: Any) -> str:
    """Copy the library a model is trained on into its folder (unless it is the shipped one,
    or was never saved); returns the library's absolute folder for the manifest ("" if none)."""
    import shutil

    source = getattr(library, "path", None)
    if source is None or is_shipped_library(source):
        return ""
    target = Path(directory) / LIBRARY_COPY
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(source, target)
    return str(Path(source).resolve())


def library_dir_for(directory: str | Path | None, manifest: ModelManifest) -> Path | None:
    """The library a model folder was trained on: its copy, else the recorded path, else None
    (the shipped library). A candidate whose manifest's sha256 is not the recorded one is
    refused with a ModelError, never silently paired with the model."""
    model_dir = Path(directory) if directory else default_model_path()
    candidates = [model_dir / LIBRARY_COPY] + ([Path(manifest.library_path)] if manifest.library_path else [])
    changed = []
    for folder in candidates:
        if not (folder / "manifest.json").is_file():
            continue
        if sha256_file(folder / "manifest.json") == manifest.library_sha256:
            return folder
        changed.append(str(folder))
    if changed:
        raise ModelError(f"the library this model was trained on ({manifest.library_version!r}) has changed at "
                         f"{' and '.join(changed)} (sha256 of its manifest differs); give it with --library")
    return None


def subset_library(library: Any, n: int) -> Any:
    """The first ``n`` classes of ``library`` as a library of its own (sweeps, quick checks)."""
    from xrd_agent.library.artifact import Library

    n = max(1, min(int(n), len(library)))
    if n == len(library):
        return library
    sticks = [library.sticks(i) for i in range(n)]
    manifest = {**library.manifest, "version": f"{library.version}[:{n}]"}
    return Library.from_patterns(library.entries[:n], library.patterns16[:n], sticks, manifest)


def trained_on(classes: Sequence[str], refcodes: Sequence[str]) -> bool:
    """Whether a model over ``classes`` answers over a library of ``refcodes``: the same classes in
    the same order, or the library's first ones (a model trained with ``train --classes N``)."""
    return tuple(refcodes[:len(classes)]) == tuple(classes)


def check_library(manifest: ModelManifest, library: Any) -> Any:
    """The library the model was trained on: ``library`` itself, or its first classes when the
    model was trained on a prefix (``train --classes N``). Anything else is refused."""
    n = len(manifest.classes)
    if not trained_on(manifest.classes, library.refcodes):
        raise LibraryMismatch(
            f"the model was trained on library {manifest.library_version!r} with "
            f"{len(manifest.classes)} classes, but the library given has {len(library.refcodes)} "
            f"classes in another order (version {library.version!r}); use the library it was trained on"
        )
    return subset_library(library, n) if len(library.refcodes) > n else library


def load_network(directory: str | Path | None = None):
    """The Keras model of a folder, uncompiled (inference needs no optimizer state)."""
    import keras

    path = Path(directory) if directory else default_model_path()
    try:
        return keras.saving.load_model(path / MODEL_FILE, compile=False)
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot load {path / MODEL_FILE}: {exc}") from None
