use std::os::unix::fs::FileExt;
use std::sync::atomic::AtomicU32;
use std::time::Duration;

use super::*;

struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!(
            "diatom-cache-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn ident(data: &[u8], ino: u64) -> FileIdentity {
    FileIdentity {
        size: data.len() as u64,
        mtime_ns: 1_700_000_000_000_000_000,
        ctime_ns: 1_700_000_000_000_000_001,
        ino,
        dev: 2049,
    }
}

/// Deterministic pseudo-random content.
fn content(len: usize, seed: u8) -> Vec<u8> {
    let mut x = u32::from(seed).wrapping_mul(2_654_435_761) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

fn tmp_entries(dir: &TempDir) -> usize {
    std::fs::read_dir(dir.0.join("cache/tmp")).unwrap().count()
}

#[test]
fn insert_then_lookup() {
    let t = TempDir::new();
    let c = Cache::open(&t.0).unwrap();
    let data = content(100_000, 1);
    let id = ident(&data, 7);
    let p = Path::new("/usr/lib/libfoo.so");
    assert_eq!(c.lookup(p, &id), None);
    let obj = c.insert(p, &id, None, &data[..]).unwrap();
    assert_eq!(obj.hash, blake3::hash(&data));
    assert_eq!(obj.size, data.len() as u64);
    assert_eq!(std::fs::read(&obj.path).unwrap(), data);
    assert_eq!(c.lookup(p, &id), Some(obj.clone()));
    assert_eq!(c.lookup_hash(&obj.hash), Some(obj.path.clone()));
    let s = c.stats();
    assert_eq!((s.objects, s.bytes, s.entries), (1, 100_000, 1));
    assert_eq!((s.hits, s.misses), (2, 1));
    assert_eq!(tmp_entries(&t), 0);
}

#[test]
fn any_identity_change_misses() {
    let t = TempDir::new();
    let c = Cache::open(&t.0).unwrap();
    let data = content(1000, 2);
    let id = ident(&data, 7);
    let p = Path::new("/etc/x");
    c.insert(p, &id, None, &data[..]).unwrap();
    let changes: [fn(&mut FileIdentity); 5] = [
        |i| i.size += 1,
        |i| i.mtime_ns += 1,
        |i| i.ctime_ns += 1,
        |i| i.ino += 1,
        |i| i.dev += 1,
    ];
    for (k, change) in changes.iter().enumerate() {
        let mut other = id;
        change(&mut other);
        assert_eq!(c.lookup(p, &other), None, "change {k}");
    }
    assert_eq!(c.lookup(Path::new("/etc/y"), &id), None, "other path");
    assert!(c.lookup(p, &id).is_some());
}

#[test]
fn bad_hash_or_size_stores_nothing() {
    let t = TempDir::new();
    let c = Cache::open(&t.0).unwrap();
    let data = content(300_000, 3);
    let id = ident(&data, 1);
    let wrong = blake3::hash(b"something else");
    let p = Path::new("/bin/x");
    match c.insert(p, &id, Some(wrong), &data[..]) {
        Err(CacheError::HashMismatch { expected, actual }) => {
            assert_eq!(expected, wrong);
            assert_eq!(actual, blake3::hash(&data));
        }
        other => panic!("{other:?}"),
    }
    // Short and long content.
    assert!(matches!(
        c.insert(p, &id, None, &data[..data.len() - 1]),
        Err(CacheError::SizeMismatch { .. })
    ));
    let mut long = data.clone();
    long.push(0);
    assert!(matches!(
        c.insert(p, &id, None, &long[..]),
        Err(CacheError::SizeMismatch { .. })
    ));
    assert_eq!(c.lookup(p, &id), None);
    assert_eq!(c.lookup_hash(&blake3::hash(&data)), None);
    assert_eq!(c.stats().objects, 0);
    assert_eq!(tmp_entries(&t), 0, "no temporary file left");
    let objects = std::fs::read_dir(t.0.join("cache/objects"))
        .unwrap()
        .count();
    assert_eq!(objects, 0, "no object directory created");
}

#[test]
fn an_object_gone_from_the_disk_is_fetched_again() {
    let t = TempDir::new();
    let c = Cache::open(&t.0).unwrap();
    let data = content(30_000, 9);
    let (a, b) = (Path::new("/bin/a"), Path::new("/bin/b"));
    let obj = c.insert(a, &ident(&data, 1), None, &data[..]).unwrap();
    c.insert(b, &ident(&data, 2), Some(obj.hash), &data[..])
        .unwrap();
    // Deleted behind the daemon's back: a miss (both paths), not a path
    // that cannot be opened.
    std::fs::remove_file(&obj.path).unwrap();
    assert_eq!(c.lookup(a, &ident(&data, 1)), None);
    assert_eq!(c.lookup(b, &ident(&data, 2)), None);
    assert_eq!(c.lookup_hash(&obj.hash), None);
    let s = c.stats();
    assert_eq!((s.objects, s.bytes, s.entries), (0, 0, 0));
    // Fetched again, it is read (not linked to the lost object).
    let again = c
        .insert(a, &ident(&data, 1), Some(obj.hash), &data[..])
        .unwrap();
    assert_eq!(std::fs::read(&again.path).unwrap(), data);
    // Cut short: the same.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&again.path)
        .or_else(|_| {
            std::fs::set_permissions(&again.path, Permissions::from_mode(0o600))?;
            std::fs::OpenOptions::new().write(true).open(&again.path)
        })
        .unwrap()
        .set_len(10)
        .unwrap();
    assert_eq!(c.lookup(a, &ident(&data, 1)), None);
    // The forgetting survives a restart.
    drop(c);
    let c = Cache::open(&t.0).unwrap();
    assert_eq!(c.lookup(a, &ident(&data, 1)), None);
    assert_eq!(c.stats().entries, 0);
}

#[test]
fn same_content_under_two_paths_is_one_object() {
    let t = TempDir::new();
    let c = Cache::open(&t.0).unwrap();
    let data = content(5000, 4);
    let h = blake3::hash(&data);
    let a = c
        .insert(Path::new("/a"), &ident(&data, 1), None, &data[..])
        .unwrap();
    // Central tells the hash of /b; the content is not read again.
    struct Unreadable;
    impl Read for Unreadable {
        fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
            panic!("content read although the object was cached");
        }
    }
    let b = c
        .insert(Path::new("/b"), &ident(&data, 2), Some(h), Unreadable)
        .unwrap();
    assert_eq!(a.path, b.path);
    let l = c.link(Path::new("/c"), &ident(&data, 3), &h).unwrap();
    assert_eq!(l.path, a.path);
    // link refuses a hash it does not have.
    assert_eq!(
        c.link(Path::new("/d"), &ident(&data, 4), &blake3::hash(b"x")),
        None
    );
    let s = c.stats();
    assert_eq!((s.objects, s.entries, s.bytes), (1, 3, 5000));
    assert!(c.lookup(Path::new("/b"), &ident(&data, 2)).is_some());
}

