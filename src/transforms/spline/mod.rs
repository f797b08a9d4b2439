//! STUB: shared spline math (bin search, piecewise-linear, piecewise-quadratic, rational-quadratic).
