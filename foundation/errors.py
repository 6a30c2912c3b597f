"""User-facing errors: each carries one line that names what went wrong and where."""


class ByteirCatError(Exception):
    """Base of every error shown to users as a single line (the CLI prints it and exits non-zero)."""


class CompileError(ByteirCatError):
    """Input the compiler cannot read or handle: malformed MLIR, unsupported op, bad model."""


class UnsupportedOpError(CompileError):
    def __init__(self, op_name: str, where: str, why: str = ""):
        detail = f": {why}" if why else ""
        super().__init__(f"unsupported op {op_name} at {where}{detail}")
        self.op_name = op_name
        self.where = where
        self.why = why


class InputError(ByteirCatError):
    """Wrong inputs at run time: count, shape or dtype."""


class ArtifactError(ByteirCatError):
    """A compiled artifact that cannot be loaded: missing, corrupted, wrong version or target."""
