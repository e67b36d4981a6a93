//! Round trips of every family and hostile-input checks of the decoders.

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::control::*;
use super::*;

fn samples() -> (Vec<Request>, Vec<Response>) {
    let info = NodeInfo {
        name: "n1".into(),
        cpus: 2,
        slots: 2,
        running: vec![7],
        load: 0.5,
        kernel: "Linux 6.1".into(),
        version: "0.1.0".into(),
        dropped: BTreeMap::from([("bad_auth".to_string(), 3)]),
        cache_bytes: 1 << 20,
        ended: vec![(6, JobEvent::Exited { code: 3 })],
    };
    let image = job::ExecImage {
        argv: vec!["echo".into(), Blob(vec![0xff, 0])],
        program: "/bin/echo".into(),
        interpreter: Some("/lib64/ld-linux-x86-64.so.2".into()),
        libraries: vec![("libc.so.6".into(), "/lib/x86_64-linux-gnu/libc.so.6".into())],
        preload: vec![],
        files: vec![(
            "/bin/echo".into(),
            job::FileStamp {
                size: 5,
                ..Default::default()
            },
        )],
    };
    let launch = job::Launch {
        image: image.clone(),
        envp: vec!["A=b".into()],
        cwd: "/home/alice".into(),
        umask: 0o22,
        hostname: "central".into(),
        exe: "/bin/echo".into(),
        groups: vec![1000, 27],
        tty: Some(job::WinSize { rows: 24, cols: 80 }),
        rlimits: job::Rlimits {
            nofile: (1024, 524288),
            ..Default::default()
        },
        ignored_signals: vec![libc::SIGHUP],
        lookups: vec![
            ("/etc/ld.so.preload".into(), job::Lookup::Missing),
            (
                "/usr/bin/python3".into(),
                job::Lookup::Found {
                    stat: fs::FileStat {
                        mode: libc::S_IFLNK | 0o777,
                        size: 10,
                        ..Default::default()
                    },
                    link: Some("python3.11".into()),
                },
            ),
        ],
    };
    let reqs = vec![
        Request::Dscp(DscpRequest::Ping {
            payload: "x".into(),
        }),
        Request::Dscp(DscpRequest::Status),
        Request::Dscp(DscpRequest::StartJob(StartJob {
            job: 7,
            session_key: [9; 32],
            uid: 1000,
            gid: 1000,
            limits: Limits {
                memory: Some(1 << 30),
                pids: None,
            },
        })),
        Request::Dscp(DscpRequest::Signal { job: 7, signal: 15 }),
        Request::Dscp(DscpRequest::Kill { job: 7 }),
        Request::Dicp(DicpRequest::Heartbeat(info.clone())),
        Request::Dicp(DicpRequest::JobEvent {
            job: 7,
            event: JobEvent::Exited { code: 3 },
        }),
        Request::Dicp(DicpRequest::JobCounters {
            job: 7,
            counters: [
                ("calls.Open".to_string(), 3),
                ("bytes_read".to_string(), 1 << 20),
            ]
            .into_iter()
            .collect(),
        }),
        Request::Job(job::Request::Launch(Box::new(launch))),
        Request::Job(job::Request::Output {
            seq: 10,
            fd: 2,
            data: Blob(vec![1; 100_000]),
        }),
        Request::Job(job::Request::Resize(job::WinSize { rows: 1, cols: 2 })),
        Request::Fs(fs::Request::Open {
            path: "/etc/passwd".into(),
            flags: 0,
            mode: 0,
        }),
        Request::Fs(fs::Request::Read {
            path: "/etc/passwd".into(),
            stamp: job::FileStamp::default(),
            offset: 0,
            len: 4096,
        }),
        Request::Fs(fs::Request::Lock {
            owner: 3,
            path: "/tmp/lock".into(),
            op: fs::LockOp::Set(fs::RangeLock {
                kind: 1,
                start: 10,
                len: 0,
                pid: 0,
            }),
        }),
        Request::Fs(fs::Request::Unlock { owner: 3 }),
        Request::Fs(fs::Request::SetXattr {
            path: "/tmp/f".into(),
            name: "user.x".into(),
            value: Blob(vec![0, 1, 2]),
            flags: 1,
            follow: false,
        }),
        Request::Fs(fs::Request::Exec {
            path: "/bin/sh".into(),
            argv: vec!["sh".into()],
            envp: vec![],
        }),
        Request::Fs(fs::Request::OpenDir {
            path: "/usr/share".into(),
            flags: libc::O_DIRECTORY,
            also: vec!["/usr/lib".into()],
        }),
        Request::Net(net::Request::Connect {
            stream: 1,
            to: net::Addr::Inet("[::1]:80".parse().unwrap()),
        }),
        Request::Net(net::Request::ConnectFrom {
            stream: 2,
            sock: 5,
            to: net::Addr::Inet("10.1.2.3:443".parse().unwrap()),
        }),
        Request::Net(net::Request::Data {
            stream: net::HOME_STREAM | 3,
            seq: 7,
            data: Blob(vec![9; 3000]),
        }),
        Request::Proc(proc::Request::Hostname),
    ];
    let resps = vec![
        Response::Dscp(DscpResponse::Refused {
            reason: "no slot".into(),
        }),
        Response::Dscp(DscpResponse::Status(info)),
        Response::Dicp(DicpResponse::Ack),
        Response::Job(job::Response::Files(vec![
            Ok(Blob(vec![1; 300])),
            Err("gone".into()),
        ])),
        Response::Fs(fs::Response::Data(Blob(vec![7; 5000]))),
        Response::Fs(fs::Response::Exec(Box::new(image))),
        Response::Fs(fs::Response::Lock(Some(fs::RangeLock {
            kind: 0,
            start: 0,
            len: 5,
            pid: -1,
        }))),
        Response::Fs(fs::Response::OpenedDir {
            canonical: "/usr/share".into(),
            stat: fs::FileStat::default(),
            listing: vec![fs::DirEntry {
                name: "doc".into(),
                stat: Some(fs::FileStat::default()),
                link: None,
                no_xattrs: false,
            }],
            ahead: vec![fs::Listing {
                path: "/usr/share/doc".into(),
                stat: fs::FileStat::default(),
                entries: vec![],
            }],
        }),
        Response::Fs(fs::Response::Dir(vec![fs::DirEntry {
            name: "a".into(),
            stat: Some(fs::FileStat::default()),
            link: None,
            no_xattrs: true,
        }])),
        Response::Fs(fs::Response::Stat(fs::FileStat {
            size: 5,
            ..Default::default()
        })),
        Response::Net(net::Response::Connected {
            local: net::Addr::Unix("/run/x.sock".into()),
            peer: net::Addr::Inet("10.0.0.1:443".parse().unwrap()),
        }),
        Response::Proc(proc::Response::Ids {
            uid: 1,
            euid: 1,
            gid: 2,
            egid: 2,
            groups: vec![],
        }),
        Response::unsupported("what?"),
    ];
    (reqs, resps)
}

