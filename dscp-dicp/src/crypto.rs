//! Sealing and opening datagrams: XChaCha20-Poly1305 (RustCrypto) over the
//! body, with the clear header as associated data. The keyring maps key ids
//! to ready ciphers: id 0 is the cluster key that authenticates daemons; each
//! job gets a fresh session key (id = job id) from central, so one job's
//! traffic can be neither read nor forged with another's key.

use std::collections::HashMap;

use chacha20poly1305::aead::AeadInPlace;
use chacha20poly1305::{KeyInit, Tag, XChaCha20Poly1305, XNonce};

use crate::key::{Key, KeyId, CLUSTER_KEY_ID};
use crate::stats::DropReason;
use crate::wire::{Header, HEADER_LEN, TAG_LEN};

/// Key id -> cipher. Adding and removing keys at runtime is how session keys
/// come and go with their jobs.
#[derive(Clone, Default)]
pub struct Keyring {
    ciphers: HashMap<KeyId, XChaCha20Poly1305>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut ids: Vec<_> = self.ciphers.keys().collect();
        ids.sort();
        f.debug_struct("Keyring").field("key_ids", &ids).finish()
    }
}

impl Keyring {
    /// An empty keyring.
    pub fn new() -> Keyring {
        Keyring::default()
    }

    /// A keyring holding the cluster key under [`CLUSTER_KEY_ID`].
    pub fn with_cluster_key(key: &Key) -> Keyring {
        let mut k = Keyring::new();
        k.insert(CLUSTER_KEY_ID, key);
        k
    }

    /// Adds or replaces a key.
    pub fn insert(&mut self, id: KeyId, key: &Key) {
        let cipher = XChaCha20Poly1305::new(key.as_bytes().into());
        self.ciphers.insert(id, cipher);
    }

    /// Removes a key; datagrams under it are dropped as `unknown_key` from
    /// now on. Returns whether it was present.
    pub fn remove(&mut self, id: KeyId) -> bool {
        self.ciphers.remove(&id).is_some()
    }

    /// Whether a key with this id is present.
    pub fn contains(&self, id: KeyId) -> bool {
        self.ciphers.contains_key(&id)
    }

    fn cipher(&self, id: KeyId) -> Option<&XChaCha20Poly1305> {
        self.ciphers.get(&id)
    }

    /// Seals in place: `buf` holds the header's space (`HEADER_LEN` bytes,
    /// overwritten here) followed by the plaintext body; on return it holds
    /// the whole datagram with the tag appended. Fails only for an unknown
    /// key id.
    pub fn seal_in_place(&self, header: &Header, buf: &mut Vec<u8>) -> Result<(), DropReason> {
        let cipher = self.cipher(header.key_id).ok_or(DropReason::UnknownKey)?;
        let h = header.encode();
        buf[..HEADER_LEN].copy_from_slice(&h);
        let nonce = nonce(header.sender_id, header.counter);
        let tag = cipher
            .encrypt_in_place_detached(&nonce, &h, &mut buf[HEADER_LEN..])
            .map_err(|_| DropReason::Oversized)?;
        buf.extend_from_slice(&tag);
        Ok(())
    }

    /// Seals a header and body into a new datagram.
    pub fn seal(&self, header: &Header, body: &[u8]) -> Result<Vec<u8>, DropReason> {
        let mut buf = Vec::with_capacity(HEADER_LEN + body.len() + TAG_LEN);
        buf.extend_from_slice(&[0u8; HEADER_LEN]);
        buf.extend_from_slice(body);
        self.seal_in_place(header, &mut buf)?;
        Ok(buf)
    }

    /// Checks a datagram's header and tag and decrypts it into `scratch`
    /// (reused across calls). Returns the header; the plaintext body is
    /// `scratch[..]` on success.
    pub fn open_into(&self, datagram: &[u8], scratch: &mut Vec<u8>) -> Result<Header, DropReason> {
        let header = Header::decode(datagram)?;
        let cipher = self.cipher(header.key_id).ok_or(DropReason::UnknownKey)?;
        let (ct, tag) = datagram[HEADER_LEN..].split_at(datagram.len() - HEADER_LEN - TAG_LEN);
        scratch.clear();
        scratch.extend_from_slice(ct);
        cipher
            .decrypt_in_place_detached(
                &nonce(header.sender_id, header.counter),
                &datagram[..HEADER_LEN],
                scratch,
                Tag::from_slice(tag),
            )
            .map_err(|_| DropReason::BadAuth)?;
        Ok(header)
    }

