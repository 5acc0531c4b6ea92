"""Write the Keras-built .tflite fixtures of tests/test_tflite_import.py into tests/data/tflite/.

Run it with TensorFlow, in a venv of its own (tensorflow-cpu pins clash with torch's):

    python3 -m venv /tmp/venv-tf && /tmp/venv-tf/bin/pip install tensorflow-cpu
    /tmp/venv-tf/bin/python tests/make_tflite_fixtures.py [outdir]

Each architecture is written as Keras writes it (small channel counts, random weights and
BatchNorm statistics so the folding is exercised), converted with ``tf.lite.TFLiteConverter``
twice: float32, and full integer (a representative dataset of random windows, int8 weights
per channel and int8 activations, ``supported_ops = [TFLITE_BUILTINS_INT8]``; input and output
stay float32 (QUANTIZE/DEQUANTIZE at the ends) except in ``har_cnn_int8io``, whose input and
output are int8), and ``har_cnn_dynamic`` (dynamic-range quantization: int8 weights, float
activations, which from_tflite refuses). ``manifest.json`` records the TensorFlow version and each file's window.

* ``har_cnn``: the Keras 1-D HAR CNN (two Conv1D + ReLU, Dropout, MaxPooling1D, Flatten, Dense
  + ReLU, Dense + softmax), input (T, C) = (64, 6).
* ``ds_cnn``: DS-CNN for keyword spotting as ARM's ML-KWS defines it (Conv2D (10, 4) stride 2
  'same' + BN + ReLU, then depthwise 3x3 'same' + BN + ReLU + pointwise 1x1 + BN + ReLU blocks,
  AveragePooling2D over what is left, Flatten, Dense + softmax), on (T, F, 1) = (49, 10, 1) MFCCs.
* ``ei_conv1d``: Edge Impulse's default 1-D conv classifier (Reshape of the flat features to
  (T, 13), Conv1D(8, 3, 'same') + ReLU, MaxPooling1D(2, 2, 'same'), Dropout, Conv1D(16, 3,
  'same') + ReLU, MaxPooling1D, Dropout, Flatten, Dense + softmax); input the flat (T * 13,).
* ``tcn``: a TCN written in Keras (keras-tcn's residual block: two causal dilated Conv1D +
  ReLU, a 1x1 conv on the skip when the channels change, Add, ReLU; dilations 1, 2, 4; the
  last time step, ``x[:, -1, :]``, then Dense).
* ``keras_ops``: the other Keras layers sensor models are made of, in one graph (see its docstring).
* ``conv2d_stereo``: a 2-D CNN on a two-channel (T, F, 2) input (frames are pushed as (C, F)).
"""
import json
import os
import sys

import numpy as np
import tensorflow as tf
from tensorflow import keras
from tensorflow.keras import layers

HERE = os.path.dirname(os.path.abspath(__file__))


def _randomize_bn(model, rng):
    for layer in model.layers:
        if isinstance(layer, layers.BatchNormalization):
            g, b, m, v = layer.get_weights()
            layer.set_weights([rng.uniform(0.5, 1.5, g.shape), rng.normal(0, 0.2, b.shape),
                               rng.normal(0, 0.2, m.shape), rng.uniform(0.5, 2.0, v.shape)])


def har_cnn(T=64, C=6, classes=6):
    x = keras.Input((T, C))
    h = layers.Conv1D(16, 3, activation="relu")(x)
    h = layers.Conv1D(16, 3, activation="relu")(h)
    h = layers.Dropout(0.5)(h)
    h = layers.MaxPooling1D(2)(h)
    h = layers.Flatten()(h)
    h = layers.Dense(32, activation="relu")(h)
    return keras.Model(x, layers.Dense(classes, activation="softmax")(h)), (T, C)


def ds_cnn(T=49, F=10, classes=12, ch=16, blocks=4):
    x = keras.Input((T, F, 1))
    h = layers.Conv2D(ch, (10, 4), strides=(2, 2), padding="same", use_bias=True)(x)
    h = layers.ReLU()(layers.BatchNormalization()(h))
    for _ in range(blocks):
        h = layers.DepthwiseConv2D((3, 3), padding="same")(h)
        h = layers.ReLU()(layers.BatchNormalization()(h))
        h = layers.Conv2D(ch, (1, 1), padding="same")(h)
        h = layers.ReLU()(layers.BatchNormalization()(h))
    h = layers.AveragePooling2D(pool_size=(int(h.shape[1]), int(h.shape[2])))(h)
    h = layers.Flatten()(h)
    return keras.Model(x, layers.Dense(classes, activation="softmax")(h)), (T, F, 1)


