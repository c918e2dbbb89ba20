"""Every use of Keras' private internals (Keras 3.15 on TensorFlow), in one place, each with its reason.

Public Keras has no way to say these things; each use is one small function here, and
:func:`missing` lists the internals an upgrade removed, which ``tests/test_keras_private.py`` turns into
one clear failure instead of a silent change of the maths (an override that is no longer called).
"""

from __future__ import annotations

import keras
import tensorflow as tf

# The internals used, as (owner, attribute): what :func:`missing` checks.
REDUCE_HOOK = "_all_reduce_sum_gradients"  # the TensorFlow optimizer's cross-replica sum of gradients
FLATTEN = "_flatten_layers"  # every nested layer once
AGGREGATION = "_aggregation"  # a variable's cross-replica aggregation (KerasVariable and tf.Variable)


class ReducedAdam(keras.optimizers.Adam):
    """Adam that takes gradients already summed over replicas (``GAN._reduce_gradients``) instead of
    all-reducing them itself: one all-reduce per update, and the step can report the global norm."""

    def _all_reduce_sum_gradients(self, grads_and_vars):
        return list(grads_and_vars)


def nested_layers(model: keras.Model, include_self: bool = False) -> list:
    """Every layer inside ``model`` (nested models' layers too), each once; ``model`` itself with
    ``include_self``."""
    return list(getattr(model, FLATTEN)(include_self=include_self, recursive=True))


def first_replica_writes(variable) -> None:
    """Let replica-context assignments to ``variable`` stand as the first replica's
    (``ONLY_FIRST_REPLICA``): a KerasVariable's aggregation is fixed at creation in its public API, and
    MirroredStrategy refuses a replica-context assign to a variable with no aggregation at all."""
    setattr(variable, AGGREGATION, "only_first_replica")
    inner = getattr(variable, "_value", None)
    if isinstance(inner, tf.distribute.DistributedValues):
        setattr(inner, AGGREGATION, tf.VariableAggregation.ONLY_FIRST_REPLICA)


def missing() -> list[str]:
    """The internals above that this Keras lacks, as ``owner.attribute`` (empty when all are there)."""
    found = []
    base = keras.optimizers.Adam.__mro__[1:]  # ReducedAdam's override must replace a method Keras calls
    if not any(REDUCE_HOOK in vars(cls) for cls in base):
        found.append(f"keras.optimizers.Adam.{REDUCE_HOOK}")
    if not hasattr(keras.layers.Layer, FLATTEN):
        found.append(f"keras.layers.Layer.{FLATTEN}")
    variable = keras.Variable(0.0)
    if not hasattr(variable, AGGREGATION):
        found.append(f"keras.Variable.{AGGREGATION}")
    return found
