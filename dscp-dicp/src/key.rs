//! 256-bit keys: generation, hexadecimal form, and the key file rules of
//! interface.md (64 hex characters and a newline, mode 0600, never
//! overwritten, refused when group or others may access it).

use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use rand::RngCore;

use crate::error::KeyError;

/// Identifies a key in a keyring and in the wire header.
pub type KeyId = u64;

/// Key id of the cluster key, which authenticates daemons to each other.
/// Per-job session keys use the job id (never 0).
pub const CLUSTER_KEY_ID: KeyId = 0;

/// A 256-bit symmetric key.
#[derive(Clone, PartialEq, Eq)]
pub struct Key([u8; 32]);

impl fmt::Debug for Key {
    // Never print key material, not even in debug logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Key(..)")
    }
}

impl Key {
    /// A fresh random key from the operating system's CSPRNG.
    pub fn generate() -> Key {
        let mut k = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut k);
        Key(k)
    }

    /// A key from its raw bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Key {
        Key(bytes)
    }

    /// The raw bytes (to put a session key into a job's start message).
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Parses exactly 64 hexadecimal characters (either case).
    pub fn from_hex(s: &str) -> Result<Key, KeyError> {
        let b = s.as_bytes();
        if b.len() != 64 {
            return Err(KeyError::BadHex(
                "expected exactly 64 hexadecimal characters",
            ));
        }
        let mut k = [0u8; 32];
        for (i, pair) in b.chunks_exact(2).enumerate() {
            let hi = hex_val(pair[0]).ok_or(KeyError::BadHex("non-hexadecimal character"))?;
            let lo = hex_val(pair[1]).ok_or(KeyError::BadHex("non-hexadecimal character"))?;
            k[i] = hi << 4 | lo;
        }
        Ok(Key(k))
    }

    /// The 64 lowercase hexadecimal characters.
    pub fn to_hex(&self) -> String {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut s = String::with_capacity(64);
        for byte in self.0 {
            s.push(HEX[usize::from(byte >> 4)] as char);
            s.push(HEX[usize::from(byte & 15)] as char);
        }
        s
    }

    /// Loads a key file, refusing (with a one-line reason) one that is
    /// missing, malformed, or accessible by group or others.
    pub fn load(path: &Path) -> Result<Key, KeyError> {
        let meta = match fs::metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(KeyError::Missing {
                    path: path.to_owned(),
                })
            }
            Err(source) => {
                return Err(KeyError::Io {
                    path: path.to_owned(),
                    source,
                })
            }
        };
        let malformed = |reason| KeyError::Malformed {
            path: path.to_owned(),
            reason,
        };
        if !meta.is_file() {
            return Err(malformed("not a regular file"));
        }
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(KeyError::Permissions {
                path: path.to_owned(),
                mode,
            });
        }
        // A valid file is 64 or 65 bytes; refuse to read anything bigger.
        if meta.len() > 65 {
            return Err(malformed(
                "longer than 64 hexadecimal characters and a newline",
            ));
        }
        let data = fs::read(path).map_err(|source| KeyError::Io {
            path: path.to_owned(),
            source,
        })?;
        let text = match data.as_slice() {
            [body @ .., b'\n'] => body,
            body => body,
        };
        let text = std::str::from_utf8(text).map_err(|_| malformed("not text"))?;
        Key::from_hex(text).map_err(|e| match e {
            KeyError::BadHex(reason) => malformed(reason),
            other => other,
        })
    }

    /// Creates `path` (which must not exist) with mode 0600 holding 64 hex
    /// characters and a newline.
    pub fn write_new(&self, path: &Path) -> Result<(), KeyError> {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|source| {
                if source.kind() == io::ErrorKind::AlreadyExists {
                    KeyError::Exists {
                        path: path.to_owned(),
                    }
                } else {
                    KeyError::Write {
                        path: path.to_owned(),
                        source,
                    }
                }
            })?;
        // The umask may only clear bits, but be explicit anyway.
        let res = f
            .set_permissions(fs::Permissions::from_mode(0o600))
            .and_then(|()| f.write_all(format!("{}\n", self.to_hex()).as_bytes()))
            .and_then(|()| f.sync_all());
        res.map_err(|source| KeyError::Write {
            path: path.to_owned(),
            source,
        })
    }
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("dscp-key-{}-{name}", std::process::id()));
        let _ = fs::remove_file(&dir);
        dir
    }

    #[test]
    fn hex_round_trip() {
        let k = Key::generate();
        assert_eq!(Key::from_hex(&k.to_hex()).unwrap(), k);
        assert_eq!(Key::from_hex(&k.to_hex().to_uppercase()).unwrap(), k);
        assert!(Key::from_hex("00").is_err());
        assert!(Key::from_hex(&"g".repeat(64)).is_err());
        assert_ne!(Key::generate(), Key::generate());
    }

    #[test]
    fn write_new_then_load() {
        let p = tmp("ok");
        let k = Key::generate();
        k.write_new(&p).unwrap();
        let meta = fs::metadata(&p).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        let text = fs::read_to_string(&p).unwrap();
        assert_eq!(text.len(), 65);
        assert!(text.ends_with('\n'));
        assert_eq!(Key::load(&p).unwrap(), k);
        // Refuses to overwrite.
        assert!(matches!(
            Key::generate().write_new(&p),
            Err(KeyError::Exists { .. })
        ));
        assert_eq!(Key::load(&p).unwrap(), k);
        fs::remove_file(&p).unwrap();
    }

    #[test]
    fn load_refusals() {
        let p = tmp("bad");
        assert!(matches!(Key::load(&p), Err(KeyError::Missing { .. })));
        let k = Key::generate();
        k.write_new(&p).unwrap();
        for mode in [0o640, 0o604, 0o660, 0o602] {
            fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
            let err = Key::load(&p).unwrap_err();
            assert!(
                matches!(err, KeyError::Permissions { .. }),
                "{mode:o}: {err}"
            );
            assert!(!err.to_string().contains('\n'));
        }
        fs::set_permissions(&p, fs::Permissions::from_mode(0o400)).unwrap();
        assert_eq!(Key::load(&p).unwrap(), k);
        fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).unwrap();
        for bad in [
            format!("{}\n\n", k.to_hex()),
            format!("{}x", k.to_hex()),
            k.to_hex()[..63].to_string(),
            format!(" {}", &k.to_hex()[1..]),
            String::new(),
        ] {
            fs::write(&p, &bad).unwrap();
            let err = Key::load(&p).unwrap_err();
            assert!(matches!(err, KeyError::Malformed { .. }), "{bad:?}: {err}");
        }
        fs::write(&p, k.to_hex()).unwrap(); // no newline is fine
        assert_eq!(Key::load(&p).unwrap(), k);
        fs::remove_file(&p).unwrap();
    }
}
