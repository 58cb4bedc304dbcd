"""Remote access over gRPC: the server (``GrpcServer``), the client (``connect``)."""

from heimdall.remote.client import ClientTLS, RemoteStore, RemoteSubscription, connect
from heimdall.remote.server import GrpcServer, ServerTLS

__all__ = ["ClientTLS", "GrpcServer", "RemoteStore", "RemoteSubscription", "ServerTLS", "connect"]
