//! Sealing and opening datagrams: AES-256-GCM over the body, with the clear
//! header as associated data. The implementation is `ring`'s (BoringSSL's
//! assembly, picked at run time: AES-NI with carry-less multiplication, or
//! VAES with VPCLMULQDQ where the CPU has them), which seals and opens bulk
//! data about three times as fast as RustCrypto's `aes-gcm` on the machines
//! measured (BENCHMARKS.md, "Cold reads with ring's AES-GCM"); the bytes on
//! the wire are the same AES-256-GCM either way (a test compares the two).
//!
//! The keyring maps key ids to keys: id 0 is the cluster key that
//! authenticates daemons; each job gets a fresh session key (id = job id)
//! from central, so one job's traffic can be neither read nor forged with
//! another's key.
//!
//! GCM's 96-bit nonce must never repeat under one AES key, and a key id is
//! shared by many senders (every daemon holds the cluster key). So nothing
//! is sealed with a keyring key itself: each sender seals with its own
//! subkey, BLAKE3 `derive_key` of (key, key id, sender id) under a context
//! string of this protocol version, and the nonce is the sender's counter,
//! which strictly increases per endpoint instance. A nonce therefore repeats
//! under a subkey only if two endpoint instances holding the same key draw
//! the same random 63-bit sender id (probability about n²/2⁶⁴ for n
//! instances over the key's life), the same bound the header's design
//! already relies on to tell instances apart. Subkeys are derived on first
//! use and cached; the receiver caches one only after a datagram under it
//! authenticated, so forged datagrams naming made-up senders cost a
//! derivation each but cannot grow the cache.

use std::collections::HashMap;

use ring::aead::{Aad, LessSafeKey, Nonce, Tag, UnboundKey, AES_256_GCM};

use crate::key::{Key, KeyId, CLUSTER_KEY_ID};
use crate::stats::DropReason;
use crate::wire::{Header, HEADER_LEN, TAG_LEN};

/// BLAKE3 `derive_key` context of the per-sender subkeys. Hard-coded and
/// unique to this use (BLAKE3's rule for contexts); a new wire version that
/// changes the derivation changes the string.
const SUBKEY_CONTEXT: &str = "diatom dscp-dicp wire v2 2026-11-26 AES-256-GCM key of one sender";

/// Most (key id, sender id) ciphers kept at once (each ~0.5 KiB of round
/// keys and GHASH powers).
/// Beyond that an arbitrary one is evicted: it is derived again when next
/// needed, which costs about a microsecond.
const CACHED_CIPHERS: usize = 4096;

