//! Typed calls over the protocol's byte payloads: bincode (with a size
//! limit on everything decoded) around `dscp_dicp`'s request/response.

use serde::de::DeserializeOwned;
use serde::Serialize;

/// The most a single message may decode to; the protocol's reassembly
/// limit is the real bound, this stops a forged length field early.
pub const MAX_MESSAGE: usize = 256 << 20;

/// What can go wrong with a typed call.
#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    /// The payload did not decode as the expected message.
    #[error("malformed message: {0}")]
    Decode(String),
    /// The message could not be encoded.
    #[error("cannot encode message: {0}")]
    Encode(String),
    /// The protocol layer failed (peer lost, timeout, closed).
    #[error("{0}")]
    Net(String),
}

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<MAX_MESSAGE>()
}

/// Encodes a message.
pub fn encode<T: Serialize>(msg: &T) -> Result<Vec<u8>, RpcError> {
    bincode::serde::encode_to_vec(msg, config()).map_err(|e| RpcError::Encode(e.to_string()))
}

/// Decodes a message, refusing trailing bytes.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, RpcError> {
    let (msg, used) = bincode::serde::decode_from_slice(bytes, config())
        .map_err(|e| RpcError::Decode(e.to_string()))?;
    if used != bytes.len() {
        return Err(RpcError::Decode(format!(
            "{} trailing bytes",
            bytes.len() - used
        )));
    }
    Ok(msg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{Dscp, ToHome};

    #[test]
    fn round_trip_and_garbage() {
        let m = ToHome::Output {
            seq: 7,
            fd: 1,
            data: b"hi".to_vec(),
        };
        let b = encode(&m).unwrap();
        assert!(matches!(
            decode::<ToHome>(&b).unwrap(),
            ToHome::Output { seq: 7, .. }
        ));
        assert!(decode::<ToHome>(&b[..b.len() - 1]).is_err());
        let mut long = b.clone();
        long.push(0);
        assert!(decode::<ToHome>(&long).is_err());
        // A huge length prefix must not allocate.
        assert!(
            decode::<Dscp>(&[1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]).is_err()
        );
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
            let _ = decode::<Dscp>(&bytes);
            let _ = decode::<ToHome>(&bytes);
            let _ = decode::<crate::wire::ToNode>(&bytes);
            let _ = decode::<crate::wire::Dicp>(&bytes);
        }
    }
}
