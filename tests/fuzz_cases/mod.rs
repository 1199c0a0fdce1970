//! Generated request streams for `frontdoor_fuzz`: valid requests and the hostile shapes of the
//! §3.1 table, mutated and combined, pipelined, and cut into several writes at random points.
//! Every value is a small structure (so proptest shrinks it to something readable) that renders
//! to the exact bytes sent.

use proptest::prelude::*;
use proptest::sample::{select, Index};

/// Ends every case: answered and followed by a close, so the client knows when the front door
/// is done with the connection without guessing.
pub const SENTINEL: &str = "GET /__end HTTP/1.1\r\nHost: end.example\r\nConnection: close\r\n\r\n";

pub const STRIP: [&str; 4] = [
    "X-Qlik-User",
    "X-Qlik-Security",
    "X-Qlik-ProxySession",
    "X-Qlik-ProxyId",
];

#[derive(Debug, Clone)]
pub struct Case {
    pub reqs: Vec<Req>,
    /// Where the bytes are cut into separate writes.
    pub cuts: Vec<Index>,
}

#[derive(Debug, Clone)]
pub struct Req {
    /// An empty line before the request line: "", "\r\n" or "\n".
    pub lead: &'static str,
    pub method: &'static str,
    pub target: &'static str,
    pub version: &'static str,
    pub hosts: Vec<&'static str>,
    pub fields: Vec<Field>,
    pub body: Body,
    /// The head line (request line, fields, final empty line) that ends in a bare LF.
    pub bare_lf: Option<Index>,
}

