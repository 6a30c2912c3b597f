"""No op classes for the stablehlo dialect: see the package's docstring."""
