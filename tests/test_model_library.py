"""A model folder knows its library: ``identify --model DIR`` alone works for a model trained
on a ``library build --cif-dir`` library, and a changed library is refused, never paired."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import DATA, FIXTURES, REPO

from xrd_agent.errors import ModelError
from xrd_agent.library.artifact import Library
from xrd_agent.library.build import build_from_cif_dir
from xrd_agent.model import artifact
from xrd_agent.model.train import TrainConfig, train

ONE_EPOCH = TrainConfig(epochs=1, per_class=8, batch_size=16, seed=5, workers=1, augment={"bank_noise": 0.0})


@pytest.fixture(scope="module")
def byo(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("byo")
    build_from_cif_dir(DATA / "cif", root / "lib", workers=1, progress=False)
    train(Library.load(root / "lib"), ONE_EPOCH, root / "model", command="pytest", progress=False, emit=lambda s: None)
    return root / "lib", root / "model"


def _identify(model: Path, scan: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "xrd_agent", "identify", "--json", "--device", "cpu",
                           "--model", str(model), str(scan)], capture_output=True, text=True, cwd=REPO, timeout=300)


def test_the_model_folder_records_and_copies_its_library(byo):
    lib, model = byo
    manifest = artifact.read_manifest(model)
    assert manifest.library_path == str(lib.resolve())
    assert artifact.library_dir_for(model, manifest) == model / artifact.LIBRARY_COPY
    shutil.rmtree(model / artifact.LIBRARY_COPY)
    assert artifact.library_dir_for(model, manifest) == lib.resolve()  # the path, when the copy is gone
    shutil.copytree(lib, model / artifact.LIBRARY_COPY)


def test_identify_with_only_the_model_folder(byo, tmp_path):
    lib, model = byo
    moved = tmp_path / "model"
    shutil.copytree(model, moved)  # a model folder carried to another machine: the original library path is gone
    manifest = json.loads((moved / artifact.MANIFEST_FILE).read_text())
    manifest["library_path"] = str(tmp_path / "nowhere")
    (moved / artifact.MANIFEST_FILE).write_text(json.dumps(manifest))
    proc = _identify(moved, FIXTURES / "BT86_.UXD")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert {c["refcode"] for c in doc["top"]} <= {"NaCl", "SALLAT_clean", "SUHHOT_clean"}

    # the copy edited after training: refused with a reason, not paired with the model
    copied = moved / artifact.LIBRARY_COPY / "manifest.json"
    copied.write_text(copied.read_text().replace('"version"', '"version_"', 1))
    with pytest.raises(ModelError, match="has changed"):
        artifact.library_dir_for(moved, artifact.read_manifest(moved))
    refused = _identify(moved, FIXTURES / "BT86_.UXD")
    assert refused.returncode != 0 and "has changed" in refused.stderr
