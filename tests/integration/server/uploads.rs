//! Files to and from a session's folder against a real `rookery serve`: an upload is
//! written to disk a piece at a time as it arrives, and a download is read a piece
//! at a time as it is sent, so neither costs the server the file's size in memory;
//! an upload past `limits.max_body_bytes` is refused as its bytes arrive (even
//! without a declared length) and leaves the old file and no temporary file behind.

use std::io::{Read, Write};
use std::net::TcpStream;

use serde_json::{json, Value as Json};

use super::hostile::{peak_rss_kb, serve_with};
use super::live::http;

const ADA_PW: &str = "ada-password-1";
const MIB: usize = 1 << 20;

fn call(addr: &str, method: &str, path: &str, token: &str, body: &Json) -> (u16, Json) {
    let auth = format!("Bearer {token}");
    let headers = [
        ("Content-Type", "application/json"),
        ("Authorization", auth.as_str()),
    ];
    let (status, text) = http(addr, method, path, &headers, &body.to_string());
    (
        status,
        serde_json::from_str(&text).unwrap_or(Json::String(text)),
    )
}

/// Bytes that no pattern shortcut could fake: a xorshift stream.
fn noise(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// PUTs `body` with `Transfer-Encoding: chunked` (no length declared up front), in
/// 1 MiB chunks; returns the status. The server may answer and close before all of
/// it is sent.
fn put_chunked(addr: &str, path: &str, token: &str, body: &[u8]) -> u16 {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "PUT {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Authorization: Bearer {token}\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    .unwrap();
    for piece in body.chunks(MIB) {
        let sent = write!(s, "{:x}\r\n", piece.len())
            .and_then(|()| s.write_all(piece))
            .and_then(|()| s.write_all(b"\r\n"));
        if sent.is_err() {
            break;
        }
    }
    let _ = s.write_all(b"0\r\n\r\n");
    let mut text = Vec::new();
    let _ = s.read_to_end(&mut text);
    String::from_utf8_lossy(&text[9..12]).parse().unwrap()
}

/// GETs `path`; returns the head (lower-cased) and the body's bytes.
fn get_raw(addr: &str, path: &str, token: &str) -> (String, Vec<u8>) {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Authorization: Bearer {token}\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let at = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&raw[..at]).to_ascii_lowercase();
    (head, raw[at + 4..].to_vec())
}

#[test]
fn files_stream_both_ways_and_a_refused_upload_leaves_nothing_behind() {
    let data = tempfile::tempdir().unwrap();
    super::cli_add_user(data.path(), "ada", "publisher", ADA_PW);
    let (child, addr, _) = serve_with(
        data.path(),
        "[limits]\nmax_body_bytes = 67108864\n[qap]\nlisten = \"127.0.0.1:0\"\n",
    );
    let body = json!({"username": "ada", "password": ADA_PW});
    let (_, out) = call(&addr, "POST", "/api/v1/login", "", &body);
    let ada = out["access_token"].as_str().unwrap().to_owned();
    let (_, session) = call(&addr, "POST", "/api/v1/sessions", &ada, &json!({}));
    let id = session["id"].as_str().unwrap().to_owned();
    let file = format!("/api/v1/sessions/{id}/files/in/big.bin");

    // 48 MiB up: the server's peak RSS rises by far less than the file.
    let big = noise(48 * MIB);
    let before = peak_rss_kb(child.id());
    assert_eq!(put_chunked(&addr, &file, &ada, &big), 201);
    let rise_up = peak_rss_kb(child.id()) - before;
    assert!(
        rise_up < 24 * 1024,
        "an upload of 48 MiB raised the peak RSS by {rise_up} kB"
    );

    // R sees the whole file.
    let exec = format!("/api/v1/sessions/{id}/execute");
    let code = json!({"code": "file.size('in/big.bin')"});
    let (status, out) = call(&addr, "POST", &exec, &ada, &code);
    assert_eq!((status, &out["result"]), (200, &json!(48 * MIB)), "{out}");

    // And down: with its length, not chunked, byte for byte, streamed.
    let before = peak_rss_kb(child.id());
    let (head, got) = get_raw(&addr, &file, &ada);
    let rise_down = peak_rss_kb(child.id()) - before;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(
        head.contains(&format!("content-length: {}", 48 * MIB)),
        "{head}"
    );
    assert!(!head.contains("chunked"), "{head}");
    assert!(
        got == big,
        "the file came back changed ({} bytes)",
        got.len()
    );
    assert!(
        rise_down < 24 * 1024,
        "a download of 48 MiB raised the peak RSS by {rise_down} kB"
    );

    // Past the limit, with no length declared: refused as it arrives; the old file
    // stays whole and no temporary file is left in the folder.
    let over = noise(65 * MIB);
    assert_eq!(put_chunked(&addr, &file, &ada, &over), 413);
    let (status, out) = call(&addr, "POST", &exec, &ada, &code);
    assert_eq!((status, &out["result"]), (200, &json!(48 * MIB)), "{out}");
    let folder = data.path().join("users/ada/sessions").join(&id).join("in");
    let names: Vec<String> = std::fs::read_dir(&folder)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["big.bin"], "{names:?}");
    super::stop_server(child);
}
