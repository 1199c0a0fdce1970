//! Who a new connection's client is, and whether it may come in, before any TLS or HTTP: the
//! PROXY protocol header (from a trusted peer, within `header_timeout`) names the client, and
//! `max_connections_per_ip` counts by that client. A refused connection is closed without an
//! answer and counted as a client error of its kind.

use super::proxy_protocol::read_header;
use super::ProxyCtx;
use crate::config::cidr;
use crate::conn_limit::ConnSlot;
use crate::snapshot::FrontendSnapshot;
use std::net::SocketAddr;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tracing::debug;

/// The client's address, with `slot` counted against it; `None` when the connection is refused.
pub(super) async fn admit(
    tcp: &mut TcpStream,
    peer: SocketAddr,
    accepted: Instant,
    slot: &mut ConnSlot,
    fe: &FrontendSnapshot,
    ctx: &ProxyCtx,
) -> Option<SocketAddr> {
    let cfg = &fe.cfg;
    let refuse = |kind: &str| {
        ctx.shared
            .metrics
            .client_errors_total
            .with_label_values(&[&cfg.name, kind])
            .inc();
    };
    let client = if cfg.proxy_protocol {
        if !cfg.proxy_protocol_from.is_empty()
            && !cidr::contains(&cfg.proxy_protocol_from, peer.ip())
        {
            debug!(frontend = %cfg.name, %peer, "PROXY header from a peer outside proxy_protocol_from; closed");
            refuse("proxy_protocol");
            return None;
        }
        let deadline = accepted + cfg.header_timeout.get();
        match tokio::time::timeout_at(deadline, read_header(tcp, peer)).await {
            Ok(Ok(client)) => client,
            Ok(Err(e)) => {
                debug!(frontend = %cfg.name, %peer, error = %e, "closed");
                refuse("proxy_protocol");
                return None;
            }
            Err(_) => {
                debug!(frontend = %cfg.name, %peer, "no PROXY header within header_timeout; closed");
                refuse("proxy_protocol");
                return None;
            }
        }
    } else {
        peer
    };
    if slot
        .count_client(client.ip(), cfg.max_connections_per_ip)
        .is_err()
    {
        debug!(frontend = %cfg.name, %client, "max_connections_per_ip reached; closed");
        refuse("per_ip_limit");
        return None;
    }
    Some(client)
}
