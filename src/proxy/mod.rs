//! The front door: accept, read the request head, route, forward, splice WebSockets.
