"""Command-line entry points (``bids-deface``, ``bids-deface-file``)."""
