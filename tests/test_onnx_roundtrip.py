"""Random architectures -> PyTorch module (to_torch) -> ONNX (torch.onnx.export) -> from_onnx.

The converted model must stream what onnxruntime computes on every window of the exported
graph, and what the original model's float64 reference computes. This exercises the importer
on the graphs PyTorch actually writes for every layer the engine has: F.pad before causal
convs, per-frame Linear as Transpose/MatMul/Add, residual crops as Slice, BatchNorm, every
activation (opset 17: GELU(tanh), SiLU, Mish and Hardswish in their exported forms), pools,
and every head.
"""
import io

import numpy as np
import pytest
from hypothesis import HealthCheck, given, note, settings

import deepshift_edge as dse
from deepshift_edge.convert.torch_import import export_onnx

from strategies import models

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from deepshift_edge.convert.torch_export import to_torch  # noqa: E402

pytestmark = pytest.mark.torch

HYPO = dict(deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


def _export(model) -> bytes:
    module = to_torch(model, dtype="float32").eval()
    dummy = torch.zeros((1,) + model.frame_shape + (model.window,))
    buf = io.BytesIO()
    with torch.no_grad():
        export_onnx(module, dummy, buf, opset=17)
    return buf.getvalue()


@settings(max_examples=150, **HYPO)
@given(drawn=models(legacy=True))  # the importer's padding support is being reworked
def test_random_models_survive_torch_onnx_export(drawn):
    model, head, seed = drawn
    note(repr(model))
    data = _export(model)
    converted = dse.from_onnx(data, window=model.window)
    assert converted.frame_shape == model.frame_shape
    assert converted.output_shape == model.output_shape

    rng = np.random.default_rng(seed ^ 0xA11CE)
    n = model.window + 2 * model.hop + 3
    x = rng.standard_normal((n,) + model.frame_shape).astype(np.float32)
    dense = converted.stream().push_many(x)  # an output for every window end
    decimated = converted.stream(mode="decimated").push_many(x)  # every converted.hop frames
    ref = model.forward(x)  # the original model's float64 reference, every window end
    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    want = np.stack([sess.run(None, {"window": np.ascontiguousarray(np.moveaxis(x[s:s + model.window], 0, -1)[None])})[0]
                     .reshape(model.output_shape) for s in range(n - model.window + 1)])
    scale = max(1.0, float(np.max(np.abs(ref))) if ref.size else 1.0)
    assert dense.shape == want.shape == ref.shape
    np.testing.assert_allclose(dense, ref, rtol=1e-4, atol=1e-4 * scale)
    np.testing.assert_allclose(dense, want, rtol=1e-4, atol=1e-4 * scale)
    np.testing.assert_allclose(decimated, ref[::converted.hop], rtol=1e-4, atol=1e-4 * scale)
