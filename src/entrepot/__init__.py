"""entrepot: the hub between distributors' ERPs and the channels they sell through."""

__version__ = "0.1.0"
