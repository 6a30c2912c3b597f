"""The quantised GEMM family: cat.gemm_rcr_w8, a GEMM over int8 weights with one scale per output channel
(weight-only quantisation), recognised from the custom op a quantised model calls."""
