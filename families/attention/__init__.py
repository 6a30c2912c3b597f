"""The attention family: cat.attention (softmax(Q K^T * scale + mask) V, with grouped heads and output permutes),
recognised from bmm, softmax, bmm; our own fused kernel, or CUTLASS's FMHA on sm_80 and sm_90a."""
