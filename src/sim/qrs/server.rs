//! The accept loop: TLS handshake (client certificate required), then HTTP/1.1 with hyper.
//! Stopping drops the listener and every open connection, so clients see a refused connection.

use super::{routes, State};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rustls::ServerConfig;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

pub(super) struct Server {
    pub addr: SocketAddr,
    tls: Arc<ServerConfig>,
    running: tokio::sync::Mutex<Option<(CancellationToken, JoinHandle<()>)>>,
}

impl Server {
    pub fn start(listener: TcpListener, tls: Arc<ServerConfig>, state: Arc<State>) -> Arc<Server> {
        let addr = listener
            .local_addr()
            .expect("a bound listener has a local address");
        let running = spawn_accept(listener, tls.clone(), state);
        Arc::new(Server {
            addr,
            tls,
            running: tokio::sync::Mutex::new(Some(running)),
        })
    }

    pub async fn stop(&self) {
        if let Some((cancel, task)) = self.running.lock().await.take() {
            cancel.cancel();
            let _ = task.await;
        }
    }

    pub async fn restart(&self, state: Arc<State>) -> std::io::Result<()> {
        let mut running = self.running.lock().await;
        if running.is_none() {
            let listener = TcpListener::bind(self.addr).await?;
            *running = Some(spawn_accept(listener, self.tls.clone(), state));
        }
        Ok(())
    }
}

fn spawn_accept(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    state: Arc<State>,
) -> (CancellationToken, JoinHandle<()>) {
    let cancel = CancellationToken::new();
    let stop = cancel.clone();
    let acceptor = TlsAcceptor::from(tls);
    let task = tokio::spawn(async move {
        let connections = tokio_util::task::TaskTracker::new();
        loop {
            let (tcp, _) = tokio::select! {
                _ = stop.cancelled() => break,
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::debug!(error = %e, "simulated QRS: accept failed");
                        continue;
                    }
                },
            };
            let acceptor = acceptor.clone();
            let state = state.clone();
            let stop = stop.clone();
            connections.spawn(async move {
                tokio::select! {
                    _ = stop.cancelled() => {}
                    _ = serve(acceptor, tcp, state) => {}
                }
            });
        }
        drop(listener);
        connections.close();
        connections.wait().await;
    });
    (cancel, task)
}

async fn serve(acceptor: TlsAcceptor, tcp: tokio::net::TcpStream, state: Arc<State>) {
    let tls = match acceptor.accept(tcp).await {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!(error = %e, "simulated QRS: TLS handshake refused");
            return;
        }
    };
    let service = service_fn(move |req| {
        let state = state.clone();
        async move { Ok::<_, Infallible>(routes::handle(&state, req).await) }
    });
    if let Err(e) = http1::Builder::new()
        .serve_connection(TokioIo::new(tls), service)
        .await
    {
        tracing::debug!(error = %e, "simulated QRS: connection ended with an error");
    }
}
