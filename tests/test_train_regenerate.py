"""Training on spectra drawn anew every epoch, and fine-tuning from a model folder, end to end
on the tiny invented library (seconds)."""

from __future__ import annotations

import numpy as np
import pytest
from test_model_support import tiny_library

from xrd_agent.model import artifact
from xrd_agent.model.train import TrainConfig, train

FRESH = TrainConfig(epochs=2, per_class=8, batch_size=32, seed=1, regenerate=True,
                    augment_preset="instrument", augment={"bank_noise": 0.0}, patience=5)


@pytest.fixture(scope="module")
def fresh(tmp_path_factory):
    root = tmp_path_factory.mktemp("fresh")
    library = tiny_library()
    result = train(library, FRESH, root / "model", command="pytest", progress=False, emit=lambda s: None)
    return root, library, result


def test_regenerated_training_runs_every_epoch_and_is_recorded(fresh):
    root, library, result = fresh
    assert len(result.history["loss"]) == 2
    assert result.manifest.metrics["train_samples"] == len(library) * FRESH.per_class
    assert result.manifest.metrics["validation_samples"] == len(library)  # round(8 * 0.1) = 1 per class
    manifest = artifact.read_manifest(root / "model")
    assert manifest.training["regenerate"] is True and manifest.training["augment_preset"] == "instrument"


def test_fine_tuning_starts_from_the_folders_weights(fresh):
    root, library, first = fresh
    config = TrainConfig(epochs=1, per_class=8, batch_size=32, seed=1, regenerate=True,
                         augment={"bank_noise": 0.0}, learning_rate=1e-12, init_model=str(root / "model"))
    tuned = train(library, config, None, command="pytest", progress=False, emit=lambda s: None)
    assert tuned.manifest.metrics["init_model_version"] == first.manifest.version
    # a negligible learning rate: the tuned weights are still the folder's
    for a, b in zip(first.model.get_weights(), tuned.model.get_weights()):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_fine_tuning_refuses_a_model_of_other_classes(fresh, tmp_path):
    root, library, _ = fresh
    other = artifact.subset_library(library, len(library) - 1)
    config = TrainConfig(epochs=1, per_class=4, batch_size=32, regenerate=True, augment={"bank_noise": 0.0},
                         init_model=str(root / "model"))
    with pytest.raises(ValueError, match="classes"):
        train(other, config, None, command="pytest", progress=False, emit=lambda s: None)


def test_the_training_device_follows_the_keras_backend(fresh):
    from xrd_agent.errors import ModelError
    from xrd_agent.model.train import training_device

    _, _, result = fresh
    # TensorFlow here, on a machine with no GPU: the manifest says where the weights came from
    assert result.manifest.device == training_device("auto") == "cpu"
    with pytest.raises(ModelError, match="auto, cpu or gpu"):
        training_device("tpu")
    with pytest.raises(ModelError, match="no GPU"):
        training_device("gpu")
