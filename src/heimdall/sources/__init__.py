"""Sources: brokers to windows. ``base.Source`` is the interface; one module per broker."""

from heimdall.sources.base import Source

__all__ = ["Source"]
