"""The domain classifier: a small CNN whose ``features`` layer is the offline FID/KID/PR embedding.

Only built-in Keras layers, so the saved ``.keras`` file loads with ``safe_mode=True``.
"""

from __future__ import annotations

FEATURE_LAYER = "features"  # the penultimate Dense layer read by resgan.metrics.features.ClassifierFeatures
MIN_SIDE = 4  # px: downsample until the feature map is this small, then flatten


def build_classifier(input_shape: tuple[int, int, int], num_classes: int, width: int = 32,
                     feature_dim: int = 128):
    """A compact CNN for uint8-valued ``input_shape`` (H, W, C) images, ``num_classes`` softmax outputs.

    One conv-BN-ReLU-maxpool block per halving of the image until it is 4 px a side (3 blocks at
    32 px), channels ``width * 2**i`` capped at ``8 * width``; then Flatten, a Dense embedding
    of ``feature_dim`` units, its batch norm (the ``features`` layer), ReLU, dropout and the
    softmax head ``probs``.

    The features are the batch-normalized embedding before the ReLU: no dead (constant zero)
    dimensions, so the covariance is well conditioned for FID, and about unit scale per dimension
    on real data, so FID and KID (whose cubic kernel grows with the feature scale) read like
    their Inception counterparts rather than in arbitrary units.
    """
    import keras
    from keras import layers

    height, width_px, _ = input_shape
    inputs = keras.Input(shape=tuple(input_shape), name="images")
    x = layers.Rescaling(1.0 / 255.0, name="to_unit")(inputs)  # takes raw 0..255 pixel values
    side, block = min(height, width_px), 0
    while side > MIN_SIDE or block == 0:
        channels = width * 2 ** min(block, 3)
        x = layers.Conv2D(channels, 3, padding="same", use_bias=False, name=f"conv{block}")(x)
        # momentum 0.9 (not 0.99): with a few hundred steps the moving statistics must converge,
        # or test-time accuracy trails training accuracy badly.
        x = layers.BatchNormalization(momentum=0.9, name=f"bn{block}")(x)
        x = layers.ReLU(name=f"relu{block}")(x)
        if side > MIN_SIDE:
            x = layers.MaxPooling2D(2, name=f"pool{block}")(x)
            side //= 2
        block += 1
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(feature_dim, use_bias=False, name="embedding")(x)
    features = layers.BatchNormalization(momentum=0.9, name=FEATURE_LAYER)(x)
    x = layers.ReLU(name="features_relu")(features)
    x = layers.Dropout(0.3, name="dropout")(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="probs")(x)
    return keras.Model(inputs, outputs, name="domain_classifier")