/// Key id -> key, and the ciphers derived from them per sender. Adding and
/// removing keys at runtime is how session keys come and go with their jobs.
#[derive(Clone, Default)]
pub struct Keyring {
    keys: HashMap<KeyId, Key>,
    ciphers: HashMap<(KeyId, u64), LessSafeKey>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut ids: Vec<_> = self.keys.keys().collect();
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
        self.forget_ciphers(id);
        self.keys.insert(id, key.clone());
    }

    /// Removes a key; datagrams under it are dropped as `unknown_key` from
    /// now on. Returns whether it was present.
    pub fn remove(&mut self, id: KeyId) -> bool {
        self.forget_ciphers(id);
        self.keys.remove(&id).is_some()
    }

    /// Whether a key with this id is present.
    pub fn contains(&self, id: KeyId) -> bool {
        self.keys.contains_key(&id)
    }

    fn forget_ciphers(&mut self, id: KeyId) {
        self.ciphers.retain(|(k, _), _| *k != id);
    }

    /// Runs `op` with the cipher of `sender` under key `id`. A cipher
    /// derived for this call is cached only if `op` succeeds, so that only
    /// authentic senders (and ourselves) take cache room.
    fn with_cipher<R>(
        &mut self,
        id: KeyId,
        sender: u64,
        op: impl FnOnce(&LessSafeKey) -> Result<R, DropReason>,
    ) -> Result<R, DropReason> {
        if let Some(c) = self.ciphers.get(&(id, sender)) {
            return op(c);
        }
        let key = self.keys.get(&id).ok_or(DropReason::UnknownKey)?;
        let cipher = new_cipher(&sender_key(key, id, sender));
        let r = op(&cipher)?;
        if self.ciphers.len() >= CACHED_CIPHERS {
            if let Some(victim) = self.ciphers.keys().next().copied() {
                self.ciphers.remove(&victim);
            }
        }
        self.ciphers.insert((id, sender), cipher);
        Ok(r)
    }

    /// Seals in place: `buf` holds the header's space (`HEADER_LEN` bytes,
    /// overwritten here) followed by the plaintext body; on return it holds
    /// the whole datagram with the tag appended. Fails only for an unknown
    /// key id (or a body beyond GCM's 64 GiB limit, which no datagram nears).
    pub fn seal_in_place(&mut self, header: &Header, buf: &mut Vec<u8>) -> Result<(), DropReason> {
        let h = header.encode();
        let tag = self.with_cipher(header.key_id, header.sender_id, |cipher| {
            cipher
                .seal_in_place_separate_tag(
                    nonce(header.counter),
                    Aad::from(&h),
                    &mut buf[HEADER_LEN..],
                )
                .map_err(|_| DropReason::Oversized)
        })?;
        buf[..HEADER_LEN].copy_from_slice(&h);
        buf.extend_from_slice(tag.as_ref());
        Ok(())
    }

    /// Seals a header and body into a new datagram.
    pub fn seal(&mut self, header: &Header, body: &[u8]) -> Result<Vec<u8>, DropReason> {
        let mut buf = Vec::with_capacity(HEADER_LEN + body.len() + TAG_LEN);
        buf.extend_from_slice(&[0u8; HEADER_LEN]);
        buf.extend_from_slice(body);
        self.seal_in_place(header, &mut buf)?;
        Ok(buf)
    }

    /// Checks a datagram's header and tag and decrypts it into `scratch`
    /// (reused across calls). Returns the header; the plaintext body is
    /// `scratch[..]` on success (on failure `scratch` holds no plaintext).
    pub fn open_into(
        &mut self,
        datagram: &[u8],
        scratch: &mut Vec<u8>,
    ) -> Result<Header, DropReason> {
        scratch.clear();
        scratch.extend_from_slice(datagram);
        let r = self.open_in_place(scratch);
        match r {
            Ok((header, len)) => {
                scratch.copy_within(HEADER_LEN..HEADER_LEN + len, 0);
                scratch.truncate(len);
                Ok(header)
            }
            Err(e) => {
                scratch.clear();
                Err(e)
            }
        }
    }

    /// Checks and decrypts a datagram in place (saves the copy `open_into`
    /// makes). On success the plaintext body is
    /// `datagram[HEADER_LEN..HEADER_LEN + len]` where `len` is returned with
    /// the header; on failure the body holds no plaintext (`ring` zeroes
    /// what it decrypted before the tag failed).
    pub fn open_in_place(&mut self, datagram: &mut [u8]) -> Result<(Header, usize), DropReason> {
        let header = Header::decode(datagram)?;
        let body_len = datagram.len() - HEADER_LEN - TAG_LEN;
        let (aad, rest) = datagram.split_at_mut(HEADER_LEN);
        let (body, tag) = rest.split_at_mut(body_len);
        let tag = tag_of(tag)?;
        self.with_cipher(header.key_id, header.sender_id, |cipher| {
            cipher
                .open_in_place_separate_tag(nonce(header.counter), Aad::from(&*aad), tag, body, 0..)
                .map(|_| ())
                .map_err(|_| DropReason::BadAuth)
        })?;
        Ok((header, body_len))
    }

    /// Opens a datagram into a fresh plaintext body.
    pub fn open(&mut self, datagram: &[u8]) -> Result<(Header, Vec<u8>), DropReason> {
        let mut body = Vec::new();
        let h = self.open_into(datagram, &mut body)?;
        Ok((h, body))
    }
}

/// Runs the CPU feature detection of AES-GCM (AES-NI, VAES, carry-less
/// multiplication), of BLAKE3 and of the endpoint's ChaCha generator (the
/// standard library's detection) now. Each probes once per process, at its
/// first use, with several CPUID instructions, and in a virtual machine
/// every CPUID traps to the hypervisor (~8 µs each measured here, ~0.2 ms
/// in all). A process that will soon open an endpoint and is waiting for
/// something else meanwhile (`diatom exec` waiting for central's answer)
/// calls this so that its first datagram does not pay.
pub fn detect_cpu_features() {
    use rand::SeedableRng;
    let _ = new_cipher(&[0u8; 32]);
    let _ = blake3::hash(&[]);
    let _ = rand::rngs::StdRng::from_seed([0; 32]);
}

