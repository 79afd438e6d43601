"""bids-deface: remove faces and ears from structural brain MRI."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("bids-deface")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.1.0"

__all__ = ["__version__"]
