"""The GEMM family: cat.gemm (one matrix product and its fused epilogue) and cat.bmm (batched), recognised from
dot_general and rendered on CUTLASS 2.x (sm_80) and 3.x (sm_90a); its GEMM problems feed the tuner and profiler."""
