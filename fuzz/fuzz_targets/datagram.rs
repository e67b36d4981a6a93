//! The datagram path: raw bytes into an endpoint (header checks, AEAD open,
//! replay guard), and the same bytes sealed with the right key as the body
//! of an authentic datagram from a verified sender, so the frame decoder
//! and the connection logic see arbitrary input too. Two requests are
//! outstanding to that sender (ids 1 and 2, the second with a sink), so
//! response chunks in the input reach reassembly and the sink; the sink
//! checks that it is only ever handed bytes inside its range.
#![no_main]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use dscp_dicp::frame::{self, Handshake};
use dscp_dicp::wire::{Header, PacketKind, VERSION};
use dscp_dicp::{Config, Endpoint, Key, Keyring, Peer, Sink, SinkTarget};
use libfuzzer_sys::fuzz_target;

const SENDER: u64 = 0x5eed;

fn seal(ring: &mut Keyring, kind: PacketKind, counter: u64, body: &[u8]) -> Vec<u8> {
    let h = Header { version: VERSION, kind, key_id: 0, sender_id: SENDER, counter };
    ring.seal(&h, body).expect("key 0 is in the ring")
}

/// The sink's response length and head.
const SINK_TOTAL: u64 = 1000;
const SINK_SKIP: usize = 7;

/// A sink that fails loudly if the endpoint breaks its contract.
struct Checked;

impl SinkTarget for Checked {
    fn write(&mut self, at: u64, data: &[u8]) {
        let end = at.checked_add(data.len() as u64).expect("no overflow");
        assert!(end <= SINK_TOTAL - SINK_SKIP as u64, "sink written out of range");
    }
}

fuzz_target!(|data: &[u8]| {
    let mut ring = Keyring::with_cluster_key(&Key::from_bytes([7; 32]));
    let mut ep = Endpoint::new(Config::default(), ring.clone(), [1; 32]);
    let now = Instant::now();
    let from: SocketAddr = "10.1.2.3:12036".parse().expect("address");

    // 1. Raw bytes.
    ep.handle_datagram(now, from, data);

    // 2. Pass the first-contact challenge, then deliver `data` as the body
    //    of an authentic data datagram and of a handshake datagram.
    let mut hello = Vec::new();
    frame::put_body_prefix(&mut hello, 0, 0);
    frame::put_ping(&mut hello);
    ep.handle_datagram(now, from, &seal(&mut ring, PacketKind::Data, 1, &hello));
    while let Some(t) = ep.poll_transmit(now) {
        let Ok((_, body)) = ring.open(&t.bytes) else { continue };
        if let Ok(Handshake::Challenge(n)) = frame::decode_handshake(&body) {
            let mut answer = Vec::new();
            frame::put_handshake(&mut answer, Handshake::Answer(n));
            ep.handle_datagram(now, from, &seal(&mut ring, PacketKind::Handshake, 2, &answer));
        }
    }
    let peer = Peer { addr: from, key_id: 0 };
    let _ = ep.send_request(now, peer, b"plain".to_vec());
    let sink = Sink { total: SINK_TOTAL, skip: SINK_SKIP, target: Box::new(Checked) };
    let _ = ep.send_request_into(now, peer, b"sunk".to_vec(), sink);
    while ep.poll_transmit(now).is_some() {}
    ep.handle_datagram(now, from, &seal(&mut ring, PacketKind::Data, 3, data));
    ep.handle_datagram(now, from, &seal(&mut ring, PacketKind::Handshake, 4, data));
    ep.handle_timeout(now + Duration::from_secs(3600));
    while ep.poll_transmit(now).is_some() {}
    while ep.poll_event().is_some() {}

    // 3. The frame decoder on its own.
    if let Ok((_, _, rest)) = frame::split_body(data) {
        for f in frame::frames(rest) {
            if f.is_err() {
                break;
            }
        }
    }
});
