"""The kernel families, one folder each: ``families/<family>/`` holds a family's op declarations with their reference
semantics and CPU kernels (``declaration.py``), its recognition patterns and the ``RECOGNITION`` it adds to the
pipeline (``patterns.py``), its CUDA rendering with the ``RENDERINGS`` it adds to ait_codegen (``cutlass.py`` and its
kernel sources), and its tests (``tests/``).

``FAMILIES`` below is the one registry list: loading (``families.declarations.load()`` for what reads and runs CAT
ops, ``families.compile_side.load()`` for the compiler) imports each listed family's parts by these names and
registers them with the framework that asks for them (CAT op declarations with ``cat_dialect``, recognition with
``mhlo_to_cat.recognition``, renderings with ``ait_codegen.renderings``), the way a Django project lists its apps.
The order is the order their recognition passes run at each stage and their helper blocks appear in a CUDA
translation unit.
"""

from __future__ import annotations

FAMILIES: tuple[str, ...] = ("gemm", "conv", "rowwise", "attention", "index_copy", "experts", "quantized_gemm")

__all__ = ["FAMILIES"]
