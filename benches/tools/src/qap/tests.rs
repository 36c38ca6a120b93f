//! Unit tests of `rookery bench qap`: durations, ID strings and auth, responses, quantiles.

use super::client::{auth_of, check_id, check_ok, decode_value, Auth};
use super::*;
use rookery_qap::frame::{self, resp, status};

#[test]
fn durations() {
    assert_eq!(parse_duration("3s"), Ok(Duration::from_secs(3)));
    assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
    assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
    for bad in ["", "3", "ms", "3h", "-1s"] {
        assert!(parse_duration(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn id_strings() {
    let plain = *b"Rsrv0103QAP1\r\n\r\n--------------\r\n";
    let both = *b"Rsrv0103QAP1\r\n\r\nARucKIU ARpt--\r\n";
    let crypt = *b"Rsrv0103QAP1\r\n\r\nARucKRO ------\r\n";
    assert_eq!(auth_of(&plain), Auth::None);
    assert_eq!(auth_of(&both), Auth::Plaintext);
    assert_eq!(auth_of(&crypt), Auth::CryptOnly);
    assert!(check_id(&plain).is_ok());
    let http = check_id(b"HTTP/1.1 400 Bad Request\r\n\r\n").unwrap_err();
    assert!(http.to_string().contains("not a QAP1 server"), "{http}");
    assert!(check_id(b"Rsrv0100QAP1\r\n\r\n--------------\r\n").is_err());
    assert!(check_id(b"RsOC").unwrap_err().to_string().contains("OCAP"));
}

#[test]
fn responses() {
    assert_eq!(check_ok(resp::OK, vec![1]).unwrap(), vec![1]);
    let err = check_ok(frame::resp_err(status::R_ERROR), vec![]).unwrap_err();
    assert!(err.to_string().contains("0x7f (R error)"), "{err}");
    assert!(check_ok(0x1234, vec![]).is_err());
    assert!(decode_value(&[]).is_err());
    assert!(decode_value(&[10, 8, 0, 0, 2, 4, 0]).is_err());
}

#[test]
fn quantiles() {
    let s = Samples::new((1..=100).rev().map(Duration::from_millis).collect());
    assert_eq!(s.quantile(0.5), 0.050);
    assert_eq!(s.quantile(0.99), 0.099);
    assert_eq!(s.quantile(1.0), 0.100);
    assert!((s.mean() - 0.0505).abs() < 1e-9);
}
