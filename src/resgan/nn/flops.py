"""Model FLOPs counted from the layer shapes: what one forward pass and one GAN train step cost.

A FLOP here is a multiply or an add: a multiply-add counts 2. Only convolutions and dense layers
are counted (they are >95% of the work in these networks); bias adds, batch norm, activations,
pooling, DiffAugment and spectral normalization's power iteration are left out, as is usual for
model-FLOPs utilization (MFU). Nested layers are walked, so convolutions inside :class:`UpBlock`,
:class:`DownBlock` and ``keras.layers.SpectralNormalization`` count. Each layer is counted once
per forward pass, from the shape it was built for: a layer called twice in one pass would be
undercounted (no layer of ours is).
"""

from __future__ import annotations

import math

import keras

from resgan.nn.keras_private import nested_layers

_CONV = (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D)
_CONV_TRANSPOSE = (keras.layers.Conv1DTranspose, keras.layers.Conv2DTranspose, keras.layers.Conv3DTranspose)


def _built_input_shape(layer) -> tuple:
    # Keras 3 records the shape each layer was built for (our blocks build their sub-layers with
    # the shapes they are called with); there is no public accessor for nested layers.
    shapes = getattr(layer, "_build_shapes_dict", None) or {}
    shape = next(iter(shapes.values()), None)
    if shape is None or any(d is None for d in tuple(shape)[1:]):
        raise ValueError(
            f"cannot count FLOPs of layer {layer.name!r}: it is not built with a fully known "
            f"input shape (got {shape}); build the model first"
        )
    return tuple(shape)


def layer_flops(layer) -> int:
    """Forward FLOPs of one (unnested) layer for a batch of one; 0 for layers without a counted kernel."""
    if isinstance(layer, _CONV):
        shape = _built_input_shape(layer)
        out = layer.compute_output_shape((1, *shape[1:]))
        in_channels = shape[-1] if layer.data_format == "channels_last" else shape[1]
        spatial = out[1:-1] if layer.data_format == "channels_last" else out[2:]
        # every output value: kernel_size x (in_channels / groups) multiply-adds
        per_output = math.prod(layer.kernel_size) * (in_channels // layer.groups)
        return 2 * math.prod(spatial) * layer.filters * per_output
    if isinstance(layer, _CONV_TRANSPOSE):
        shape = _built_input_shape(layer)
        in_channels = shape[-1] if layer.data_format == "channels_last" else shape[1]
        spatial = shape[1:-1] if layer.data_format == "channels_last" else shape[2:]
        # every input value is scattered through the whole kernel into every output channel
        return 2 * math.prod(spatial) * in_channels * math.prod(layer.kernel_size) * layer.filters
    if isinstance(layer, keras.layers.Dense):
        shape = _built_input_shape(layer)
        return 2 * math.prod(shape[1:]) * layer.units  # a Dense applies to the last axis of every position
    if isinstance(layer, (keras.Model, keras.layers.Wrapper)) or not hasattr(layer, "kernel"):
        return 0  # containers (their layers are walked) and layers with no matmul
    raise ValueError(f"cannot count FLOPs of layer {layer.name!r} ({type(layer).__name__}): add a rule for it")


def model_flops(model, batch: int = 1) -> int:
    """Forward-pass FLOPs of ``model`` (a built Keras model or layer) for ``batch`` examples.

    2 x the multiply-adds of every Conv1D/2D/3D (and transpose) and Dense layer, nested layers
    included, from the shapes the layers were built for.
    """
    layers = nested_layers(model, include_self=True)
    return batch * sum(layer_flops(layer) for layer in layers)


def train_step_flops(generator, discriminator, batch: int, d_steps: int = 1) -> int:
    """Model FLOPs of one :meth:`resgan.gan.trainer.GAN.train_step` at ``batch`` images per update.

    With ``G`` and ``D`` the forward FLOPs of one example (:func:`model_flops`), and a backward pass
    costing 2 forward passes when it reaches the weights (input and weight gradients) and 1 when it
    reaches only the input::

        D step = G forward, no backprop                    1 G
               + D on real and on fake, backprop to weights 3 D + 3 D
        G step = G forward and backprop to its weights      3 G
               + D forward, backprop to its input only      2 D
        step   = batch * (d_steps * (G + 6 D) + 3 G + 2 D)

    The gradient penalty of ``wasserstein_gp`` (a double backprop through D) is not included.
    """
    g, d = model_flops(generator), model_flops(discriminator)
    return batch * (d_steps * (g + 6 * d) + 3 * g + 2 * d)
