"""An example third-party innersight plugin (see plugin.py)."""
