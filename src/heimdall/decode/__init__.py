"""Decoders: broker payloads to rows of a stream (keys, values (n, F), ts_ns)."""

from heimdall.decode.base import Decoded, Decoder, make_decoder

__all__ = ["Decoded", "Decoder", "make_decoder"]
