//! Typed messages: serde types encoded with bincode (standard config, varint
//! integers). One module per family; the top-level [`Request`] and
//! [`Response`] wrap the families.
//!
//! **Versioning.** The wire header carries the protocol version. Within a
//! version, enums only grow by appending variants at the end (bincode
//! encodes the variant index), so an old peer answers an unknown request
//! with [`Response::Error`] of kind [`ErrorKind::Unsupported`] instead of
//! misreading it. Anything else bumps [`crate::wire::VERSION`].
//!
//! **Adding a request** to an existing family is a one-file change: add the
//! variant (and its reply) at the end of that family's enums. A new family
//! is a new file plus one variant here.
//!
//! **Limits.** Decoding refuses trailing bytes and runs under a bincode
//! limit of 16 times the input's size class (64 KiB, 1 MiB, 16 MiB, more),
//! at least 1 MiB. Bincode counts in-memory sizes (a 1-byte varint claims 8),
//! so every valid message fits, while no lying length field can make the
//! decoder reserve more than that limit.

pub mod control;
pub mod fs;
pub mod job;
pub mod net;
pub mod proc;

use std::fmt;

use serde::de::{DeserializeOwned, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::CodecError;

/// Every request, by family.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Request {
    /// DSCP: central to node.
    Dscp(control::DscpRequest),
    /// DICP control: node to central.
    Dicp(control::DicpRequest),
    /// A job's session, both directions between node and home: launch,
    /// files for the start, stdio, terminal, signals, exit.
    Job(job::Request),
    /// File operations, node to home.
    Fs(fs::Request),
    /// Socket operations, node to home.
    Net(net::Request),
    /// Process and identity queries, node to home.
    Proc(proc::Request),
}

/// Every response, by family (plus a generic error).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Response {
    /// DSCP replies.
    Dscp(control::DscpResponse),
    /// DICP control replies.
    Dicp(control::DicpResponse),
    /// Job session replies.
    Job(job::Response),
    /// File replies.
    Fs(fs::Response),
    /// Socket replies.
    Net(net::Response),
    /// Process replies.
    Proc(proc::Response),
    /// The request could not be served at all.
    Error(ErrorReply),
}

/// Why a request got no family-specific answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorReply {
    /// The class of failure.
    pub kind: ErrorKind,
    /// A human-readable line.
    pub message: String,
}

/// Classes of [`ErrorReply`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorKind {
    /// The receiver does not know this request (version skew) or could not
    /// decode it.
    Unsupported,
    /// The receiver understood but refuses (not allowed, wrong state).
    Refused,
    /// The receiver failed internally.
    Internal,
}

/// Bytes that encode compactly (one length, then the bytes) rather than
/// as a sequence of u8 values, and decode with a single copy. Use it for
/// data, paths, argv and environment strings (not necessarily UTF-8).
#[derive(Clone, PartialEq, Eq, Default, Hash, PartialOrd, Ord)]
pub struct Blob(pub Vec<u8>);

impl fmt::Debug for Blob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.len() <= 64 {
            write!(f, "b{:?}", String::from_utf8_lossy(&self.0))
        } else {
            write!(f, "Blob({} bytes)", self.0.len())
        }
    }
}

impl From<Vec<u8>> for Blob {
    fn from(v: Vec<u8>) -> Blob {
        Blob(v)
    }
}

impl From<&[u8]> for Blob {
    fn from(v: &[u8]) -> Blob {
        Blob(v.to_vec())
    }
}

impl From<&str> for Blob {
    fn from(v: &str) -> Blob {
        Blob(v.as_bytes().to_vec())
    }
}

impl std::ops::Deref for Blob {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl Serialize for Blob {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Blob {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Blob, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Blob;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E>(self, v: &[u8]) -> Result<Blob, E> {
                Ok(Blob(v.to_vec()))
            }
            fn visit_byte_buf<E>(self, v: Vec<u8>) -> Result<Blob, E> {
                Ok(Blob(v))
            }
        }
        d.deserialize_byte_buf(V)
    }
}

