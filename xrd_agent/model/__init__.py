"""The identification model: network, augmentation, training, inference, evaluation."""
