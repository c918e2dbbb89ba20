"""benchmarks.profile_step: a real TensorFlow profiler trace, read back and summed per op type."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from benchmarks.profile_step import kind_of, traced


def test_a_traced_function_s_ops_are_found_and_sorted_by_kind():
    a = tf.constant(np.ones((256, 256), np.float32))
    images = tf.constant(np.ones((8, 16, 16, 4), np.float32))
    kernel = tf.constant(np.ones((3, 3, 4, 4), np.float32))

    @tf.function
    def work():
        return tf.reduce_sum(tf.nn.relu(tf.matmul(a, a))) + tf.reduce_sum(tf.nn.conv2d(images, kernel, 1, "SAME"))

    work()  # traced outside the profile
    wall, times = traced(work, 5)
    assert wall > 0
    kinds = {kind_of(op) for op in times}
    assert {"matmuls", "convolutions", "reductions"} <= kinds, times
    assert all(seconds > 0 for seconds in times.values())
    assert not any(":" in op for op in times)  # op types, not op names


def test_op_types_are_sorted_into_kinds_of_work():
    assert kind_of("_MklNativeConv2DBackpropFilterWithBias") == "convolutions"
    assert kind_of("_MklMatMul") == "matmuls"
    assert kind_of("ReluGrad") == "element-wise"
    assert kind_of("_MklNativeFusedBatchNormEx") == "batch norm"
    assert kind_of("_MklNativeAvgPoolGrad") == "pooling and resizing"
    assert kind_of("ResourceApplyAdam") == "optimizer"
    assert kind_of("Sum") == "reductions"
    assert kind_of("IteratorGetNext") == "other"
