"""The toolkit's version, in core so that any layer can read it without importing the top-level package
(whose ``edgedistill.run`` sits above every layer). The teacher cache keys on it; exported models record it."""
__version__ = "0.1.0"
