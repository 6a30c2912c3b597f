"""Empty Python modules for the dialects that torch-mlir's bindings have none for (``mlir_context`` adds this package
to the bindings' dialect search path).

The bindings look for ``torch_mlir.dialects.<dialect>`` each time an op reaches Python (to find its op classes) and
remember only a module they found: without one for StableHLO, every op of an imported module searched the import
path again (half of the time of importing a module of 20000 ops). Found here once, the search is not repeated.
The modules define no op classes: ops stay generic ``OpView``s, as before.
"""
