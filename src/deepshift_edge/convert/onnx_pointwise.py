"""Per-frame elementwise ONNX subgraphs, identified by what they compute.

Exporters write the same activation in many shapes: ``Gelu`` at opset 20, ``0.5*x*(1+Erf(x/sqrt2))``
or ``0.5*x*(1+Tanh(0.79788*(x+0.044715*Pow(x,3))))`` below it, SiLU as ``Mul(x, Sigmoid(x))``,
ReLU6 as ``Clip(0, 6)``, a BatchNorm as ``Sub``/``Div``/``Mul``/``Add`` with constants. Instead of
matching each spelling, the importer collects the elementwise nodes that read one computed tensor
``x`` into an expression tree, and identifies the function numerically:

    f(x) = g(a * x + b)

with ``a``, ``b`` per channel (folded into the preceding Conv/Linear/BatchNorm) and ``g`` one of
the engine's activations (or the identity). ``g`` is evaluated in float64 on a grid of inputs
covering every activation's bends and saturations and must agree to ``TOLERANCE``; the tanh and erf
forms of GELU differ by 1.6e-4 there, so they are told apart. Anything else is reported with the
nodes involved and the closest activation.
"""
from __future__ import annotations

import math
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..nn import layers as L

__all__ = ["Expr", "ELEMENTWISE", "bind", "identify", "Unidentified", "TOLERANCE"]

TOLERANCE = 1e-5  # max |f - g| / max(1, |g|) on the probe grid

# Probe inputs: dense where activations bend (|x| < 8), plus far points for the tails.
PROBE = np.concatenate([np.linspace(-8.0, 8.0, 641), [-40.0, -20.0, -12.0, 12.0, 20.0, 40.0]])


def _erf(x):
    return np.vectorize(math.erf, otypes=[np.float64])(x)


def _clip(x, lo=None, hi=None):
    lo = -np.inf if lo is None else lo
    hi = np.inf if hi is None else hi
    return np.minimum(np.maximum(x, lo), hi)


# ONNX op -> (numpy function of its inputs, attribute reader). Every op here maps elementwise.
ELEMENTWISE: Dict[str, Callable] = {
    "Add": lambda a, b: a + b,
    "Sub": lambda a, b: a - b,
    "Mul": lambda a, b: a * b,
    "Div": lambda a, b: a / b,
    "Pow": lambda a, b: np.power(a, b),
    "Sqrt": np.sqrt,
    "Exp": np.exp,
    "Log": np.log,
    "Neg": np.negative,
    "Abs": np.abs,
    "Reciprocal": lambda a: 1.0 / a,
    "Erf": _erf,
    "Tanh": np.tanh,
    "Sigmoid": lambda a: 1.0 / (1.0 + np.exp(-a)),
    "Softplus": lambda a: np.logaddexp(0.0, a),
    "Relu": lambda a: np.maximum(a, 0.0),
    "Max": lambda *a: np.maximum.reduce(np.broadcast_arrays(*a)),
    "Min": lambda *a: np.minimum.reduce(np.broadcast_arrays(*a)),
    "Clip": _clip,
    # comparisons and selection: how the dynamo exporter writes Softplus(beta, threshold)
    "Greater": lambda a, b: np.greater(a, b).astype(np.float64),
    "Less": lambda a, b: np.less(a, b).astype(np.float64),
    "GreaterOrEqual": lambda a, b: np.greater_equal(a, b).astype(np.float64),
    "LessOrEqual": lambda a, b: np.less_equal(a, b).astype(np.float64),
    "Where": lambda c, a, b: np.where(np.asarray(c) != 0, a, b),
    # ops with attributes: the importer binds them (see `bind`)
    "LeakyRelu": None, "HardSigmoid": None, "HardSwish": None, "Gelu": None, "Elu": None,
    "Celu": None, "Selu": None,
    "Softsign": lambda a: a / (1.0 + np.abs(a)),
    "Mish": lambda a: a * np.tanh(np.logaddexp(0.0, a)),
    "Identity": lambda a: a, "Dropout": lambda a, *_: a,
    "Cast": None,  # to float or double: the identity (see `bind`)
}