#[test]
fn survives_reopen() {
    let t = TempDir::new();
    let data = content(4096, 5);
    let id = ident(&data, 9);
    let p = Path::new("/lib/ld.so");
    let obj = {
        let c = Cache::open(&t.0).unwrap();
        // A second open of a held cache is refused.
        assert!(matches!(Cache::open(&t.0), Err(CacheError::Locked(_))));
        c.insert(p, &id, None, &data[..]).unwrap()
    };
    // A leftover of a crash mid-write is cleaned at open.
    std::fs::write(t.0.join("cache/tmp/i-1-1"), b"torn").unwrap();
    let c = Cache::open(&t.0).unwrap();
    assert_eq!(c.lookup(p, &id), Some(obj));
    assert_eq!(tmp_entries(&t), 0);
    let s = c.stats();
    assert_eq!((s.objects, s.bytes, s.entries), (1, 4096, 1));
}

#[test]
fn index_compacts_and_survives_many_updates() {
    let t = TempDir::new();
    let data = content(10, 6);
    let p = Path::new("/changing");
    {
        let c = Cache::open(&t.0).unwrap();
        let h = c.insert(p, &ident(&data, 0), None, &data[..]).unwrap().hash;
        for i in 1..3000 {
            // The same path with a new identity each time: dead records pile up.
            c.link(p, &ident(&data, i), &h).unwrap();
        }
    }
    let log_len = std::fs::metadata(t.0.join("cache/index.log"))
        .unwrap()
        .len();
    assert!(log_len < 1100 * 100, "log not compacted: {log_len} bytes");
    let c = Cache::open(&t.0).unwrap();
    assert!(c.lookup(p, &ident(&data, 2999)).is_some());
    assert!(c.lookup(p, &ident(&data, 2998)).is_none());
}

