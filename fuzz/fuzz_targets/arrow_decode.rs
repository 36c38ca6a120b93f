//! Fuzzes the Arrow IPC reader that service calls run on untrusted bodies
//! (`Content-Type: application/vnd.apache.arrow.stream`). Errors are expected; a
//! panic that escapes `table_from_ipc` is a bug.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rookery_formats::arrow::table_from_ipc;

fuzz_target!(|data: &[u8]| {
    let _ = table_from_ipc(data);
});