/// Encodes any message.
pub fn encode<T: Serialize>(msg: &T) -> Result<Vec<u8>, CodecError> {
    bincode::serde::encode_to_vec(msg, bincode::config::standard())
        .map_err(|e| CodecError::Encode(e.to_string()))
}

/// Decodes a message, refusing trailing bytes, under a limit that scales
/// with the input (see the module documentation).
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    fn with<T: DeserializeOwned, const N: usize>(
        bytes: &[u8],
    ) -> Result<(T, usize), bincode::error::DecodeError> {
        bincode::serde::decode_from_slice(bytes, bincode::config::standard().with_limit::<N>())
    }
    let n = bytes.len();
    let res = if n <= 1 << 16 {
        with::<T, { 1 << 20 }>(bytes)
    } else if n <= 1 << 20 {
        with::<T, { 1 << 24 }>(bytes)
    } else if n <= 1 << 24 {
        with::<T, { 1 << 28 }>(bytes)
    } else {
        with::<T, { 1 << 32 }>(bytes)
    };
    let (msg, used) = res.map_err(|e| CodecError::Decode(e.to_string()))?;
    if used != bytes.len() {
        return Err(CodecError::Decode(format!(
            "{} trailing bytes",
            bytes.len() - used
        )));
    }
    Ok(msg)
}

/// Decodes `bytes` as a `T` and, if that works, checks that its encoding
/// decodes and re-encodes to the same bytes (the canonical form is stable;
/// the input itself may use non-minimal varints). `None`: not a `T`. For
/// fuzzing and tests.
pub fn canonical_round_trip<T: Serialize + DeserializeOwned>(bytes: &[u8]) -> Option<bool> {
    let m: T = decode(bytes).ok()?;
    let canon = encode(&m).ok()?;
    let again: Result<T, _> = decode(&canon);
    Some(
        again
            .ok()
            .and_then(|a| encode(&a).ok())
            .is_some_and(|b| b == canon),
    )
}

impl Request {
    /// Encodes the request.
    pub fn encode(&self) -> Result<Vec<u8>, CodecError> {
        encode(self)
    }
    /// Decodes a request.
    pub fn decode(bytes: &[u8]) -> Result<Request, CodecError> {
        decode(bytes)
    }
}

impl Response {
    /// Encodes the response.
    pub fn encode(&self) -> Result<Vec<u8>, CodecError> {
        encode(self)
    }
    /// Decodes a response.
    pub fn decode(bytes: &[u8]) -> Result<Response, CodecError> {
        decode(bytes)
    }
    /// The reply to a request that could not be decoded or is unknown.
    pub fn unsupported(why: impl Into<String>) -> Response {
        Response::Error(ErrorReply {
            kind: ErrorKind::Unsupported,
            message: why.into(),
        })
    }
}

/// Wraps each family's messages into [`Request`]/[`Response`] and back, so
/// callers can send a family message and get a family answer.
macro_rules! family {
    ($variant:ident, $req:ty, $resp:ty) => {
        impl From<$req> for Request {
            fn from(r: $req) -> Request {
                Request::$variant(r)
            }
        }
        impl From<$resp> for Response {
            fn from(r: $resp) -> Response {
                Response::$variant(r)
            }
        }
        impl TryFrom<Response> for $resp {
            type Error = String;
            fn try_from(r: Response) -> Result<$resp, String> {
                match r {
                    Response::$variant(x) => Ok(x),
                    Response::Error(e) => Err(format!("{:?}: {}", e.kind, e.message)),
                    other => Err(format!("unexpected answer {other:?}")),
                }
            }
        }
    };
}

family!(Dscp, control::DscpRequest, control::DscpResponse);
family!(Dicp, control::DicpRequest, control::DicpResponse);
family!(Job, job::Request, job::Response);
family!(Fs, fs::Request, fs::Response);
family!(Net, net::Request, net::Response);
family!(Proc, proc::Request, proc::Response);

#[cfg(test)]
mod tests;