/// The AES-256-GCM key `sender` seals with under key `id`.
fn sender_key(key: &Key, id: KeyId, sender: u64) -> [u8; 32] {
    let mut h = blake3::Hasher::new_derive_key(SUBKEY_CONTEXT);
    h.update(key.as_bytes());
    h.update(&id.to_le_bytes());
    h.update(&sender.to_le_bytes());
    *h.finalize().as_bytes()
}

/// The AES-256-GCM cipher of a 32-byte key (ring accepts every 32-byte
/// key for AES-256).
fn new_cipher(key: &[u8; 32]) -> LessSafeKey {
    LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key).expect("AES-256 takes any 32-byte key"))
}

/// The tag at the end of a datagram (callers slice exactly `TAG_LEN`
/// bytes, so this never fails in practice).
fn tag_of(b: &[u8]) -> Result<Tag, DropReason> {
    Tag::try_from(b).map_err(|_| DropReason::Truncated)
}

/// `counter ‖ 0^4`: unique per (subkey, packet), since each subkey belongs
/// to one sender and its counter only grows.
fn nonce(counter: u64) -> Nonce {
    let mut n = [0u8; 12];
    n[..8].copy_from_slice(&counter.to_le_bytes());
    Nonce::assume_unique_for_key(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{PacketKind, VERSION};

    fn header(key_id: u64) -> Header {
        from(key_id, 7, 9)
    }

    fn from(key_id: u64, sender_id: u64, counter: u64) -> Header {
        Header {
            version: VERSION,
            kind: PacketKind::Data,
            key_id,
            sender_id,
            counter,
        }
    }

    #[test]
    fn aead_round_trip() {
        let mut ring = Keyring::with_cluster_key(&Key::generate());
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
    fn the_wire_is_standard_aes_256_gcm() {
        // ring seals exactly what RustCrypto's AES-256-GCM (the earlier
        // implementation) seals under the same subkey, nonce and header, and
        // opens what it sealed: peers of either build understand each other.
        use aes_gcm::aead::{AeadInOut, KeyInit};
        let k = Key::from_bytes([3; 32]);
        let mut ring = Keyring::with_cluster_key(&k);
        let other = aes_gcm::Aes256Gcm::new(&sender_key(&k, 0, 7).into());
        for len in [0usize, 1, 15, 16, 17, 255, 1400, 65_000] {
            let body: Vec<u8> = (0..len).map(|i| (i * 31 + len) as u8).collect();
            let h = from(0, 7, 1000 + len as u64);
            let d = ring.seal(&h, &body).unwrap();
            let mut n = [0u8; 12];
            n[..8].copy_from_slice(&h.counter.to_le_bytes());
            let mut theirs = body.clone();
            let tag = other
                .encrypt_inout_detached(&n.into(), &h.encode(), (&mut theirs[..]).into())
                .unwrap();
            theirs.extend_from_slice(&tag);
            assert_eq!(&d[HEADER_LEN..], &theirs[..], "body of {len} bytes");
            let mut sealed = h.encode().to_vec();
            sealed.extend_from_slice(&theirs);
            let (opened_h, opened) = ring.open(&sealed).unwrap();
            assert_eq!((opened_h, opened), (h, body));
        }
    }

    #[test]
    fn wrong_key_or_unknown_key_fails() {
        let mut a = Keyring::with_cluster_key(&Key::generate());
        let mut b = Keyring::with_cluster_key(&Key::generate());
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
        let mut ring = Keyring::with_cluster_key(&Key::generate());
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
        let mut ring = Keyring::with_cluster_key(&Key::generate());
        let d = ring
            .seal(&header(0), b"some body worth protecting")
            .unwrap();
        for bit in 0..d.len() * 8 {
            let mut t = d.clone();
            t[bit / 8] ^= 1 << (bit % 8);
            assert!(ring.open(&t).is_err(), "bit {bit} flip accepted");
        }
    }

    #[test]
    fn subkeys_differ_per_sender_key_id_and_key() {
        let k = Key::from_bytes([7; 32]);
        let base = sender_key(&k, 0, 1);
        assert_ne!(base, sender_key(&k, 0, 2));
        assert_ne!(base, sender_key(&k, 1, 1));
        assert_ne!(base, sender_key(&Key::from_bytes([8; 32]), 0, 1));
        assert_ne!(&base, k.as_bytes());
        assert_eq!(base, sender_key(&Key::from_bytes([7; 32]), 0, 1));
    }

    #[test]
    fn a_datagram_of_one_sender_does_not_open_as_anothers() {
        let key = Key::generate();
        let mut ring = Keyring::with_cluster_key(&key);
        let body = b"same body, same counter, two senders";
        let a = ring.seal(&from(0, 1, 5), body).unwrap();
        let b = ring.seal(&from(0, 2, 5), body).unwrap();
        // Same nonce (counter 5), different subkeys: different ciphertexts.
        assert_ne!(a[HEADER_LEN..], b[HEADER_LEN..]);
        // Relabelled as the other sender, a datagram fails (the header is
        // associated data, and the subkey differs too)...
        let mut relabelled = a.clone();
        relabelled[16..24].copy_from_slice(&2u64.to_le_bytes());
        assert_eq!(ring.open(&relabelled).unwrap_err(), DropReason::BadAuth);
        // ...and even with its own header as associated data, sender 2's
        // cipher does not open sender 1's ciphertext.
        let other = new_cipher(&sender_key(&key, 0, 2));
        let mut ct = a[HEADER_LEN..a.len() - TAG_LEN].to_vec();
        let tag = tag_of(&a[a.len() - TAG_LEN..]).unwrap();
        assert!(other
            .open_in_place_separate_tag(nonce(5), Aad::from(&a[..HEADER_LEN]), tag, &mut ct, 0..)
            .is_err());
        assert_eq!(ring.open(&a).unwrap().1, body);
        assert_eq!(ring.open(&b).unwrap().1, body);
    }

    #[test]
    fn only_authentic_senders_are_cached_and_the_cache_is_bounded() {
        let key = Key::generate();
        let mut sender = Keyring::with_cluster_key(&key);
        let mut receiver = Keyring::with_cluster_key(&key);
        let forged = Keyring::with_cluster_key(&Key::generate())
            .seal(&from(0, 99, 1), b"forged")
            .unwrap();
        for s in 0..100u64 {
            let mut d = forged.clone();
            d[16..24].copy_from_slice(&s.to_le_bytes());
            assert_eq!(receiver.open(&d).unwrap_err(), DropReason::BadAuth);
        }
        assert_eq!(receiver.ciphers.len(), 0);
        for s in 0..CACHED_CIPHERS as u64 + 10 {
            let d = sender.seal(&from(0, s, 1), b"hi").unwrap();
            assert_eq!(receiver.open(&d).unwrap().1, b"hi");
        }
        assert_eq!(receiver.ciphers.len(), CACHED_CIPHERS);
        assert_eq!(sender.ciphers.len(), CACHED_CIPHERS);
        // An evicted sender's cipher is derived again.
        let d = sender.seal(&from(0, 0, 2), b"again").unwrap();
        assert_eq!(receiver.open(&d).unwrap().1, b"again");
    }

    #[test]
    fn replacing_or_removing_a_key_drops_its_ciphers() {
        let (k1, k2) = (Key::generate(), Key::generate());
        let mut ring = Keyring::new();
        ring.insert(5, &k1);
        ring.insert(6, &k1);
        let d6 = ring.seal(&from(6, 1, 1), b"six").unwrap();
        let old = ring.seal(&from(5, 1, 1), b"x").unwrap();
        ring.insert(5, &k2);
        let new = ring.seal(&from(5, 1, 1), b"x").unwrap();
        assert_ne!(old, new);
        assert_eq!(ring.open(&old).unwrap_err(), DropReason::BadAuth);
        assert_eq!(
            Keyring::with_cluster_key(&k2).open(&new).unwrap_err(),
            DropReason::UnknownKey
        );
        let mut k2_at_5 = Keyring::new();
        k2_at_5.insert(5, &k2);
        assert_eq!(k2_at_5.open(&new).unwrap().1, b"x");
        assert!(ring.remove(5));
        assert_eq!(ring.open(&new).unwrap_err(), DropReason::UnknownKey);
        assert!(ring.ciphers.keys().all(|(id, _)| *id == 6));
        assert_eq!(ring.open(&d6).unwrap().1, b"six");
    }
}
