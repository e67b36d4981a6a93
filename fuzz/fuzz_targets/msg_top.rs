//! Decoding arbitrary bytes as the `top` message family never panics,
//! and whatever decodes re-encodes to a canonical form that decodes and
//! re-encodes identically (bincode also accepts non-minimal varints, so the
//! input itself need not be canonical).
#![no_main]

use dscp_dicp::msg::{self, *};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    assert_ne!(msg::canonical_round_trip::<Request>(data), Some(false));
    assert_ne!(msg::canonical_round_trip::<Response>(data), Some(false));
});
