//! A real `rookery serve --demo` on loopback: the README's first command, driven over
//! TCP, stopped with SIGTERM.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;

/// One HTTP/1.1 request over a fresh connection; returns status and body.
pub fn http(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let status = text[9..12].parse().unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let chunked = head
        .lines()
        .any(|l| l.eq_ignore_ascii_case("transfer-encoding: chunked"));
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_owned()
    };
    (status, body)
}

/// The body of a chunked answer (large results are streamed so).
pub fn dechunk(mut rest: &str) -> String {
    let mut body = String::new();
    loop {
        let (size, after) = rest.split_once("\r\n").expect("a chunk size line");
        let size = usize::from_str_radix(size.trim(), 16).expect("a hex chunk size");
        if size == 0 {
            return body;
        }
        body.push_str(&after[..size]);
        rest = &after[size + 2..];
    }
}

#[test]
fn serve_demo_answers_the_printed_curl_line_and_stops_on_sigterm() {
    let data = tempfile::tempdir().unwrap();
    let (child, mut lines) = super::spawn_demo(data.path());
    let mut next = || lines.next().expect("serve prints its address").unwrap();
    let first = next();
    let addr = first
        .strip_prefix("rookery listening on http://")
        .expect(&first)
        .to_owned();
    let mut key = None;
    let mut curl = None;
    for _ in 0..5 {
        let line = next();
        if let Some(k) = line.strip_prefix("demo API key: ") {
            key = Some(k.to_owned());
        }
        if line.trim_start().starts_with("curl ") {
            curl = Some(line);
            break;
        }
    }
    let key = key.expect("an API key is printed");
    assert!(curl.expect("a curl line is printed").contains(&key));
    let auth = format!("Bearer {key}");
    let row = r#"[{"x1":0.1,"x2":-0.2,"x3":0.3,"x4":0.4,"x5":0.5,"x6":0.6,"x7":0.7,"x8":0.8,"x9":0.9,"x10":1.0}]"#;
    let (status, body) = http(
        &addr,
        "POST",
        "/api/v1/services/glm/1",
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
        ],
        row,
    );
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let p = v["result"][0].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&p), "{body}");
    let (status, body) = http(
        &addr,
        "POST",
        "/api/v1/services/rf/1",
        &[("Authorization", &auth)],
        row,
    );
    assert_eq!(status, 200, "{body}");
    let (status, _) = http(&addr, "GET", "/readyz", &[], "");
    assert_eq!(status, 200);
    let (status, _) = http(
        &addr,
        "POST",
        "/api/v1/sessions",
        &[("Authorization", &auth)],
        "",
    );
    assert_eq!(status, 403, "an API key opens no session");
    super::stop_server(child);
}

#[test]
fn plain_http_off_loopback_is_refused_with_a_clear_message() {
    let data = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_rookery"))
        .args(["serve", "--listen", "0.0.0.0:0", "--data"])
        .arg(data.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--insecure-plaintext"), "{err}");
}

/// One HTTPS request over rustls, trusting only `cert_der`.
fn https(
    addr: &str,
    cert_der: rustls::pki_types::CertificateDer<'static>,
    path: &str,
) -> (u16, String) {
    use std::sync::Arc;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert_der).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = "localhost".try_into().unwrap();
    let conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let tcp = TcpStream::connect(addr).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    tls.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    // A server may close without close_notify; what arrived before is the answer.
    let _ = tls.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text[9..12].parse().unwrap();
    (status, text)
}

#[test]
fn tls_serves_any_address_and_plain_clients_get_nothing() {
    let data = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let cert_path = data.path().join("cert.pem");
    let key_path = data.path().join("key.pem");
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.key_pair.serialize_pem()).unwrap();
    let config = data.path().join("rookery.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"0.0.0.0:0\"\ndata = {:?}\n[tls]\ncert = {:?}\nkey = {:?}\n",
            data.path().join("data"),
            cert_path,
            key_path
        ),
    )
    .unwrap();
    let (child, mut lines) = super::spawn_serve(&["--config".as_ref(), config.as_os_str()]);
    let first = lines.next().unwrap().unwrap();
    let port = first.rsplit(':').next().unwrap().to_owned();
    assert!(
        first.starts_with("rookery listening on https://"),
        "{first}"
    );
    let addr = format!("127.0.0.1:{port}");
    let (status, text) = https(&addr, cert.cert.der().clone(), "/healthz");
    assert_eq!(status, 200, "{text}");
    // Plain HTTP to the TLS port gets no HTTP answer.
    let mut plain = TcpStream::connect(&addr).unwrap();
    plain
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut buf = Vec::new();
    let _ = plain.read_to_end(&mut buf);
    assert!(!String::from_utf8_lossy(&buf).contains("200 OK"));
    super::stop_server(child);
}
