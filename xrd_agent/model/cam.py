"""Class activation maps: which 2-theta regions drove the top decision.

HiResCAM (Draelos & Carin 2020): sum over channels of gradient x activation at the
last convolution, ReLU. For the paper's Flatten+Dense head it is faithful to the
network (plain Grad-CAM averages the gradient over positions and can point at
regions the dense layer ignores); for a global-average-pooling head it equals the
classic CAM of Zhou et al. 2016. The map lives on the last conv's positions and is
carried back to the 2-theta grid through the receptive-field centres of the trunk.
"""

from __future__ import annotations

import numpy as np

from xrd_agent.identification import CamRegion
from xrd_agent.model.network import LAST_CONV, LOGITS
from xrd_agent.pattern import GRID_POINTS, MODEL_GRID


def receptive_centres(model) -> np.ndarray:
    """Input-grid index of the centre of each position of the last conv's output."""
    import keras

    layers = []
    for layer in model.layers:
        layers.append(layer)
        if layer.name == LAST_CONV:
            break
    n_out = int(model.get_layer(LAST_CONV).output.shape[1])
    pos = np.arange(n_out, dtype=np.float64)
    for layer in reversed(layers):
        if isinstance(layer, keras.layers.Conv1D):
            k, s, d = layer.kernel_size[0], layer.strides[0], layer.dilation_rate[0]
            pad = (d * (k - 1)) // 2 if layer.padding == "same" else 0
            pos = pos * s + d * (k - 1) / 2.0 - pad
        elif isinstance(layer, keras.layers.MaxPooling1D | keras.layers.AveragePooling1D):
            p, s = layer.pool_size[0], layer.strides[0]
            pos = pos * s + (p - 1) / 2.0
    return pos


def make_cam_function(model):
    """A tf.function(x (n, 4501, 1) float32) -> (probabilities (n, N), cam (n, L)) for the argmax class.

    One forward pass gives both, so explaining costs only the backward pass from the
    logits to the last conv (not to the input).
    """
    import keras
    import tensorflow as tf

    split = keras.Model(model.inputs, [model.get_layer(LAST_CONV).output, model.get_layer(LOGITS).output])

    @tf.function(input_signature=[tf.TensorSpec([None, GRID_POINTS, 1], tf.float32)], reduce_retracing=True)
    def probabilities_and_cam(x):
        with tf.GradientTape() as tape:
            conv, logits = split(x, training=False)
            top = tf.argmax(logits, axis=1, output_type=tf.int32)
            chosen = tf.gather(logits, top, axis=1, batch_dims=1)
        grads = tape.gradient(chosen, conv)  # rows are independent: no batch coupling at inference
        cam = tf.nn.relu(tf.reduce_sum(grads * conv, axis=2))
        return tf.nn.softmax(logits, axis=1), cam

    return probabilities_and_cam


def to_grid(cam: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Carry maps (n, L) from conv positions onto MODEL_GRID (n, 4501) by linear interpolation."""
    cam = np.atleast_2d(cam)
    idx = np.arange(GRID_POINTS, dtype=np.float64)
    return np.stack([np.interp(idx, centres, row, left=0.0, right=0.0) for row in cam])


def regions(cam_grid: np.ndarray, mask: np.ndarray | None = None, *, level: float = 0.35,
            max_regions: int = 5, min_weight: float = 0.03) -> tuple[CamRegion, ...]:
    """Contiguous 2-theta intervals where the map exceeds ``level`` x its maximum.

    ``weight`` is the share of the map's positive mass inside the interval, so the
    weights of the returned regions say how much of the decision they account for.
    """
    m = np.maximum(np.asarray(cam_grid, np.float64), 0.0)
    if mask is not None:
        m = np.where(mask, m, 0.0)
    total = float(m.sum())
    if total <= 0:
        return ()
    above = m >= level * float(m.max())
    edges = np.diff(np.concatenate([[0], above.astype(np.int8), [0]]))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)  # [start, end)
    out = []
    for a, b in zip(starts, ends):
        weight = float(m[a:b].sum() / total)
        if weight >= min_weight:
            out.append(CamRegion(start=float(MODEL_GRID[a]), end=float(MODEL_GRID[b - 1]), weight=weight))
    out.sort(key=lambda r: -r.weight)
    return tuple(out[:max_regions])
