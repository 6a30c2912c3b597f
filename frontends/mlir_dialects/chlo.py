"""No op classes for the chlo dialect: see the package's docstring."""
