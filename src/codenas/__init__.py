"""codenas: build small code language models end to end and measure them honestly."""

__version__ = "0.1.0"
