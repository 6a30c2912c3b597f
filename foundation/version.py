"""The release number, stamped into every artifact's manifest (the runtime reads it, so it lives down here)."""

__version__ = "0.1.0"
