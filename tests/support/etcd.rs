//! A real etcd (Debian's `etcd-server`) for the cluster tests: on 127.0.0.1 with free ports and a
//! temporary data folder, stopped by its PID when dropped. `stop` and `start_again` keep the
//! folder and the ports, for "etcd down, then back" tests.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Etcd {
    child: Option<Child>,
    dir: tempfile::TempDir,
    client: SocketAddr,
    peer: SocketAddr,
    /// A folder with `root.pem`, `server.pem`, `server_key.pem` (`sim::certs`): clients must
    /// speak TLS and present a certificate from that CA.
    tls: Option<PathBuf>,
}

/// Two ports free right now. Another process may take them before etcd binds them; `start`
/// retries with new ones when etcd does not come up.
fn free_ports() -> (SocketAddr, SocketAddr) {
    let a = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    let b = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    (a.local_addr().expect("addr"), b.local_addr().expect("addr"))
}

impl Etcd {
    pub fn start() -> Etcd {
        Etcd::start_with(None)
    }

    /// etcd over TLS with client certificates, from the files in `certs`.
    pub fn start_tls(certs: &std::path::Path) -> Etcd {
        Etcd::start_with(Some(certs.to_path_buf()))
    }

    fn start_with(tls: Option<PathBuf>) -> Etcd {
        let mut dir = tempfile::tempdir().expect("a temporary data folder");
        for _ in 0..5 {
            let (client, peer) = free_ports();
            let mut etcd = Etcd {
                child: None,
                dir,
                client,
                peer,
                tls: tls.clone(),
            };
            if etcd.spawn() {
                return etcd;
            }
            etcd.kill();
            dir = tempfile::tempdir().expect("a temporary data folder");
        }
        panic!("etcd did not start on free ports in five tries (is `etcd` installed? Debian: etcd-server)");
    }

    /// The endpoint for `[cluster] etcd`.
    pub fn endpoint(&self) -> String {
        format!("{}://{}", self.scheme(), self.client)
    }

    fn scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }

    /// Stops etcd (SIGKILL: like a crash or a cut network); its data stays.
    pub fn stop(&mut self) {
        self.kill();
    }

    /// Starts etcd again on the same data folder and ports.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "etcd is still running");
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.spawn() {
            self.kill();
            assert!(
                Instant::now() < deadline,
                "etcd did not come back on {}",
                self.client
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Starts the process and waits until it answers; false when it exits or stays silent.
    fn spawn(&mut self) -> bool {
        let client = self.endpoint();
        let peer = format!("http://{}", self.peer);
        let log = std::fs::File::create(self.dir.path().join("etcd.log")).expect("etcd log file");
        let mut command = Command::new("etcd");
        if let Some(certs) = &self.tls {
            command
                .arg(format!(
                    "--cert-file={}",
                    certs.join("server.pem").display()
                ))
                .arg(format!(
                    "--key-file={}",
                    certs.join("server_key.pem").display()
                ))
                .arg(format!(
                    "--trusted-ca-file={}",
                    certs.join("root.pem").display()
                ))
                .arg("--client-cert-auth");
        }
        let child = command
            .arg("--name=test")
            .arg(format!("--data-dir={}", self.data().display()))
            .arg(format!("--listen-client-urls={client}"))
            .arg(format!("--advertise-client-urls={client}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=test={peer}"))
            .arg("--logger=zap")
            .arg("--log-level=error")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("run etcd (Debian package etcd-server)");
        self.child = Some(child);
        self.wait_until_answering(Duration::from_secs(15))
    }

    /// Polls `/health` on the client port until it says healthy (over TLS: until it accepts).
    fn wait_until_answering(&mut self, limit: Duration) -> bool {
        use std::io::{Read, Write};
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut() {
                if matches!(child.try_wait(), Ok(Some(_))) {
                    return false;
                }
            }
            let connected = TcpStream::connect_timeout(&self.client, Duration::from_millis(200));
            if self.tls.is_some() && connected.is_ok() {
                // Over TLS the port answering is enough; the tests wait for the session anyway.
                return true;
            }
            if let Ok(mut s) = connected {
                let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
                let _ =
                    s.write_all(b"GET /health HTTP/1.1\r\nHost: etcd\r\nConnection: close\r\n\r\n");
                let mut answer = String::new();
                let _ = s.read_to_string(&mut answer);
                if answer.contains("\"health\":\"true\"") {
                    return true;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// What etcd wrote to stderr, for failing tests.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("etcd.log")).unwrap_or_default()
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill();
    }
}