    /// Checks and decrypts a datagram in place (saves the copy `open_into`
    /// makes). On success the plaintext body is
    /// `datagram[HEADER_LEN..HEADER_LEN + len]` where `len` is returned with
    /// the header.
    pub fn open_in_place(&self, datagram: &mut [u8]) -> Result<(Header, usize), DropReason> {
        let header = Header::decode(datagram)?;
        let cipher = self.cipher(header.key_id).ok_or(DropReason::UnknownKey)?;
        let body_len = datagram.len() - HEADER_LEN - TAG_LEN;
        let (aad, rest) = datagram.split_at_mut(HEADER_LEN);
        let (body, tag) = rest.split_at_mut(body_len);
        cipher
            .decrypt_in_place_detached(
                &nonce(header.sender_id, header.counter),
                aad,
                body,
                Tag::from_slice(tag),
            )
            .map_err(|_| DropReason::BadAuth)?;
        Ok((header, body_len))
    }

    /// Opens a datagram into a fresh plaintext body.
    pub fn open(&self, datagram: &[u8]) -> Result<(Header, Vec<u8>), DropReason> {
        let mut body = Vec::new();
        let h = self.open_into(datagram, &mut body)?;
        Ok((h, body))
    }
}

/// `sender id ‖ counter ‖ 0^8`: unique per (key, sender, packet).
fn nonce(sender_id: u64, counter: u64) -> XNonce {
    let mut n = [0u8; 24];
    n[..8].copy_from_slice(&sender_id.to_le_bytes());
    n[8..16].copy_from_slice(&counter.to_le_bytes());
    XNonce::from(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{PacketKind, VERSION};

    fn header(key_id: u64) -> Header {
        Header {
            version: VERSION,
            kind: PacketKind::Data,
            key_id,
            sender_id: 7,
            counter: 9,
        }
    }

    #[test]
    fn aead_round_trip() {
        let ring = Keyring::with_cluster_key(&Key::generate());
        for len in [0usize, 1, 100, 1400, 70_000] {
            let body: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let d = ring.seal(&header(0), &body).unwrap();
            assert_eq!(d.len(), HEADER_LEN + len + TAG_LEN);
            if len > 16 {
                // The body really is encrypted.
                assert_ne!(&d[HEADER_LEN..HEADER_LEN + len], &body[..]);
            }
            let (h, opened) = ring.open(&d).unwrap();
            assert_eq!(h, header(0));
            assert_eq!(opened, body);
        }
    }

    #[test]
    fn wrong_key_or_unknown_key_fails() {
        let a = Keyring::with_cluster_key(&Key::generate());
        let b = Keyring::with_cluster_key(&Key::generate());
        let d = a.seal(&header(0), b"hello").unwrap();
        assert_eq!(b.open(&d).unwrap_err(), DropReason::BadAuth);
        assert_eq!(Keyring::new().open(&d).unwrap_err(), DropReason::UnknownKey);
        assert_eq!(
            a.seal(&header(5), b"x").unwrap_err(),
            DropReason::UnknownKey
        );
    }

    #[test]
    fn open_in_place_matches_open() {
        let ring = Keyring::with_cluster_key(&Key::generate());
        let d = ring.seal(&header(0), b"in place").unwrap();
        let mut m = d.clone();
        let (h, len) = ring.open_in_place(&mut m).unwrap();
        assert_eq!(h, header(0));
        assert_eq!(&m[HEADER_LEN..HEADER_LEN + len], b"in place");
        let mut bad = d.clone();
        bad[HEADER_LEN] ^= 1;
        assert_eq!(
            ring.open_in_place(&mut bad).unwrap_err(),
            DropReason::BadAuth
        );
        assert_eq!(
            ring.open_in_place(&mut d[..10].to_vec()).unwrap_err(),
            DropReason::Truncated
        );
    }

    #[test]
    fn every_flipped_bit_is_rejected() {
        let ring = Keyring::with_cluster_key(&Key::generate());
        let d = ring
            .seal(&header(0), b"some body worth protecting")
            .unwrap();
        for bit in 0..d.len() * 8 {
            let mut t = d.clone();
            t[bit / 8] ^= 1 << (bit % 8);
            assert!(ring.open(&t).is_err(), "bit {bit} flip accepted");
        }
    }
}