#[derive(Debug, Clone)]
pub enum Field {
    Plain(&'static str, &'static str),
    /// A strip-list name in some case spelling.
    Strip(String),
    Connection(Vec<&'static str>),
    Upgrade(&'static str),
    Http2Settings,
    Expect,
    /// `Connection: Upgrade`, `Upgrade: <v>`, a key and a version.
    WebSocket(&'static str),
}

#[derive(Debug, Clone)]
pub enum Body {
    None,
    Length {
        data: &'static str,
        cl: Vec<String>,
    },
    Chunked {
        te: Vec<&'static str>,
        chunks: Vec<Chunk>,
        last: &'static str,
        trailers: Vec<String>,
        /// A Content-Length line too, before (true) or after the Transfer-Encoding.
        cl: Option<(&'static str, bool)>,
    },
}

#[derive(Debug, Clone)]
pub struct Chunk {
    pub data: &'static str,
    pub size: Size,
    pub ext: &'static str,
}

#[derive(Debug, Clone, Copy)]
pub enum Size {
    Hex,
    Upper,
    Zeros(usize),
    Junk(&'static str),
}

const DATA: [&str; 6] = [
    "hello",
    "",
    "a\nb\r\nc",
    "GET /smuggled HTTP/1.1\r\nHost: a.example\r\nX-Qlik-User: admin\r\n\r\n",
    "0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a.example\r\n\r\n",
    "x",
];

fn strip_name() -> impl Strategy<Value = String> {
    (select(&STRIP[..]), prop::collection::vec(any::<bool>(), 20)).prop_map(|(n, upper)| {
        n.chars()
            .zip(upper)
            .map(|(c, u)| {
                if u {
                    c.to_ascii_uppercase()
                } else {
                    c.to_ascii_lowercase()
                }
            })
            .collect()
    })
}

fn field() -> impl Strategy<Value = Field> {
    let tokens = select(vec![
        "keep-alive",
        "close",
        "X-Hop",
        "Content-Length",
        "transfer-encoding",
        "HOST",
        "Cookie",
        "Expect",
        "Authorization",
        "Sec-WebSocket-Key",
        "Sec-WebSocket-Version",
        "Upgrade",
        "x-qlik-user",
        "HTTP2-Settings",
    ]);
    prop_oneof![
        4 => select(vec![
            ("X-Hop", "1"),
            ("Cookie", "a=1; QLB_ROUTE=node1"),
            ("Authorization", "Basic eDp5"),
            ("Keep-Alive", "timeout=5"),
            ("X-Forwarded-For", "10.0.0.1"),
            ("TE", "trailers"),
            ("Trailer", "X-Qlik-User"),
        ]).prop_map(|(n, v)| Field::Plain(n, v)),
        3 => strip_name().prop_map(Field::Strip),
        3 => prop::collection::vec(tokens, 1..4).prop_map(Field::Connection),
        1 => select(vec!["h2c", "websocket", "h2c, websocket", "foo"]).prop_map(Field::Upgrade),
        1 => Just(Field::Http2Settings),
        1 => Just(Field::Expect),
        1 => select(vec!["websocket", "h2c, websocket", "WebSocket"]).prop_map(Field::WebSocket),
    ]
}

fn chunk() -> impl Strategy<Value = Chunk> {
    let size = prop_oneof![
        6 => Just(Size::Hex),
        1 => Just(Size::Upper),
        1 => (1usize..20).prop_map(Size::Zeros),
        1 => select(vec![" ", "x", "\n", " ;", ";a b", ";\"q\"", "\r"]).prop_map(Size::Junk),
    ];
    let ext = select(vec!["", "", "", ";a=b", " ; a = \"q s\"", ";n"]);
    (select(&DATA[..]), size, ext).prop_map(|(data, size, ext)| Chunk { data, size, ext })
}

fn body() -> impl Strategy<Value = Body> {
    let cl_form = select(vec!["exact", "exact", "list", "two", "differ", "plus"]);
    let te = prop_oneof![
        6 => Just(vec!["chunked"]),
        1 => select(vec![
            vec!["ChUnKeD"],
            vec![" chunked "],
            vec!["chunked, chunked"],
            vec!["identity, chunked"],
            vec!["gzip"],
            vec!["chunked, gzip"],
            vec![""],
            vec!["chunked", "chunked"],
            vec!["gzip", "chunked"],
        ]),
    ];
    let trailers = prop::collection::vec(
        prop_oneof![
            strip_name().prop_map(|n| format!("{n}: admin")),
            Just("X-Other: y".to_string()),
        ],
        0..2,
    );
    prop_oneof![
        3 => Just(Body::None),
        3 => (select(&DATA[..]), cl_form).prop_map(|(data, form)| {
            let n = data.len();
            let cl = match form {
                "exact" => vec![n.to_string()],
                "list" => vec![format!("{n}, {n}")],
                "two" => vec![n.to_string(), n.to_string()],
                "differ" => vec![n.to_string(), (n + 1).to_string()],
                _ => vec![format!("+{n}")],
            };
            Body::Length { data, cl }
        }),
        3 => (
            te,
            prop::collection::vec(chunk(), 0..3),
            select(vec!["0", "0", "000", "0;ext=1"]),
            prop_oneof![3 => Just(vec![]), 1 => trailers],
            prop::option::weighted(0.15, (select(vec!["0", "5", "4"]), any::<bool>())),
        )
            .prop_map(|(te, chunks, last, trailers, cl)| Body::Chunked {
                te,
                chunks,
                last,
                trailers,
                cl,
            }),
    ]
}

pub fn req() -> impl Strategy<Value = Req> {
    let host = prop_oneof![
        8 => select(vec!["a.example", "a.example:8080", "[::1]:80", "127.0.0.1"]).prop_map(|h| vec![h]),
        1 => select(vec!["", "a b", "a/b@c", "user@host", "a,b", "h:x"]).prop_map(|h| vec![h]),
        1 => select(vec![vec![], vec!["a.example", "a.example"], vec!["a.example", "b.example"]]),
    ];
    let target = prop_oneof![
        8 => select(vec!["/", "/a?b=1", "/app/x", "/sink"]),
        1 => select(vec![
            "http://a.example/b?q",
            "http://a.example",
            "https://a.example:8443/x",
            "ftp://a.example/b",
            "http://user@a.example/",
            "*",
            "a.example:443",
        ]),
    ];
    (
        select(vec!["", "", "", "", "", "", "\r\n", "\n"]),
        select(vec![
            "GET", "GET", "POST", "POST", "PUT", "OPTIONS", "CONNECT",
        ]),
        target,
        select(vec!["HTTP/1.1", "HTTP/1.1", "HTTP/1.1", "HTTP/1.0"]),
        host,
        prop::collection::vec(field(), 0..4),
        body(),
        prop::option::weighted(0.1, any::<Index>()),
    )
        .prop_map(
            |(lead, method, target, version, hosts, fields, body, bare_lf)| Req {
                lead,
                method,
                target,
                version,
                hosts,
                fields,
                body,
                bare_lf,
            },
        )
}

pub fn case() -> impl Strategy<Value = Case> {
    (
        prop::collection::vec(req(), 1..4),
        prop::collection::vec(any::<Index>(), 0..4),
    )
        .prop_map(|(reqs, cuts)| Case { reqs, cuts })
}

impl Chunk {
    fn render(&self, out: &mut Vec<u8>) {
        let n = self.data.len();
        let size = match self.size {
            Size::Hex => format!("{n:x}"),
            Size::Upper => format!("{n:X}"),
            Size::Zeros(z) => format!("{}{n:x}", "0".repeat(z)),
            Size::Junk(j) => format!("{n:x}{j}"),
        };
        out.extend_from_slice(format!("{size}{}\r\n{}\r\n", self.ext, self.data).as_bytes());
    }
}

impl Req {
    pub fn render(&self) -> Vec<u8> {
        let mut lines: Vec<String> =
            vec![format!("{} {} {}", self.method, self.target, self.version)];
        for h in &self.hosts {
            lines.push(format!("Host: {h}"));
        }
        for f in &self.fields {
            match f {
                Field::Plain(n, v) => lines.push(format!("{n}: {v}")),
                Field::Strip(n) => lines.push(format!("{n}: UserDirectory=ACME; UserId=admin")),
                Field::Connection(t) => lines.push(format!("Connection: {}", t.join(", "))),
                Field::Upgrade(v) => lines.push(format!("Upgrade: {v}")),
                Field::Http2Settings => {
                    lines.push("HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA".into())
                }
                Field::Expect => lines.push("Expect: 100-continue".into()),
                Field::WebSocket(v) => {
                    lines.push("Connection: Upgrade".into());
                    lines.push(format!("Upgrade: {v}"));
                    lines.push("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==".into());
                    lines.push("Sec-WebSocket-Version: 13".into());
                }
            }
        }
        let mut body = Vec::new();
        match &self.body {
            Body::None => {}
            Body::Length { data, cl } => {
                lines.extend(cl.iter().map(|v| format!("Content-Length: {v}")));
                body.extend_from_slice(data.as_bytes());
            }
            Body::Chunked {
                te,
                chunks,
                last,
                trailers,
                cl,
            } => {
                let te_lines = te.iter().map(|v| format!("Transfer-Encoding: {v}"));
                match cl {
                    Some((v, true)) => {
                        lines.push(format!("Content-Length: {v}"));
                        lines.extend(te_lines);
                    }
                    Some((v, false)) => {
                        lines.extend(te_lines);
                        lines.push(format!("Content-Length: {v}"));
                    }
                    None => lines.extend(te_lines),
                }
                for c in chunks {
                    c.render(&mut body);
                }
                body.extend_from_slice(format!("{last}\r\n").as_bytes());
                for t in trailers {
                    body.extend_from_slice(format!("{t}\r\n").as_bytes());
                }
                body.extend_from_slice(b"\r\n");
            }
        }
        lines.push(String::new());
        let lf = self.bare_lf.map(|i| i.index(lines.len()));
        let mut out = self.lead.as_bytes().to_vec();
        for (i, l) in lines.iter().enumerate() {
            out.extend_from_slice(l.as_bytes());
            out.extend_from_slice(if Some(i) == lf { b"\n" } else { b"\r\n" });
        }
        out.extend_from_slice(&body);
        out
    }
}

impl Case {
    pub fn bytes(&self) -> Vec<u8> {
        let mut out: Vec<u8> = self.reqs.iter().flat_map(|r| r.render()).collect();
        out.extend_from_slice(SENTINEL.as_bytes());
        out
    }

    /// The bytes cut at the chosen points, one write each.
    pub fn parts(&self) -> Vec<Vec<u8>> {
        let bytes = self.bytes();
        let mut at: Vec<usize> = self.cuts.iter().map(|i| i.index(bytes.len())).collect();
        at.push(0);
        at.push(bytes.len());
        at.sort_unstable();
        at.dedup();
        at.windows(2).map(|w| bytes[w[0]..w[1]].to_vec()).collect()
    }
}
