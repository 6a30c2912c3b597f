"""Layer 1, the foundation: the graph IR, types, errors, MLIR text in and out, host-code loading and the
kernel C ABI codes. Imports nothing else of this project."""

from foundation import stablehlo  # noqa: F401  the op views: registered before any op is made