def bind(op: str, attrs: dict) -> Callable:
    """The numpy function of an elementwise ONNX op, attributes applied."""
    if op == "LeakyRelu":
        alpha = float(attrs.get("alpha", 0.01))
        return lambda a: np.where(a >= 0, a, a * alpha)
    if op == "HardSigmoid":
        alpha, beta = float(attrs.get("alpha", 0.2)), float(attrs.get("beta", 0.5))
        return lambda a: np.clip(alpha * a + beta, 0.0, 1.0)
    if op == "HardSwish":
        return lambda a: a * np.clip(a / 6.0 + 0.5, 0.0, 1.0)
    if op == "Elu":
        alpha = float(attrs.get("alpha", 1.0))
        return lambda a: np.where(a >= 0, a, alpha * np.expm1(np.minimum(a, 0.0)))
    if op == "Cast":  # float32/float64 values stay what they are; other types would change them
        return (lambda a: a) if attrs.get("to") in (1, 11) else None
    if op == "Celu":
        alpha = float(attrs.get("alpha", 1.0))
        return lambda a: np.where(a >= 0, a, alpha * np.expm1(np.minimum(a, 0.0) / alpha))
    if op == "Selu":
        alpha = float(attrs.get("alpha", 1.67326319217681884765625))
        gamma = float(attrs.get("gamma", 1.05070102214813232421875))
        return lambda a: gamma * np.where(a > 0, a, alpha * np.expm1(np.minimum(a, 0.0)))
    if op == "Gelu":
        approx = attrs.get("approximate", "none")
        approx = approx.decode() if isinstance(approx, bytes) else approx
        return L.GELU(approx).forward if approx in ("none", "tanh") else None
    if op == "Clip" and ("min" in attrs or "max" in attrs):  # opset < 11: bounds are attributes
        lo, hi = attrs.get("min"), attrs.get("max")
        return lambda a: _clip(a, lo, hi)
    return ELEMENTWISE[op]


class Expr:
    """A node of an elementwise expression over one variable (the tensor the subgraph reads).

    ``fn is None`` marks the variable itself; arguments are Exprs or per-channel float64
    constants already shaped to broadcast against the variable.
    """

    def __init__(self, fn: Optional[Callable], args: Sequence = (), op: str = "x", nodes=()):
        self.fn, self.args, self.op = fn, tuple(args), op
        self.nodes: Tuple[str, ...] = tuple(nodes)  # ONNX node names, for messages

    def evaluate(self, x: np.ndarray, memo=None) -> np.ndarray:
        memo = {} if memo is None else memo
        if self.fn is None:
            return x
        key = id(self)
        if key not in memo:
            vals = [a.evaluate(x, memo) if isinstance(a, Expr) else a for a in self.args]
            with np.errstate(all="ignore"):
                memo[key] = np.asarray(self.fn(*vals), dtype=np.float64)
        return memo[key]

    def all_nodes(self) -> List[str]:
        seen, out = set(), []

        def walk(e):
            if id(e) in seen:
                return
            seen.add(id(e))
            for a in e.args:
                if isinstance(a, Expr):
                    walk(a)
            out.extend(n for n in e.nodes if n not in out)
        walk(self)
        return out

    def uses_variable(self) -> bool:
        return self.fn is None or any(isinstance(a, Expr) and a.uses_variable() for a in self.args)


_LINEAR_OPS = ("Add", "Sub", "Mul", "Div", "Neg", "Identity", "Dropout")


def _is_affine(e: Expr) -> bool:
    """Structurally affine in the variable: sums, and products/quotients by constants."""
    if e.fn is None:
        return True
    if e.op not in _LINEAR_OPS:
        return False
    exprs = [a for a in e.args if isinstance(a, Expr)]
    if e.op in ("Mul", "Div") and len(exprs) > 1:  # a product of two terms in x
        return False
    if e.op == "Div" and not isinstance(e.args[0], Expr):  # constant / x
        return False
    return all(_is_affine(a) for a in exprs)


def _maximal_affine(e: Expr, out: list):
    if _is_affine(e):
        if all(o is not e for o in out):
            out.append(e)
        return
    for a in e.args:
        if isinstance(a, Expr) and a.uses_variable():
            _maximal_affine(a, out)


