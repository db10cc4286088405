"""Network, training, model folder and the resident engine, end to end on a tiny library.

A 12-class library of invented reflections is trained for a few epochs (seconds) with
the real synthesis pipeline; the engine then loads that folder like the shipped model.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_model_support import amorphous_scan, counts_scan, tiny_library

from xrd_agent.errors import ModelError, NoCoverage, NotFittedError
from xrd_agent.identification import Flag, Identification
from xrd_agent.model import artifact
from xrd_agent.model.engine import Engine
from xrd_agent.model.network import FEATURES, LAST_CONV, build
from xrd_agent.model.train import TrainConfig, train
from xrd_agent.pattern import GRID_POINTS, MODEL_GRID
from xrd_agent.scan import Scan, ScanRange, Wavelength

TINY = TrainConfig(epochs=6, per_class=24, batch_size=32, seed=3, augment={"bank_noise": 0.0})


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    library = tiny_library()
    library.save(root / "library")
    result = train(library, TINY, root / "model", command="pytest", progress=False, emit=lambda s: None)
    return root, library, result


@pytest.fixture(scope="module")
def engine(tiny):
    root, _, _ = tiny
    return Engine(root / "model", root / "library", device="cpu", batch_sizes=(1, 8, 32)).load()


def test_the_paper_network_has_the_published_shape():
    model = build("paper", 1012)
    convs = [layer for layer in model.layers if type(layer).__name__ == "Conv1D"]
    assert [c.filters for c in convs] == [6, 16, 32, 64]
    assert all(c.kernel_size == (5,) and c.strides == (1,) for c in convs)
    assert convs[-1].name == LAST_CONV
    dense = [layer.units for layer in model.layers if type(layer).__name__ == "Dense"]
    assert dense == [120, 84, 1012] and model.get_layer(FEATURES).units == 84
    assert model.input_shape == (None, GRID_POINTS, 1) and model.output_shape == (None, 1012)
    assert 2.0e6 < model.count_params() < 2.5e6  # fits the 15 MB budget as float32


def test_engine_refuses_before_load():
    engine = Engine("/nonexistent")
    with pytest.raises(NotFittedError):
        engine.predict_proba(np.zeros((1, GRID_POINTS)))
    with pytest.raises(NotFittedError):
        engine.identify_arrays(MODEL_GRID, np.ones(GRID_POINTS))


def test_training_writes_a_complete_model_folder(tiny):
    root, library, result = tiny
    folder = root / "model"
    manifest = json.loads((folder / artifact.MANIFEST_FILE).read_text())
    assert manifest["classes"] == list(library.refcodes)
    assert manifest["library_sha256"] == artifact.sha256_file(root / "library" / "manifest.json")
    assert manifest["model_sha256"] == artifact.sha256_file(folder / artifact.MODEL_FILE)
    assert manifest["training"]["seed"] == 3 and manifest["command"] == "pytest"
    assert manifest["metrics"]["epochs_run"] >= 1
    assert (folder / artifact.REPORT_FILE).stat().st_size > 10_000  # a real PNG, not a stub
    assert (folder / artifact.MODEL_FILE).stat().st_size < 10e6  # weights only, no optimizer state
    assert len(json.loads((folder / artifact.HISTORY_FILE).read_text())["loss"]) == manifest["metrics"]["epochs_run"]


def test_tiny_model_identifies_scans_of_its_classes(engine, tiny):
    _, library, _ = tiny
    hits = 0
    for index in (0, 3, 7, 11):
        result = engine.identify_arrays(MODEL_GRID, counts_scan(library, index, seed=index))
        assert isinstance(result, Identification) and len(result.top) == 5
        assert [c.rank for c in result.top] == [1, 2, 3, 4, 5]
        assert len({c.refcode for c in result.top}) == 5
        hits += result.top[0].refcode == library.refcodes[index]
        if result.top[0].refcode == library.refcodes[index]:
            assert Flag.UNKNOWN_PHASE not in result.flags and result.confidence > 0.5
            assert result.cam_regions and all(5.0 <= r.start <= r.end <= 50.0 for r in result.cam_regions)
    assert hits >= 3


def test_fixed_signature_function_does_not_retrace(engine):
    before = engine.traces_
    for n in (1, 3, 8, 9, 31, 70):
        assert engine.predict_proba(np.random.default_rng(n).random((n, GRID_POINTS))).shape == (n, 12)
    assert engine.traces_ == before == 1


def test_padding_does_not_change_predictions(engine, tiny):
    _, library, _ = tiny
    X = library.patterns[:5]
    alone = np.concatenate([engine.predict_proba(x[None]) for x in X])
    np.testing.assert_allclose(engine.predict_proba(X), alone, atol=1e-5)


def test_amorphous_scan_is_flagged(engine):
    for seed in range(3):
        result = engine.identify_arrays(MODEL_GRID, amorphous_scan(seed))
        assert Flag.AMORPHOUS in result.flags and result.confidence == 0.0


def test_a_20_to_40_degree_scan_is_flagged_low_coverage(engine, tiny):
    _, library, _ = tiny
    keep = (MODEL_GRID >= 20.0) & (MODEL_GRID <= 40.0)
    result = engine.identify_arrays(MODEL_GRID[keep], counts_scan(library, 5)[keep])
    assert Flag.LOW_COVERAGE in result.flags
    assert result.coverage.first == pytest.approx(20.0) and result.coverage.last == pytest.approx(40.0)


def _scan(two_theta, intensity, name="x.xy"):
    return Scan(ranges=(ScanRange(two_theta, intensity),), source_path=name, format="test", format_version="1",
                sha256="0" * 64, wavelength=Wavelength.for_anode("Cu"))


def test_identify_many_keeps_order_and_returns_errors_in_place(engine, tiny):
    _, library, _ = tiny
    good = _scan(MODEL_GRID, counts_scan(library, 2))
    outside = _scan(np.linspace(60, 80, 500), np.ones(500), "high-angle.xy")
    results = engine.identify_many([good, outside, good])
    assert isinstance(results[0], Identification) and isinstance(results[2], Identification)
    assert isinstance(results[1], NoCoverage) and "measured nothing" in results[1].reason
    assert results[0].top == results[2].top
    with pytest.raises(NoCoverage):
        engine.identify(outside)


def test_engine_refuses_a_library_with_other_classes(tiny, tmp_path):
    root, _, _ = tiny
    other = tiny_library(12, seed=9)
    other.entries = [{**e, "refcode": f"OTHER{i}"} for i, e in enumerate(other.entries)]
    other.save(tmp_path / "other")
    with pytest.raises(ModelError, match="trained on library"):
        Engine(root / "model", tmp_path / "other").load()


def test_a_damaged_model_file_is_refused(tiny, tmp_path):
    import shutil

    root, _, _ = tiny
    shutil.copytree(root / "model", tmp_path / "model")
    with open(tmp_path / "model" / artifact.MODEL_FILE, "ab") as f:
        f.write(b"garbage")
    with pytest.raises(ModelError, match="checksum"):
        Engine(tmp_path / "model", root / "library").load()