#[test]
fn eviction_removes_least_recently_used() {
    let t = TempDir::new();
    let c = Cache::open(&t.0).unwrap();
    let mut objs = Vec::new();
    for i in 0..4u8 {
        let data = content(1000, 10 + i);
        let p = PathBuf::from(format!("/f{i}"));
        let id = ident(&data, u64::from(i));
        objs.push((p.clone(), id, c.insert(&p, &id, None, &data[..]).unwrap()));
    }
    // Use f0 so f1 becomes the oldest.
    assert!(c.lookup(&objs[0].0, &objs[0].1).is_some());
    assert_eq!(c.evict_to(4000).unwrap(), 0);
    assert_eq!(c.evict_to(2500).unwrap(), 2000);
    let alive: Vec<bool> = objs
        .iter()
        .map(|(p, id, _)| c.lookup(p, id).is_some())
        .collect();
    assert_eq!(alive, [true, false, false, true]);
    assert!(!objs[1].2.path.exists());
    assert!(objs[0].2.path.exists());
    let s = c.stats();
    assert_eq!((s.objects, s.bytes, s.entries), (2, 2000, 2));
    drop(c);
    // Evicted entries stay gone after a restart.
    let c = Cache::open(&t.0).unwrap();
    assert!(c.lookup(&objs[1].0, &objs[1].1).is_none());
    assert!(c.lookup(&objs[3].0, &objs[3].1).is_some());
}

