"""``python -m byteir_cat``: the ``byteir-cat`` command (what torchrun launches, one process per rank)."""

from byteir_cat.cli import main

raise SystemExit(main())
