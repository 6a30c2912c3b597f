"""Fusion groups -> linalg -> fused loops -> LLVM IR, for the host CPU (JIT) or NVPTX (PTX). Compile side:
it needs the MLIR bindings. The compiled host code is loaded by ``foundation.host_code``, which the
runtime uses too."""