def _substitute(e: Expr, inner: Expr, var: Expr) -> Expr:
    if e is inner:
        return var
    if e.fn is None:
        return e
    return Expr(e.fn, [_substitute(a, inner, var) if isinstance(a, Expr) else a for a in e.args],
                e.op, e.nodes)


def _catalogue(leaky_slope: Optional[float], tail_lo: Optional[float] = None,
               tail_hi: Optional[float] = None, at_zero: Optional[float] = None):
    """The engine's activations to try. Parameters are read off the probe: LeakyReLU's slope
    at -1, ELU/CELU's alpha and Hardtanh's bounds from the far tails."""
    cands = [("ReLU", L.ReLU), ("ReLU6", L.ReLU6), ("Sigmoid", L.Sigmoid), ("Tanh", L.Tanh),
             ("HardSwish", L.HardSwish), ("Hardsigmoid", L.Hardsigmoid), ("SiLU", L.SiLU),
             ("Mish", L.Mish), ("GELU", L.GELU), ("GELU(tanh)", lambda: L.GELU("tanh")),
             ("SELU", L.SELU), ("Softplus", L.Softplus), ("Softsign", L.Softsign)]
    if leaky_slope is not None and math.isfinite(leaky_slope):
        cands.append((f"LeakyReLU({leaky_slope:g})", lambda: L.LeakyReLU(leaky_slope)))
    if at_zero is not None and math.isfinite(at_zero) and at_zero > 0:  # Softplus(beta)(0) = log(2) / beta
        beta = math.log(2.0) / at_zero
        cands.append((f"Softplus({beta:g})", lambda: L.Softplus(beta)))
    if tail_lo is not None and math.isfinite(tail_lo) and tail_lo < 0:
        alpha = -tail_lo
        cands.append((f"ELU({alpha:g})", lambda: L.ELU(alpha)))
        cands.append((f"CELU({alpha:g})", lambda: L.CELU(alpha)))
    if tail_lo is not None and tail_hi is not None and math.isfinite(tail_lo) and math.isfinite(tail_hi) \
            and tail_lo < tail_hi:
        cands.append((f"Hardtanh({tail_lo:g}, {tail_hi:g})", lambda: L.Hardtanh(tail_lo, tail_hi)))
    return cands


def _deviation(got: np.ndarray, want: np.ndarray) -> float:
    want = np.broadcast_to(want, got.shape)
    bad = ~np.isfinite(got)
    if np.any(bad & np.isfinite(want)):
        return math.inf
    ok = ~bad
    return float(np.max(np.abs(got[ok] - want[ok]) / np.maximum(1.0, np.abs(want[ok])), initial=0.0))


class Unidentified(ValueError):
    """The subgraph is not (affine then) one of the engine's activations."""


def identify(expr: Expr, var_shape: tuple) -> List[tuple]:
    """Split ``expr`` into steps ``[(scale, shift, layer), ...]``, applied in order, each
    f(x) = layer(scale * x + shift). A chain of activations (``Sigmoid(LeakyRelu(x))``) is cut
    at a subexpression every use of ``x`` goes through, outermost cut first.
    """
    if not _has_channel_constants(expr):  # same function on every channel: probe one
        var_shape = (1,) * len(var_shape)
    try:
        return [_identify_one(expr, var_shape)]
    except Unidentified as first:
        reason = first
        for cut in _cuts(expr):
            try:
                head = identify(cut, var_shape)
            except Unidentified:
                continue
            outer = _substitute(expr, cut, Expr(None))
            try:
                return head + identify(outer, var_shape)
            except Unidentified as exc:  # the cut is fine: blame what comes after it
                if reason is first:
                    reason = exc
        if reason is first:
            raise Unidentified(f"nodes {expr.all_nodes()}: {first}") from None
        raise reason


def _has_channel_constants(e: Expr) -> bool:
    subs: dict = {}
    _subexpressions(e, subs)
    return any(isinstance(a, np.ndarray) and a.size > 1 for x in subs.values() for a in x.args)


def _subexpressions(e: Expr, out: dict):
    if id(e) not in out:
        out[id(e)] = e
        for a in e.args:
            if isinstance(a, Expr):
                _subexpressions(a, out)


def _only_through(e: Expr, cut: Expr) -> bool:
    """Every path from `e` to the variable passes through `cut`."""
    if e is cut:
        return True
    if e.fn is None:
        return False
    return all(_only_through(a, cut) for a in e.args if isinstance(a, Expr))


