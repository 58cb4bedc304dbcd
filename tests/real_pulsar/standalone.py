"""The real Apache Pulsar standalone broker the tests start: ``heimdall.cluster.standalone``."""

from heimdall.cluster.standalone import PulsarStandalone, fetch_jars, lib_dir

__all__ = ["PulsarStandalone", "fetch_jars", "lib_dir"]
