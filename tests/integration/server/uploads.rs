//! Large bodies against a real `rookery serve`. Files to and from a session's
//! folder: an upload is written to disk a piece at a time as it arrives, and a
//! download is read a piece at a time as it is sent, so neither costs the server
//! the file's size in memory; an upload past `limits.max_body_bytes` is refused as
//! its bytes arrive (even without a declared length) and leaves the old file and no
//! temporary file behind. A large JSON table for a service is decoded as it
//! arrives: the same table, the same refusals, and never the whole text in memory.

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
    send_chunked(addr, "PUT", path, token, "application/octet-stream", body).0
}

/// Sends `body` with `Transfer-Encoding: chunked` in 1 MiB chunks; returns the
/// status and the answer's body.
fn send_chunked(
    addr: &str,
    method: &str,
    path: &str,
    token: &str,
    media: &str,
    body: &[u8],
) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Authorization: Bearer {token}\r\nContent-Type: {media}\r\n\
         Transfer-Encoding: chunked\r\n\r\n"
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
    let text = String::from_utf8_lossy(&text).into_owned();
    let status = text[9..12].parse().unwrap();
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    let body = if text
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        super::live::dechunk(body)
    } else {
        body.to_owned()
    };
    (status, body)
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

/// `rookery serve` on `data` with a 64 MiB body limit and a publisher `ada`, logged
/// in: the child, its HTTP address, and ada's token.
fn serve_as_ada(data: &std::path::Path) -> (std::process::Child, String, String) {
    super::cli_add_user(data, "ada", "publisher", ADA_PW);
    let (child, addr, _) = serve_with(
        data,
        "[limits]\nmax_body_bytes = 67108864\n[qap]\nlisten = \"127.0.0.1:0\"\n",
    );
    let body = json!({"username": "ada", "password": ADA_PW});
    let (_, out) = call(&addr, "POST", "/api/v1/login", "", &body);
    let ada = out["access_token"].as_str().unwrap().to_owned();
    (child, addr, ada)
}

#[test]
fn files_stream_both_ways_and_a_refused_upload_leaves_nothing_behind() {
    let data = tempfile::tempdir().unwrap();
    let (child, addr, ada) = serve_as_ada(data.path());
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

/// `{"x": [...]}` with `n` numbers of 27 significant digits: 3.5 bytes of text per
/// byte of value, and the sum of what R will read.
fn long_column(n: usize, bad_at: Option<usize>) -> (Vec<u8>, f64) {
    let mut text = String::with_capacity(n * 30 + 16);
    text.push_str("{\"x\": [");
    let mut sum = 0.0;
    for i in 0..n {
        if i > 0 {
            text.push(',');
        }
        if bad_at == Some(i) {
            text.push_str("\"seven\"");
            continue;
        }
        let v = format!(
            "0.{:026}",
            (i as u64).wrapping_mul(2_654_435_761) % 10u64.pow(18)
        );
        sum += v.parse::<f64>().unwrap();
        text.push_str(&v);
    }
    text.push_str("]}");
    (text.into_bytes(), sum)
}

#[test]
fn a_large_json_table_is_decoded_as_it_arrives() {
    let data = tempfile::tempdir().unwrap();
    let (child, addr, ada) = serve_as_ada(data.path());
    let spec = json!({
        "name": "tally", "version": "1",
        "code": "tally <- function(d) c(nrow(d), sum(d$x))",
        "function": "tally",
        "inputs": {"columns": [{"name": "x", "type": "double"}]},
    });
    let (status, out) = call(&addr, "POST", "/api/v1/services", &ada, &spec);
    assert_eq!(status, 201, "{out}");
    let path = "/api/v1/services/tally/1";
    let media = "application/json";

    // 1.7 million numbers, 48 MB of text, 14 MB of value: the same answer as R's,
    // and the server's peak RSS rises by about the value (its copy and the shared
    // memory it goes to the worker in), not by the text too.
    let n = 1_700_000;
    let (text, sum) = long_column(n, None);
    assert!(text.len() > 45 * MIB);
    let before = peak_rss_kb(child.id());
    let (status, out) = send_chunked(&addr, "POST", path, &ada, media, &text);
    let rise = peak_rss_kb(child.id()) - before;
    assert_eq!(status, 200, "{out}");
    let out: Json = serde_json::from_str(&out).unwrap();
    let got = out["result"].as_array().unwrap();
    assert_eq!(got[0], json!(n), "{out}");
    let relative = (got[1].as_f64().unwrap() - sum).abs() / sum;
    assert!(relative < 1e-9, "sum {} against {sum}", got[1]);
    assert!(
        rise < 40 * 1024,
        "a 48 MB table raised the server's peak RSS by {rise} kB"
    );

    // A bad cell far into it: the refusal a whole body gets, with its row.
    let (text, _) = long_column(n, Some(1_500_000));
    let (status, out) = send_chunked(&addr, "POST", path, &ada, media, &text);
    assert_eq!(status, 400, "{out}");
    let out: Json = serde_json::from_str(&out).unwrap();
    let message = out["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with(r#"column "x" row 1500001: expected a number"#),
        "{message}"
    );

    // Past the body limit, midway through the numbers: 413, not a parse error.
    let (text, _) = long_column(2_400_000, None);
    assert!(text.len() > 64 * MIB);
    let (status, out) = send_chunked(&addr, "POST", path, &ada, media, &text);
    assert_eq!(status, 413, "{out}");

    // Small tables take the whole-body path: the same answer.
    let (status, out) = call(&addr, "POST", path, &ada, &json!({"x": [1.5, 2.5]}));
    assert_eq!((status, &out["result"]), (200, &json!([2, 4])), "{out}");
    super::stop_server(child);
}
