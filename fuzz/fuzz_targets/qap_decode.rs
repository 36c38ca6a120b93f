//! Fuzzes the QAP1 decoder the endpoint runs on untrusted bytes: message headers,
//! parameter lists, R objects (with the endpoint's depth cap), and expressions. Any panic is a
//! bug; errors are the expected outcome for almost every input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rookery_qap::{expr, frame, sexp};

fuzz_target!(|data: &[u8]| {
    if let Some(head) = data.get(..frame::HEADER_LEN) {
        let head: [u8; frame::HEADER_LEN] = head.try_into().expect("16 bytes");
        let _ = frame::Header::try_from_bytes(&head, 1 << 30);
    }
    if let Ok(params) = frame::decode_params(data) {
        for p in params {
            let _ = p.as_int();
            let _ = p.as_str();
            if let Ok(bytes) = p.as_sexp() {
                let _ = sexp::decode(bytes);
                let _ = expr::decode_expr(bytes, sexp::Strings::Utf8);
            }
        }
    }
    let _ = sexp::decode(data);
    let _ = expr::decode_expr(data, sexp::Strings::Latin1);
});
