"""Layer 2, semantics: the StableHLO interpreter and the registry of op traits (the CAT ops' own semantics
are the cat_dialect package). Imports only the foundation."""
