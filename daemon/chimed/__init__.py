"""chimed: a local daemon that joins Amazon Chime SDK meetings and serves ChimeSession over gRPC."""

__version__ = "0.1.0"
