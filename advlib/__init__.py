"""advlib: models, attacks and defenses behind the five paper notebooks."""

import logging

__version__ = "0.1.0"

_logger = logging.getLogger("advlib")
if not _logger.handlers:
    _handler = logging.StreamHandler()  # stderr: keeps progress and cache notices out of checked outputs
    _handler.setFormatter(logging.Formatter("[advlib] %(message)s"))
    _logger.addHandler(_handler)
    _logger.setLevel(logging.INFO)
    _logger.propagate = False
