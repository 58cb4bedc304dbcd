"""Remote access over gRPC (``GrpcServer``) and Arrow Flight (``heimdall.remote.flight``);
the client is ``connect``."""

from heimdall.remote.client import ClientTLS, RemoteStore, RemoteSubscription, connect
from heimdall.remote.server import GrpcServer, ServerTLS

__all__ = ["ClientTLS", "GrpcServer", "RemoteStore", "RemoteSubscription", "ServerTLS", "connect"]