def ei_conv1d(T=50, C=13, classes=4):
    x = keras.Input((T * C,))
    h = layers.Reshape((T, C))(x)
    h = layers.Conv1D(8, kernel_size=3, activation="relu", padding="same")(h)
    h = layers.MaxPooling1D(pool_size=2, strides=2, padding="same")(h)
    h = layers.Dropout(0.25)(h)
    h = layers.Conv1D(16, kernel_size=3, activation="relu", padding="same")(h)
    h = layers.MaxPooling1D(pool_size=2, strides=2, padding="same")(h)
    h = layers.Dropout(0.25)(h)
    h = layers.Flatten()(h)
    return keras.Model(x, layers.Dense(classes, activation="softmax", name="y_pred")(h)), (T * C,)


def tcn(T=48, C=3, classes=5, ch=12, k=3, dilations=(1, 2, 4)):
    x = keras.Input((T, C))
    h = x
    for d in dilations:
        skip = h
        r = layers.Conv1D(ch, k, dilation_rate=d, padding="causal", activation="relu")(h)
        r = layers.Conv1D(ch, k, dilation_rate=d, padding="causal", activation="relu")(r)
        if skip.shape[-1] != ch:
            skip = layers.Conv1D(ch, 1)(skip)
        h = layers.ReLU()(layers.Add()([skip, r]))
    h = layers.Lambda(lambda t: t[:, -1, :])(h)
    return keras.Model(x, layers.Dense(classes)(h)), (T, C)


def keras_ops(T=40, C=4, classes=3):
    """Not a published architecture: the other Keras layers a sensor model is made of, in one
    graph (a BatchNorm on the input, strided 'same' conv with ReLU6, SeparableConv1D, a gated
    tanh * sigmoid branch of causal convs, Concatenate, a Dense applied per frame, hard swish,
    'same' average pooling, GlobalAveragePooling1D)."""
    x = keras.Input((T, C))
    h = layers.BatchNormalization()(x)
    h = layers.Conv1D(8, 5, strides=2, padding="same")(h)
    h = layers.ReLU(max_value=6.0)(h)
    h = layers.SeparableConv1D(8, 3, padding="same", activation="relu")(h)
    a = layers.Conv1D(8, 3, padding="causal", activation="tanh")(h)
    b = layers.Conv1D(8, 3, padding="causal", activation="sigmoid")(h)
    h = layers.Concatenate()([h, layers.Multiply()([a, b])])
    h = layers.Dense(6)(h)
    h = layers.Activation("hard_swish")(h)
    h = layers.AveragePooling1D(2, padding="same")(h)
    h = layers.GlobalAveragePooling1D()(h)
    return keras.Model(x, layers.Dense(classes)(h)), (T, C)


def conv2d_stereo(T=20, F=8, C=2, classes=3):
    """A 2-D CNN on a two-channel (T, F) input (e.g. two microphones' spectrograms): Conv2D
    'same' + ReLU, MaxPooling2D, a strided Conv2D, GlobalAveragePooling2D, Dense."""
    x = keras.Input((T, F, C))
    h = layers.Conv2D(6, (3, 3), padding="same", activation="relu")(x)
    h = layers.MaxPooling2D((2, 2))(h)
    h = layers.Conv2D(6, (3, 3), strides=(1, 2), activation="relu")(h)
    h = layers.GlobalAveragePooling2D()(h)
    return keras.Model(x, layers.Dense(classes)(h)), (T, F, C)


def convert(model, shape, int8, rng, int8_io=False, dynamic=False):
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    if dynamic:  # dynamic range: int8 weights, float activations (refused by from_tflite)
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
    elif int8:
        def rep():
            for _ in range(64):
                yield [rng.standard_normal((1,) + shape).astype(np.float32)]
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = rep
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if int8_io:
            conv.inference_input_type = tf.int8
            conv.inference_output_type = tf.int8
    return conv.convert()


def main(out):
    os.makedirs(out, exist_ok=True)
    manifest = {"tensorflow": tf.__version__, "script": "tests/make_tflite_fixtures.py", "files": {}}
    for k, build in enumerate([har_cnn, ds_cnn, ei_conv1d, tcn, keras_ops, conv2d_stereo]):
        tf.keras.utils.set_random_seed(k)
        rng = np.random.default_rng(k)
        model, shape = build()
        _randomize_bn(model, rng)
        variants = [("float", False, False), ("int8", True, False)]
        if build is har_cnn:
            variants += [("int8io", True, True), ("dynamic", False, False)]
        for tag, int8, io in variants:
            data = convert(model, shape, int8, np.random.default_rng(100 + k), io, dynamic=tag == "dynamic")
            name = f"{build.__name__}_{tag}.tflite"
            with open(os.path.join(out, name), "wb") as fh:
                fh.write(data)
            manifest["files"][name] = {"input": list(shape), "bytes": len(data)}
            print(f"{name}: {len(data)} bytes")
    with open(os.path.join(out, "manifest.json"), "w") as fh:
        json.dump(manifest, fh, indent=1, sort_keys=True)
        fh.write("\n")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "data", "tflite"))