#[test]
fn concurrent_inserts_of_the_same_content() {
    let t = TempDir::new();
    let c = Cache::open(&t.0).unwrap();
    let data = content(1 << 20, 7);
    let objs: Vec<CachedObject> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..8u64)
            .map(|i| {
                let (c, data) = (&c, &data);
                s.spawn(move || {
                    let p = PathBuf::from(format!("/p{}", i % 3));
                    c.insert(&p, &ident(data, i % 3), None, &data[..]).unwrap()
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(objs.windows(2).all(|w| w[0] == w[1]));
    assert_eq!(std::fs::read(&objs[0].path).unwrap(), data);
    let s = c.stats();
    assert_eq!((s.objects, s.bytes, s.entries), (1, 1 << 20, 3));
    assert_eq!(tmp_entries(&t), 0);
}

#[test]
fn objects_are_0555_and_dirs_0711() {
    let t = TempDir::new();
    let c = Cache::open(&t.0).unwrap();
    let data = content(10, 8);
    let obj = c
        .insert(Path::new("/x"), &ident(&data, 1), None, &data[..])
        .unwrap();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode(&obj.path), 0o555);
    assert_eq!(mode(obj.path.parent().unwrap()), 0o711);
    assert_eq!(mode(&t.0.join("cache/objects")), 0o711);
    assert_eq!(mode(&t.0.join("cache")), 0o711);
    // The object path is objects/<2 hex>/<62 hex>.
    let hex = obj.hash.to_hex();
    assert_eq!(
        obj.path,
        t.0.join("cache/objects").join(&hex[..2]).join(&hex[2..])
    );
}

#[test]
fn partial_object_out_of_order_with_early_readers() {
    let t = TempDir::new();
    let c = Cache::open(&t.0).unwrap();
    let data = content(1_000_000, 9);
    let id = ident(&data, 5);
    let p = Path::new("/big");
    let part = c.begin(p, &id, data.len() as u64).unwrap();
    assert!(Arc::ptr_eq(&c.in_progress(p, &id).unwrap(), &part));
    assert!(c.in_progress(p, &ident(&data, 6)).is_none());

    // A reader waiting for the first 100 KB, on another thread.
    let reader = {
        let part = part.clone();
        let expect = data[..100_000].to_vec();
        std::thread::spawn(move || {
            assert!(part.wait_ready(100_000, Duration::from_secs(10)));
            let f = part.open_read().unwrap();
            let mut buf = vec![0; 100_000];
            f.read_exact_at(&mut buf, 0).unwrap();
            assert_eq!(buf, expect);
            // The descriptor stays valid across finish.
            f
        })
    };
    // Chunks of 64 KiB, odd ones first, then even ones, one duplicated
    // with garbage after it was hashed.
    let chunk = 65_536;
    let chunks: Vec<usize> = (0..data.len().div_ceil(chunk)).collect();
    for &i in chunks.iter().filter(|i| *i % 2 == 1) {
        let s = i * chunk;
        part.write_at(s as u64, &data[s..(s + chunk).min(data.len())])
            .unwrap();
    }
    assert_eq!(part.ready_up_to(), 0);
    assert!(!part.wait_ready(1, Duration::from_millis(10)));
    for &i in chunks.iter().filter(|i| *i % 2 == 0) {
        let s = i * chunk;
        part.write_at(s as u64, &data[s..(s + chunk).min(data.len())])
            .unwrap();
        if i == 0 {
            assert_eq!(part.ready_up_to(), 2 * chunk as u64);
            part.write_at(0, &vec![0xee; chunk]).unwrap();
        }
    }
    assert_eq!(part.ready_up_to(), data.len() as u64);
    assert!(matches!(
        part.write_at(data.len() as u64 - 1, b"xx"),
        Err(CacheError::OutOfBounds { .. })
    ));
    let early = reader.join().unwrap();
    let obj = part.finish(blake3::hash(&data)).unwrap();
    assert_eq!(std::fs::read(&obj.path).unwrap(), data);
    let mut buf = vec![0; 10];
    early.read_exact_at(&mut buf, 999_990).unwrap();
    assert_eq!(buf, data[999_990..]);
    assert_eq!(c.lookup(p, &id), Some(obj.clone()));
    assert_eq!(part.path(), obj.path);
    assert!(c.in_progress(p, &id).is_none());
    drop(part);
    assert!(
        obj.path.exists(),
        "dropping a finished partial keeps the object"
    );
    assert_eq!(tmp_entries(&t), 0);
}

#[test]
fn partial_object_large_writes_hash_beside() {
    // Writes of 1 MiB and more in order are hashed on a second thread;
    // mixed with small, out-of-order and overlapping ones the hash is the
    // content's.
    let t = TempDir::new();
    let c = Cache::open(&t.0).unwrap();
    let data = content(7 << 20, 3);
    let part = c
        .begin(Path::new("/large"), &ident(&data, 8), data.len() as u64)
        .unwrap();
    let mib = 1 << 20;
    part.write_at(0, &data[..2 * mib]).unwrap();
    part.write_at(5 * mib as u64, &data[5 * mib..]).unwrap();
    part.write_at(2 * mib as u64, &data[2 * mib..2 * mib + 100])
        .unwrap();
    part.write_at(mib as u64, &data[mib..5 * mib]).unwrap();
    assert_eq!(part.ready_up_to(), data.len() as u64);
    let obj = part.finish(blake3::hash(&data)).unwrap();
    assert_eq!(std::fs::read(&obj.path).unwrap(), data);
}

#[test]
fn partial_object_populated_ahead() {
    // Ranges populated before their bytes arrive read as what was written
    // later; a range past the end or unaligned is left alone.
    let t = TempDir::new();
    let c = Cache::open(&t.0).unwrap();
    let data = content((3 << 20) + 123, 4);
    let part = c
        .begin(Path::new("/ahead"), &ident(&data, 9), data.len() as u64)
        .unwrap();
    part.populate(0, 1 << 20);
    part.populate(2 << 20, data.len() - (2 << 20));
    part.populate(1, 4096);
    part.populate(3 << 20, 1 << 20);
    assert_eq!(part.ready_up_to(), 0);
    part.write_at(0, &data).unwrap();
    let obj = part.finish(blake3::hash(&data)).unwrap();
    assert_eq!(std::fs::read(&obj.path).unwrap(), data);
}

#[test]
fn partial_object_rejects_bad_hash_and_incomplete() {
    let t = TempDir::new();
    let c = Cache::open(&t.0).unwrap();
    let data = content(10_000, 11);
    let id = ident(&data, 5);
    assert!(matches!(
        c.begin(Path::new("/f"), &id, 3),
        Err(CacheError::SizeMismatch { .. })
    ));
    let part = c.begin(Path::new("/f"), &id, data.len() as u64).unwrap();
    part.write_at(0, &data[..5000]).unwrap();
    assert!(matches!(
        part.finish(blake3::hash(&data)),
        Err(CacheError::Incomplete {
            ready: 5000,
            size: 10_000
        })
    ));
    part.write_at(5000, &data[5000..]).unwrap();
    let tmp = part.tmp_path().to_path_buf();
    assert!(tmp.exists());
    assert!(matches!(
        part.finish(blake3::hash(b"no")),
        Err(CacheError::HashMismatch { .. })
    ));
    assert!(!tmp.exists());
    assert!(matches!(
        part.write_at(0, b"x"),
        Err(CacheError::NotWriting)
    ));
    assert_eq!(c.stats().objects, 0);

    // Abandoned: the temporary file goes with the last reference.
    let part = c.begin(Path::new("/g"), &id, data.len() as u64).unwrap();
    part.write_at(0, &data[..10]).unwrap();
    let tmp = part.tmp_path().to_path_buf();
    drop(part);
    assert!(!tmp.exists());
    assert_eq!(tmp_entries(&t), 0);
}

#[test]
fn empty_file() {
    let t = TempDir::new();
    let c = Cache::open(&t.0).unwrap();
    let id = ident(b"", 1);
    let obj = c
        .insert(Path::new("/empty"), &id, Some(blake3::hash(b"")), &b""[..])
        .unwrap();
    assert_eq!(obj.size, 0);
    let part = c.begin(Path::new("/empty2"), &id, 0).unwrap();
    assert_eq!(part.finish(blake3::hash(b"")).unwrap().path, obj.path);
}
