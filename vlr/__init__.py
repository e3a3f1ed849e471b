"""vlr: vision-language retrieval research with swappable training objectives."""

__version__ = "0.1.0"
