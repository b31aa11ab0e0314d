"""fwxtwisted: an application-level gateway framework on Twisted."""

__version__ = "0.1.0"
