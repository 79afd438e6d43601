"""BIDS side of the app: find the input runs, name and describe the outputs, validate."""
