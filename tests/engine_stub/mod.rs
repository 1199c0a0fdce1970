//! Test engines: small hyper servers on 127.0.0.1:0 that answer every GET with a status and body
//! the test controls (plain or TLS), plus helpers to build a runtime from config text.
#![allow(dead_code)]

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use qlik_lb::config::Config;
use qlik_lb::metrics::Metrics;
use qlik_lb::snapshot::{Shared, SharedSnapshot, Snapshot};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;

pub struct EngineStub {
    pub addr: SocketAddr,
    reply: Arc<Mutex<(u16, String)>>,
    hits: Arc<AtomicUsize>,
    accepted: Arc<AtomicUsize>,
    handshake_errors: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for EngineStub {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl EngineStub {
    pub async fn start(status: u16, body: impl Into<String>) -> EngineStub {
        EngineStub::start_tls(status, body, None).await
    }

    pub async fn start_tls(
        status: u16,
        body: impl Into<String>,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> EngineStub {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let reply = Arc::new(Mutex::new((status, body.into())));
        let hits = Arc::new(AtomicUsize::new(0));
        let accepted = Arc::new(AtomicUsize::new(0));
        let handshake_errors = Arc::new(Mutex::new(Vec::new()));
        let (r, h, acc, errs) = (
            reply.clone(),
            hits.clone(),
            accepted.clone(),
            handshake_errors.clone(),
        );
        let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                acc.fetch_add(1, Ordering::SeqCst);
                let (r, h, acceptor, errs) = (r.clone(), h.clone(), acceptor.clone(), errs.clone());
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |_req| {
                        h.fetch_add(1, Ordering::SeqCst);
                        let (status, body) = r.lock().unwrap().clone();
                        async move {
                            let mut resp = hyper::Response::new(Full::new(Bytes::from(body)));
                            *resp.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
                            Ok::<_, std::convert::Infallible>(resp)
                        }
                    });
                    let http = hyper::server::conn::http1::Builder::new();
                    match acceptor {
                        Some(a) => match a.accept(tcp).await {
                            Ok(s) => {
                                let _ = http.serve_connection(TokioIo::new(s), svc).await;
                            }
                            Err(e) => errs.lock().unwrap().push(e.to_string()),
                        },
                        None => {
                            let _ = http.serve_connection(TokioIo::new(tcp), svc).await;
                        }
                    }
                });
            }
        });
        EngineStub {
            addr,
            reply,
            hits,
            accepted,
            handshake_errors,
            task,
        }
    }

    pub fn set(&self, status: u16, body: impl Into<String>) {
        *self.reply.lock().unwrap() = (status, body.into());
    }

    /// Requests answered so far.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    /// TCP connections accepted so far (a refused TLS handshake counts here, not in `hits`).
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Why TLS handshakes with this engine failed, as its side saw it.
    pub fn handshake_errors(&self) -> Vec<String> {
        self.handshake_errors.lock().unwrap().clone()
    }
}

/// An engine health body with the given CPU %, saturation and apps in memory.
pub fn health_json(cpu: f64, saturated: bool, docs: &[&str]) -> String {
    serde_json::json!({
        "version": "12.1306.0",
        "mem": { "committed": 1000.0, "allocated": 1100.0, "free": 28000.0, "totalPhysical": 32768 },
        "cpu": { "total": cpu },
        "session": { "active": 0, "total": 0 },
        "apps": { "active_docs": [], "in_memory_docs": docs, "loaded_docs": [], "calls": 0, "selections": 0 },
        "users": { "active": 0, "total": 0 },
        "saturated": saturated
    })
    .to_string()
}

pub fn runtime(toml: &str, dir: &Path) -> (SharedSnapshot, Arc<Shared>) {
    let shared = Shared::new(Arc::new(Metrics::new()));
    let rt = Snapshot::build(
        Config::parse(toml, dir).expect("valid test config"),
        &shared,
    )
    .expect("runtime builds");
    (Arc::new(arc_swap::ArcSwap::from_pointee(rt)), shared)
}

/// Polls `cond` every few milliseconds until it holds or `limit` passes.
pub async fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    cond()
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, as PEM text.
pub struct TestPki {
    pub ca_pem: String,
    pub ca_der: rustls::pki_types::CertificateDer<'static>,
    pub server_cert_pem: String,
    pub server_key_pem: String,
    pub client_cert_pem: String,
    pub client_key_pem: String,
}

impl TestPki {
    pub fn generate(name: &str) -> TestPki {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
        };
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} test CA"));
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let server_key = KeyPair::generate().unwrap();
        let mut sp =
            CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".into()]).unwrap();
        sp.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let server = sp.signed_by(&server_key, &ca, &ca_key).unwrap();
        let client_key = KeyPair::generate().unwrap();
        let mut cp = CertificateParams::new(Vec::<String>::new()).unwrap();
        cp.distinguished_name.push(DnType::CommonName, "QlikClient");
        cp.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let client = cp.signed_by(&client_key, &ca, &ca_key).unwrap();
        TestPki {
            ca_pem: ca.pem(),
            ca_der: ca.der().clone(),
            server_cert_pem: server.pem(),
            server_key_pem: server_key.serialize_pem(),
            client_cert_pem: client.pem(),
            client_key_pem: client_key.serialize_pem(),
        }
    }

    /// A server config presenting the server certificate; with `require_client`, only clients
    /// whose certificate this CA signed get through.
    pub fn server_config(&self, require_client: bool) -> Arc<rustls::ServerConfig> {
        qlik_lb::tls::server_config_from(
            qlik_lb::tls::certs_from_pem(self.server_cert_pem.as_bytes()).unwrap(),
            qlik_lb::tls::key_from_pem(self.server_key_pem.as_bytes()).unwrap(),
            require_client.then(|| vec![self.ca_der.clone()]),
        )
        .unwrap()
    }

    /// Writes client.pem, client_key.pem and root.pem into `dir` (the QMC export layout).
    pub fn write_client_files(&self, dir: &Path) {
        std::fs::write(dir.join("client.pem"), &self.client_cert_pem).unwrap();
        std::fs::write(dir.join("client_key.pem"), &self.client_key_pem).unwrap();
        std::fs::write(dir.join("root.pem"), &self.ca_pem).unwrap();
    }
}