#[test]
fn round_trips() {
    let (reqs, resps) = samples();
    for r in reqs {
        let b = r.encode().unwrap();
        assert_eq!(Request::decode(&b).unwrap(), r);
        // Truncations and trailing bytes are refused.
        assert!(Request::decode(&b[..b.len() - 1]).is_err());
        let mut longer = b.clone();
        longer.push(0);
        assert!(Request::decode(&longer).is_err());
    }
    for r in resps {
        let b = r.encode().unwrap();
        assert_eq!(Response::decode(&b).unwrap(), r);
    }
}

#[test]
fn blob_is_compact() {
    let b = encode(&Blob(vec![0xff; 1000])).unwrap();
    assert!(b.len() <= 1003, "{}", b.len());
}

#[test]
fn lying_lengths_are_refused() {
    // A Fs::Data response whose blob claims 2^40 bytes in a 20-byte input.
    let mut b = Response::Fs(fs::Response::Data(Blob(vec![1, 2, 3])))
        .encode()
        .unwrap();
    b.truncate(2);
    b.push(255); // varint u64 marker
    b.extend_from_slice(&(1u64 << 40).to_le_bytes());
    assert!(Response::decode(&b).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// Arbitrary bytes never panic any decoder.
    #[test]
    fn decoders_never_panic(b in proptest::collection::vec(any::<u8>(), 0..300)) {
        prop_assert_ne!(canonical_round_trip::<Request>(&b), Some(false));
        prop_assert_ne!(canonical_round_trip::<Response>(&b), Some(false));
        prop_assert_ne!(canonical_round_trip::<DscpRequest>(&b), Some(false));
        prop_assert_ne!(canonical_round_trip::<DicpRequest>(&b), Some(false));
        prop_assert_ne!(canonical_round_trip::<job::Request>(&b), Some(false));
        prop_assert_ne!(canonical_round_trip::<fs::Request>(&b), Some(false));
        prop_assert_ne!(canonical_round_trip::<net::Request>(&b), Some(false));
        prop_assert_ne!(canonical_round_trip::<proc::Request>(&b), Some(false));
    }

    /// Mutated valid encodings never panic either (reaches deeper states).
    #[test]
    fn mutated_messages_never_panic(which in 0usize..14, pos in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let (reqs, _) = samples();
        let mut b = reqs[which % reqs.len()].encode().unwrap();
        let i = pos.index(b.len());
        b[i] = byte;
        let _ = Request::decode(&b);
    }
}

#[test]
fn data_replies_are_framed_in_place() {
    use crate::msg::fs::{data_header, data_span, Response as Fs};
    for len in [0usize, 1, 250, 251, 252, 65_535, 65_536, (1 << 24) + 3] {
        let data: Vec<u8> = (0..len).map(|i| (i * 31) as u8).collect();
        let encoded = Response::Fs(Fs::Data(Blob(data.clone()))).encode().unwrap();
        let mut built = data_header(len);
        let at = built.len();
        built.extend_from_slice(&data);
        assert_eq!(built, encoded, "len {len}");
        assert_eq!(data_span(&encoded), Some(at..encoded.len()), "len {len}");
    }
    // Other replies, truncated or padded ones are not `Data`.
    let other = Response::Fs(Fs::Link(Blob(b"abc".to_vec())))
        .encode()
        .unwrap();
    assert_eq!(data_span(&other), None);
    let mut long = data_header(4);
    long.extend_from_slice(b"abcde");
    assert_eq!(data_span(&long), None);
    long.truncate(long.len() - 2);
    assert_eq!(data_span(&long), None);
    assert_eq!(data_span(&[]), None);
    assert_eq!(
        data_span(&[3, 4, 253, 255, 255, 255, 255, 255, 255, 255, 255]),
        None
    );
}
