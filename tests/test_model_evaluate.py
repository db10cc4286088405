"""``xrd-agent evaluate`` on a tiny library with a held-out folder: tables and figures."""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_model_support import tiny_library_with_heldout

from xrd_agent.model import evaluate as ev
from xrd_agent.model.engine import Engine
from xrd_agent.model.train import TrainConfig, train


def test_topk_accuracy_counts_ranks():
    scores = np.array([[0.1, 0.7, 0.2], [0.5, 0.3, 0.2], [0.2, 0.3, 0.5]])
    acc = ev.topk_accuracy(scores, np.array([1, 2, 1]), ks=(1, 2, 3))
    assert acc == {"top1": pytest.approx(1 / 3), "top2": pytest.approx(2 / 3), "top3": 1.0}


def test_cosine_search_match_finds_identical_patterns():
    rng = np.random.default_rng(0)
    refs = rng.random((6, 50))
    assert (np.argmax(ev.cosine_scores(refs * 3.0, refs), axis=1) == np.arange(6)).all()


def test_evaluate_writes_tables_and_figures(tmp_path, fixtures_dir):
    library = tiny_library_with_heldout(tmp_path / "library")
    train(library, TrainConfig(epochs=4, per_class=16, batch_size=32, augment={"bank_noise": 0.0}),
          tmp_path / "model", progress=False, emit=lambda s: None)
    engine = Engine(tmp_path / "model", library, device="cpu").load()
    config = ev.EvalConfig(repeats=2, baseline_per_class=4, baselines=("naive_bayes", "knn"), sweep="none",
                           amorphous=4, rerank_grid=True)
    fixtures = [fixtures_dir / "Si-Std_SRM640d_D8D_20-97_7_16hm.brml", fixtures_dir / "format1.raw"]
    results = ev.evaluate(engine, library, tmp_path / "out", config, fixtures=fixtures, command="pytest",
                          emit=lambda s: None)
    methods = results["scores"]["methods"]
    assert set(methods) == {"cnn", "cnn+peak_match", "cosine_search_match", "naive_bayes", "knn"}
    for rows in methods.values():
        assert set(rows) == {"clean/all", "clean/same_phase", "realistic/all", "realistic/same_phase"}
        assert rows["realistic/all"]["n"] == 2 * 6 and rows["realistic/same_phase"]["n"] == 2 * 5
        tops = [rows["clean/all"][f"top{k}"] for k in ev.KS]
        assert tops == sorted(tops) and 0.0 <= tops[0] <= 1.0
    assert methods["cosine_search_match"]["clean/same_phase"]["top5"] == 1.0
    assert results["open_set"]["amorphous"]["flagged_amorphous"] == 1.0
    assert 0 < results["mixture"]["n"] and 0.0 <= results["mixture"]["flagged_mixture"] <= 1.0
    assert [r["file"] for r in results["open_set"]["fixtures"]] == [f.name for f in fixtures]
    grid = results["rerank_grid"]["rows"]
    assert grid[0]["depth"] == 1 and len(grid) == 1 + 2 * 3 * 4 and all(0 <= r["top1"] <= r["top5"] <= 1 for r in grid)
    assert {r["evidence"] for r in grid[1:]} == {"score", "above_chance"}
    md = (tmp_path / "out" / "results.md").read_text()
    assert "| cnn | realistic/same_phase | 10 |" in md and "Command: `pytest`" in md
    assert json.loads((tmp_path / "out" / "results.json").read_text())["model_version"] == engine.manifest_.version
    for name in ("nca.png", "cam.png", "sweeps.png"):
        assert (tmp_path / "out" / name).stat().st_size > 10_000
