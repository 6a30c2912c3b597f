"""``python -m byteir_cat.kernel_check OP --m M --n N --k K --dtype f16 --arch sm_90a``: ``ait_codegen.check``'s
standalone check of one kernel, with every kernel family loaded (ait_codegen itself knows none)."""

from __future__ import annotations

import sys

from ait_codegen.check import main
from families import compile_side

compile_side.load()

if __name__ == "__main__":
    sys.exit(main())
