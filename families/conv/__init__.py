"""The convolution family: cat.conv (1-D and 2-D NHWC forward convolution with bias, activation and residual
epilogues) on CUTLASS implicit GEMM, or our own direct kernel for depthwise and grouped convolutions."""
