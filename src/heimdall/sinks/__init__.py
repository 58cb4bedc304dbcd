"""Sinks: where predictions go (a Pulsar topic, user code)."""

from heimdall.sinks.base import CallbackSink, Sink
from heimdall.sinks.pulsar import PulsarSink

__all__ = ["CallbackSink", "PulsarSink", "Sink"]
