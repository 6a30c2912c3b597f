"""The MODEL argument of the CLI: an .mlir file, or ``path/to/file.py:factory`` returning
``(model, example_inputs)``."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

from foundation.errors import CompileError


def load_factory(spec: str) -> tuple[Any, tuple]:
    path_text, _, factory_name = spec.rpartition(":")
    path = Path(path_text)
    if not path.exists():
        raise CompileError(f"{path}: no such file")
    if not factory_name.isidentifier():
        raise CompileError(f"{spec}: expected path/to/file.py:factory")
    module_name = f"_byteir_cat_model_{abs(hash(str(path.resolve())))}"
    mod_spec = importlib.util.spec_from_file_location(module_name, path)
    if mod_spec is None or mod_spec.loader is None:
        raise CompileError(f"{path}: not a Python file")
    module = importlib.util.module_from_spec(mod_spec)
    sys.modules[module_name] = module
    try:
        mod_spec.loader.exec_module(module)
    except Exception as e:
        raise CompileError(f"{path}: importing it raised {type(e).__name__}: {_first_line(e)}") from None
    factory = getattr(module, factory_name, None)
    if not callable(factory):
        raise CompileError(f"{path}: has no function {factory_name}()")
    try:
        result = factory()
    except Exception as e:
        raise CompileError(f"{spec}: the factory raised {type(e).__name__}: {_first_line(e)}") from None
    if not (isinstance(result, tuple) and len(result) == 2):
        raise CompileError(f"{spec}: the factory must return (model, example_inputs)")
    model, inputs = result
    import torch

    if isinstance(inputs, torch.Tensor):
        inputs = (inputs,)
    return model, tuple(inputs)


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else "(no message)"


def resolve(model_arg: str) -> tuple[Any, tuple | None]:
    """(model or .mlir path, example inputs or None) for a CLI MODEL argument."""
    if model_arg.endswith(".mlir") or (":" not in model_arg and Path(model_arg).suffix != ".py"):
        path = Path(model_arg)
        if not path.exists():
            raise CompileError(f"{path}: no such file")
        return path, None
    if model_arg.endswith(".py"):
        raise CompileError(f"{model_arg}: name the factory as {model_arg}:factory")
    return load_factory(model_arg)


def with_params(model: Any, inputs: tuple | None, params_path: str | None) -> Any:
    """``model`` with the arguments named in the .npz file ``params_path`` bound to its arrays (``--params``):
    the weights JAX passes as arguments become the artifact's own."""
    if params_path is None:
        return model
    import numpy as np

    from byteir_cat.api import to_stablehlo
    from frontends import bind_params

    path = Path(params_path)
    if not path.exists():
        raise CompileError(f"--params {path}: no such file")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except Exception as e:
        why = f"{type(e).__name__}: {_first_line(e)}"
        raise CompileError(f"--params {path}: not a readable .npz file ({why})") from None
    return bind_params(to_stablehlo(model, inputs), arrays)
