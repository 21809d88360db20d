"""dwh: the e-commerce star-schema warehouse loader (library behind scripts/*.py)."""

__version__ = "0.1.0"
