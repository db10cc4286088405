"""The 1-D CNNs that read a pattern on the model grid and name its library class.

``paper`` is the reference network of Wang et al., J. Chem. Inf. Model. 2020: four
Conv1D blocks (6/16/32/64 filters, kernel 5, stride 1, ReLU, MaxPool1D(2),
Dropout(0.2)), Flatten, Dense 120 and 84 (ReLU), Dense N softmax. ``gap`` keeps the
same convolutional trunk but ends in global average pooling: the class activation
map is then native (Zhou et al. 2016) and the head has ~100x fewer parameters.

Layer names are part of the contract: :data:`LAST_CONV` is what CAM differentiates
against, :data:`FEATURES` is the penultimate layer used for the NCA map.
"""

from __future__ import annotations

from collections.abc import Callable

from xrd_agent.pattern import GRID_POINTS

LAST_CONV = "last_conv"
FEATURES = "features"
LOGITS = "logits"
PROBABILITIES = "probabilities"

#: Filters of the four convolution blocks (Wang et al. 2020, Fig. 2).
PAPER_FILTERS = (6, 16, 32, 64)
KERNEL = 5
DROPOUT = 0.2


def _trunk(keras, x, filters=PAPER_FILTERS, kernel=KERNEL, dropout=DROPOUT):
    """Conv -> ReLU -> MaxPool(2) -> Dropout per block; the last conv is named."""
    for i, f in enumerate(filters):
        last = i == len(filters) - 1
        x = keras.layers.Conv1D(f, kernel, strides=1, activation="relu",
                                name=LAST_CONV if last else f"conv{i + 1}")(x)
        x = keras.layers.MaxPooling1D(2, name=f"pool{i + 1}")(x)
        x = keras.layers.Dropout(dropout, name=f"dropout{i + 1}")(x)
    return x


def _head(keras, x, n_classes: int):
    # Logits and softmax are separate layers so calibration and CAM can read the logits.
    logits = keras.layers.Dense(n_classes, name=LOGITS)(x)
    return keras.layers.Activation("softmax", dtype="float32", name=PROBABILITIES)(logits)


def build_paper(n_classes: int, points: int = GRID_POINTS):
    """The reference network of Wang et al. 2020 (about 2.2 M parameters at 1,012 classes)."""
    import keras

    inputs = keras.Input((points, 1), name="pattern")
    x = _trunk(keras, inputs)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(120, activation="relu", name="dense120")(x)
    x = keras.layers.Dense(84, activation="relu", name=FEATURES)(x)
    return keras.Model(inputs, _head(keras, x, n_classes), name="wang2020_cnn")


def build_gap(n_classes: int, points: int = GRID_POINTS):
    """Same trunk, global-average-pooling head: native CAM, far fewer parameters.

    The last block has 128 filters instead of 64 so that the pooled vector is rich
    enough to separate a thousand classes without the 2 M-weight dense layer.
    """
    import keras

    inputs = keras.Input((points, 1), name="pattern")
    x = _trunk(keras, inputs, filters=(16, 32, 64, 128))
    x = keras.layers.GlobalAveragePooling1D(name="gap")(x)
    x = keras.layers.Dense(128, activation="relu", name=FEATURES)(x)
    return keras.Model(inputs, _head(keras, x, n_classes), name="gap_cnn")


ARCHITECTURES: dict[str, Callable[..., object]] = {"paper": build_paper, "gap": build_gap}


def build(arch: str, n_classes: int, points: int = GRID_POINTS, learning_rate: float = 1e-3):
    """Build and compile ``arch`` (Adam, categorical cross-entropy on integer labels)."""
    import keras

    try:
        factory = ARCHITECTURES[arch]
    except KeyError:
        raise ValueError(f"unknown architecture {arch!r}; choose one of {', '.join(ARCHITECTURES)}") from None
    model = factory(n_classes, points)
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        # Sparse = categorical cross-entropy without materialising one-hot labels.
        loss=keras.losses.SparseCategoricalCrossentropy(),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="top1"),
                 keras.metrics.SparseTopKCategoricalAccuracy(k=5, name="top5")],
    )
    return model
