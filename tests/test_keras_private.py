"""The private Keras internals resgan uses (resgan.nn.keras_private) are still there: an upgrade that removes
one fails here, by name, instead of changing the maths silently (an override Keras no longer calls)."""

from __future__ import annotations

import keras
import numpy as np

from resgan.nn import keras_private


def test_every_private_keras_internal_is_still_there():
    missing = keras_private.missing()
    assert not missing, (
        f"Keras {keras.__version__} lacks {', '.join(missing)}, which resgan.nn.keras_private "
        "uses: port those functions to this Keras before upgrading"
    )


def test_reduced_adam_replaces_the_cross_replica_sum_and_applies_gradients_as_given():
    # Keras' own method sums over replicas; ours hands the (already summed) gradients on unchanged.
    assert keras_private.ReducedAdam._all_reduce_sum_gradients is not keras.optimizers.Adam._all_reduce_sum_gradients
    pairs = [(np.float32(1.0), "v")]
    assert keras_private.ReducedAdam(learning_rate=0.1)._all_reduce_sum_gradients(pairs) == pairs


def test_nested_layers_finds_layers_inside_nested_models_once():
    inner = keras.Sequential(
        [keras.Input((4,)), keras.layers.SpectralNormalization(keras.layers.Dense(3))], name="inner"
    )
    outer = keras.Sequential([keras.Input((4,)), inner, keras.layers.Dense(2)], name="outer")
    names = [type(layer).__name__ for layer in keras_private.nested_layers(outer)]
    assert names.count("SpectralNormalization") == 1 and names.count("Dense") == 2
    assert type(keras_private.nested_layers(outer, include_self=True)[0]).__name__ == "Sequential"


def test_first_replica_writes_sets_the_aggregation():
    variable = keras.Variable(np.zeros(3, np.float32))
    keras_private.first_replica_writes(variable)
    assert variable.aggregation == "only_first_replica"
