"""Tolerances of low-precision comparisons, from the dtype's precision and the computation's depth.

Two computations of one value that each round intermediate results to a dtype `k` times can
differ by up to about 2·k·u relative to the magnitudes involved, u = eps/2 the unit roundoff
(Higham, "Accuracy and Stability of Numerical Algorithms", §3.1: k roundings give a relative
error of at most k·u + O(u²) each). Which values get rounded where depends on the CPU (native
bf16 matmuls with AMX or AVX-512 BF16, emulated ones elsewhere), so a tolerance tuned to one
machine's result fails on another; this one holds on all.
"""

from __future__ import annotations

import ml_dtypes
import tensorflow as tf


def epsilon(dtype) -> float:
    """The dtype's machine epsilon (bfloat16: 2⁻⁷, float16: 2⁻¹⁰, float32: 2⁻²³)."""
    return float(ml_dtypes.finfo(tf.as_dtype(dtype).as_numpy_dtype).eps)


def rounding_tolerance(dtype, roundings: int) -> float:
    """Relative bound on the difference of two computations that each round to `dtype` at most
    `roundings` times: 2 · roundings · eps/2."""
    return roundings * epsilon(dtype)