def _cuts(expr: Expr) -> List[Expr]:
    subs: dict = {}
    _subexpressions(expr, subs)
    cands = [e for e in subs.values() if e is not expr and e.fn is not None and e.uses_variable()
             and _only_through(expr, e)]
    return sorted(cands, key=lambda e: -len(e.all_nodes()))


def _identify_one(expr: Expr, var_shape: tuple):
    """``(scale, shift, layer)`` with f(x) = layer(scale * x + shift).

    ``var_shape``: the variable's shape without the batch axis, every axis but the channel
    axis set to 1 (e.g. (C, 1) for (1, C, T) data): constants are per channel, so one probe
    column per channel is enough. ``scale``/``shift`` are per-channel float64 vectors (None
    when neutral), ``layer`` an activation instance or None. Raises :class:`Unidentified`.
    """
    grid = PROBE.reshape((-1,) + (1,) * len(var_shape))
    x = np.ascontiguousarray(np.broadcast_to(grid, (len(PROBE),) + tuple(var_shape)), np.float64)

    def columns(e, at=None):  # (probe, channel) values of e at the probe (or constant) inputs
        v = e.evaluate(x if at is None else np.full_like(x, at))
        return np.broadcast_to(v, x.shape).reshape(len(PROBE), -1)

    def fit_affine(e):  # per-channel (a, b) with e(x) = a x + b, or None
        b = columns(e, 0.0)[0]
        a = columns(e, 1.0)[0] - b
        if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
            return None
        pred = a[None, :] * columns(Expr(None)) + b[None, :]
        return (a, b) if _deviation(columns(e), pred) <= TOLERANCE else None

    whole = fit_affine(expr)
    if whole is not None:
        return _vec(whole[0], 1.0), _vec(whole[1], 0.0), None

    # f = g(inner) where inner is the one affine subexpression feeding everything, if any
    parts: list = []
    _maximal_affine(expr, parts)
    inner = parts[0] if len(parts) == 1 else Expr(None)
    outer = _substitute(expr, inner, Expr(None)) if inner.fn is not None else expr
    ab = fit_affine(inner) if inner.fn is not None else (np.ones(x[0].size), np.zeros(x[0].size))
    if ab is None:
        raise Unidentified("its inner sum is not a per-channel scale and shift")
    z = columns(Expr(None))
    got = columns(outer)
    # LeakyReLU's slope, read off at z = -1 (must be the same for every channel)
    slopes = -got[int(np.argmin(np.abs(PROBE + 1.0)))]
    slope = float(slopes[0]) if np.allclose(slopes, slopes[0], rtol=1e-6, atol=1e-9) else None
    lo_row, hi_row = got[int(np.argmin(PROBE))], got[int(np.argmax(PROBE))]
    tail_lo = float(lo_row[0]) if np.allclose(lo_row, lo_row[0], rtol=1e-6, atol=1e-9) else None
    tail_hi = float(hi_row[0]) if np.allclose(hi_row, hi_row[0], rtol=1e-6, atol=1e-9) else None
    zero_row = got[int(np.argmin(np.abs(PROBE)))]
    at_zero = float(zero_row[0]) if np.allclose(zero_row, zero_row[0], rtol=1e-6, atol=1e-12) else None
    best = (math.inf, "")
    for name, make in _catalogue(slope, tail_lo, tail_hi, at_zero):
        layer = make()
        dev = _deviation(got, layer.forward(z))
        if dev <= TOLERANCE:
            return _vec(ab[0], 1.0), _vec(ab[1], 0.0), layer
        best = min(best, (dev, name))
    names = ", ".join(n for n, _ in _catalogue(None)) + ", LeakyReLU(alpha), ELU(alpha), CELU(alpha), " \
        "Hardtanh(min, max)"
    raise Unidentified(f"it is not a per-channel scale and shift followed by one of the engine's "
                       f"activations ({names}); closest: {best[1]}, off by {best[0]:.2g} "
                       f"(tolerance {TOLERANCE:g})")


def _vec(v: np.ndarray, neutral: float):
    v = np.asarray(v, np.float64)
    return None if np.all(v == neutral) else v
