//! The job's network goes through central (issue 7, network part; the
//! contract is `docs/network.md`). A real cluster: servers and clients
//! live in central's network namespace, on the central-only address that
//! no node can route to (checked), so a job reaches them only through its
//! home; and a port the job listens on is opened on central, not on the
//! node (checked from both namespaces). The job programs are real
//! `python3`, `curl` and `getent`.
// Helpers here are test code too; clippy's allow-unwrap-in-tests only covers
// #[test] functions themselves.
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use diatom_tests::cluster::{
    describe, local, pseudo_random, set_mode, DiatomCluster, Feed, Spawned,
};
use diatom_tests::netns::MountView;
use diatom_tests::require_root;
use diatom_tests::testdir::TestDir;

/// How long one job of these tests may run.
const RUN: Duration = Duration::from_secs(120);

/// A directory of job scripts, readable by everyone.
fn scripts(test: &str) -> TestDir {
    let d = TestDir::new(&format!("{test}-net")).unwrap();
    set_mode(d.path(), 0o755);
    d
}

fn put(dir: &TestDir, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    set_mode(&p, 0o644);
    p.display().to_string()
}

/// For test `test` (when it can run): a one-node cluster named `name`, a
/// script directory and the central-only address.
fn start(test: &str, name: &str) -> Option<(DiatomCluster, TestDir, Ipv4Addr)> {
    if !require_root(test) {
        return None;
    }
    let c = DiatomCluster::builder(1).name(name).start();
    let ip = c.net().central_only_addr();
    Some((c, scripts(name), ip))
}

/// Runs `f` on a thread in central's network namespace.
fn in_central<T: Send>(c: &DiatomCluster, f: impl FnOnce() -> T + Send) -> T {
    c.net().central.run(f).unwrap()
}

/// `diatom exec ARGS` to completion, failing the test on a timeout.
fn exec(c: &DiatomCluster, args: &[&str]) -> Output {
    let mut all = vec!["exec", "--"];
    all.extend_from_slice(args);
    c.run(c.diatom_cmd(&all), Feed::Null, RUN)
}

/// Writes the Python script `(name, code)` to `dir` and runs it with
/// `args` under `diatom exec`; its stdout (it must succeed) and output.
fn python(
    c: &DiatomCluster,
    dir: &TestDir,
    (name, code): (&str, &str),
    args: &[&dyn std::fmt::Display],
) -> (String, Output) {
    let script = put(dir, name, code);
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let mut argv = vec!["/usr/bin/python3", script.as_str()];
    argv.extend(args.iter().map(String::as_str));
    let out = exec(c, &argv);
    (ok_text(&out, &format!("python3 {name}")), out)
}

/// Starts `diatom exec ARGS` in the background.
fn spawn(c: &DiatomCluster, args: &[&str]) -> Spawned {
    let mut all = vec!["exec", "--"];
    all.extend_from_slice(args);
    Spawned::spawn(c.diatom_cmd(&all), Feed::Null)
}

/// Waits until the job printed a line starting with `prefix` and returns
/// the rest of it.
fn wait_line(job: &mut Spawned, prefix: &str) -> String {
    let deadline = Instant::now() + RUN;
    loop {
        let out = String::from_utf8_lossy(&job.stdout_so_far()).into_owned();
        if let Some(line) = out.lines().find(|l| l.starts_with(prefix)) {
            if out.contains(&format!("{line}\n")) {
                return line[prefix.len()..].trim().to_owned();
            }
        }
        if let Some(st) = job.try_wait() {
            panic!(
                "the job exited ({st}) before printing {prefix:?}\nstdout: {out}\nstderr: {}",
                String::from_utf8_lossy(&job.stderr_so_far())
            );
        }
        assert!(
            Instant::now() < deadline,
            "no {prefix:?} from the job: {out}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn ok_text(out: &Output, what: &str) -> String {
    assert!(out.status.success(), "{what}: {}", describe(out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn sha256_hex(data: &[u8], dir: &TestDir) -> String {
    let p = dir.join("expected.bin");
    std::fs::write(&p, data).unwrap();
    let out = local(
        "/usr/bin/python3",
        &[
            "-c",
            "import hashlib,sys;print(hashlib.sha256(open(sys.argv[1],'rb').read()).hexdigest())",
            p.to_str().unwrap(),
        ],
        Feed::Null,
    );
    ok_text(&out, "local sha256").trim().to_owned()
}

/// The head of [`serve_http`]'s answers.
fn http_head(len: usize) -> String {
    format!(
        "HTTP/1.0 200 OK\r\nContent-Type: application/octet-stream\r\n\
         Content-Length: {len}\r\n\r\n"
    )
}

/// A minimal HTTP/1.0 server on `l` (in central's namespace): every
/// request gets `body`.
fn serve_http(l: TcpListener, body: Vec<u8>) {
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut conn) = conn else { continue };
            let body = body.clone();
            std::thread::spawn(move || {
                let mut req = Vec::new();
                let mut b = [0u8; 1024];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut b) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => req.extend_from_slice(&b[..n]),
                    }
                }
                let _ = conn.write_all(http_head(body.len()).as_bytes());
                let _ = conn.write_all(&body);
            });
        }
    });
}

/// Whether a TCP connect from node 1's namespace to `addr` succeeds.
fn node_reaches(c: &DiatomCluster, addr: SocketAddr) -> bool {
    c.net().nodes[0]
        .ns
        .run(move || TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_ok())
        .unwrap()
}

/// A port that nothing listens on in central's namespace.
fn closed_port(c: &DiatomCluster, ip: Ipv4Addr) -> u16 {
    c.net()
        .central
        .run(move || {
            TcpListener::bind((ip, 0))
                .unwrap()
                .local_addr()
                .unwrap()
                .port()
        })
        .unwrap()
}

const FETCH_PY: &str = r#"
import hashlib, socket, sys
host, port, closed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
s = socket.create_connection((host, port))
s.sendall(b"GET / HTTP/1.0\r\n\r\n")
chunks = []
while True:
    b = s.recv(1 << 16)
    if not b:
        break
    chunks.append(b)
data = b"".join(chunks)
body = data.split(b"\r\n\r\n", 1)[1]
print("body", len(body), hashlib.sha256(body).hexdigest())
print("peer", *s.getpeername())
s.close()
try:
    socket.create_connection((host, closed), timeout=20)
    print("closed port: connected")
except OSError as e:
    print("closed port errno", e.errno)
"#;

const NONBLOCKING_PY: &str = r#"
import errno, selectors, socket, sys
host, port, port6 = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
s = socket.socket()
s.setblocking(False)
print("connect_ex", s.connect_ex((host, port)) in (0, errno.EINPROGRESS))
sel = selectors.DefaultSelector()
sel.register(s, selectors.EVENT_WRITE)
assert sel.select(timeout=30), "never writable"
print("so_error", s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR))
s.send(b"GET / HTTP/1.0\r\n\r\n")
sel.modify(s, selectors.EVENT_READ)
n = 0
while True:
    assert sel.select(timeout=30), "never readable"
    try:
        b = s.recv(1 << 16)
    except BlockingIOError:
        continue
    if not b:
        break
    n += len(b)
print("got", n)
v6 = socket.create_connection(("::1", port6))
v6.sendall(b"GET / HTTP/1.0\r\n\r\n")
d = b""
while True:
    b = v6.recv(65536)
    if not b:
        break
    d += b
print("v6", d.split(b"\r\n\r\n", 1)[1].decode(), v6.getpeername()[:2])
"#;

#[test]
fn network_tcp_to_a_central_only_server() {
    let Some((c, dir, ip)) = start("network_tcp_to_a_central_only_server", "ntcp") else {
        return;
    };
    let l = in_central(&c, move || TcpListener::bind((ip, 0)).unwrap());
    let port = l.local_addr().unwrap().port();
    let server = SocketAddr::from((ip, port));
    let body = pseudo_random(6 << 20, 7);
    let sha = sha256_hex(&body, &dir);
    serve_http(l, body.clone());
    assert!(
        !node_reaches(&c, server),
        "test setup: the node must not reach {server} itself"
    );
    let closed = closed_port(&c, ip);

    let (text, out) = python(&c, &dir, ("fetch.py", FETCH_PY), &[&ip, &port, &closed]);
    let want = format!(
        "body {} {sha}\npeer {ip} {port}\nclosed port errno {}\n",
        body.len(),
        libc::ECONNREFUSED
    );
    assert_eq!(text, want, "python3 through central: {}", describe(&out));

    // Non-blocking connect with selectors, and central's own IPv6 loopback
    // (the node has a ::1 too, with nothing listening).
    let l6 = in_central(&c, || TcpListener::bind("[::1]:0").unwrap());
    let port6 = l6.local_addr().unwrap().port();
    serve_http(l6, b"hello v6".to_vec());
    let script = ("nonblocking.py", NONBLOCKING_PY);
    let (text, out) = python(&c, &dir, script, &[&ip, &port, &port6]);
    let total = http_head(body.len()).len() + body.len();
    let want = format!("connect_ex True\nso_error 0\ngot {total}\nv6 hello v6 ('::1', {port6})\n");
    assert_eq!(text, want, "non-blocking and IPv6: {}", describe(&out));

    // Upload: what the job writes just before it exits reaches central.
    let sink = in_central(&c, move || TcpListener::bind((ip, 0)).unwrap());
    let sink_port = sink.local_addr().unwrap().port();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let (mut conn, _) = sink.accept().unwrap();
        let mut got = Vec::new();
        let _ = conn.read_to_end(&mut got);
        let _ = tx.send(got);
    });
    // With sendfile(2) from a central file, in a forked child.
    let sent = pseudo_random(5 << 20, 11);
    let file = dir.join("upload.bin");
    std::fs::write(&file, &sent).unwrap();
    set_mode(&file, 0o644);
    let upload = "import os,socket,sys\n\
                  if os.fork() == 0:\n\
                  \x20   s = socket.create_connection((sys.argv[1], int(sys.argv[2])))\n\
                  \x20   s.sendfile(open(sys.argv[3], 'rb'))\n\
                  \x20   os._exit(0)\n\
                  os.wait()\n";
    let file = file.display().to_string();
    let argv = [
        "/usr/bin/python3",
        "-c",
        upload,
        &ip.to_string(),
        &sink_port.to_string(),
        &file,
    ];
    ok_text(&exec(&c, &argv), "python3 upload");
    let got = rx.recv_timeout(RUN).unwrap();
    assert!(
        got == sent,
        "central received {} bytes of the {} the job sent before exiting",
        got.len(),
        sent.len()
    );

    // Bind, then connect: the connection leaves central from the address
    // the job bound (a server there says whom it sees), time after time.
    let teller = in_central(&c, move || TcpListener::bind((ip, 0)).unwrap());
    let teller_port = teller.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in teller.incoming() {
            let Ok(mut conn) = conn else { return };
            let seen = conn.peer_addr().map(|a| a.to_string()).unwrap_or_default();
            let _ = conn.write_all(format!("{seen}\n").as_bytes());
        }
    });
    let n = 1100;
    let (text, out) = python(
        &c,
        &dir,
        ("bound.py", BOUND_CONNECT_PY),
        &[&ip, &teller_port, &n],
    );
    assert_eq!(
        text,
        format!("from the bound address {n}\n"),
        "{}",
        describe(&out)
    );
    // Sockets only bound, or bound for a connect central refused, then
    // closed: their address is free again for the next socket, as it is
    // locally (close is not stopped: the relay finds them closed).
    let rebind = "import socket, sys\n\
                  host, closed = sys.argv[1], int(sys.argv[2])\n\
                  p = socket.socket(); p.bind((host, 0)); port = p.getsockname()[1]\n\
                  p.close()\n\
                  s = socket.socket(); s.bind((host, port))\n\
                  print('refused', s.connect_ex((host, closed)))\n\
                  s.close()\n\
                  t = socket.socket(); t.bind((host, port))\n\
                  print('bound again', t.getsockname()[1] == port)\n";
    let (text, out) = python(&c, &dir, ("rebind.py", rebind), &[&ip, &closed]);
    assert_eq!(
        text,
        format!("refused {}\nbound again True\n", libc::ECONNREFUSED),
        "{}",
        describe(&out)
    );

    if Path::new("/usr/bin/curl").exists() {
        let url = format!("http://{server}/blob");
        // From a child of the shell.
        let line = format!("/usr/bin/curl -sS --max-time 60 {url}; true");
        let out = exec(&c, &["/bin/sh", "-c", &line]);
        assert!(
            out.status.success() && out.stdout == body,
            "curl {url} through central: {} (got {} bytes of {})",
            out.status,
            out.stdout.len(),
            body.len()
        );
    }
}

const LISTEN_PY: &str = r#"
import selectors, socket, sys
b = socket.socket()
try:
    b.bind(("0.0.0.0", int(sys.argv[1])))
    print("busy port: bound", flush=True)
except OSError as e:
    print("busy port errno", e.errno, flush=True)
b.close()
l = socket.socket()
l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
l.bind(("0.0.0.0", 0))
l.listen(4)
print("port", l.getsockname()[1], flush=True)
l.setblocking(False)
sel = selectors.DefaultSelector()
sel.register(l, selectors.EVENT_READ)
assert sel.select(timeout=100), "no connection"
c, a = l.accept()
print("peer", a[0], flush=True)
print("local", *c.getsockname(), flush=True)
c.setblocking(True)
data = b""
while not data.endswith(b"\n"):
    chunk = c.recv(100)
    if not chunk:
        break
    data += chunk
c.sendall(b"job says " + data)
c.shutdown(socket.SHUT_WR)
print("eof", c.recv(100) == b"", flush=True)
c.close()
port = l.getsockname()[1]
l.close()
again = socket.socket()
again.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
again.bind(("0.0.0.0", port))
print("bound again", again.getsockname()[1] == port, flush=True)
"#;

#[test]
fn network_job_listens_on_central() {
    let Some((c, dir, ip)) = start("network_job_listens_on_central", "nlisten") else {
        return;
    };
    // A port already in use on central (not on the node).
    let busy = in_central(&c, || TcpListener::bind("0.0.0.0:0").unwrap());
    let busy_port = busy.local_addr().unwrap().port().to_string();
    let script = put(&dir, "listen.py", LISTEN_PY);
    let mut job = spawn(&c, &["/usr/bin/python3", &script, &busy_port]);
    let port: u16 = wait_line(&mut job, "port ").parse().unwrap();
    assert_ne!(port, 0);
    // Not open on the node, on any of its addresses.
    for node_ip in [Ipv4Addr::LOCALHOST, c.net().nodes[0].addr] {
        assert!(
            !node_reaches(&c, SocketAddr::from((node_ip, port))),
            "port {port} is open on the node ({node_ip})"
        );
    }
    // Open on central: a client there exchanges data with the job.
    let reply = in_central(&c, move || {
        let mut s = TcpStream::connect((ip, port)).unwrap();
        s.write_all(b"hello from central\n").unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).unwrap();
        got
    });
    assert_eq!(
        String::from_utf8_lossy(&reply),
        "job says hello from central\n"
    );
    let out = job.wait_or_panic(RUN, "the listening job");
    let text = ok_text(&out, "python3 listen.py");
    assert_eq!(
        text,
        format!(
            "busy port errno {}\nport {port}\npeer {ip}\nlocal {ip} {port}\neof True\n\
             bound again True\n",
            libc::EADDRINUSE
        ),
        "{}",
        describe(&out)
    );
}

const UDP_PY: &str = r#"
import selectors, socket, sys
host, port, port6 = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(30)
s.sendto(b"one", (host, port))
data, src = s.recvfrom(100)
print("recvfrom", data.decode(), *src)
c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
c.connect((host, port))
c.send(b"two")
c.setblocking(False)
sel = selectors.DefaultSelector()
sel.register(c, selectors.EVENT_READ)
assert sel.select(timeout=30), "no reply"
print("connected", c.recv(100).decode(), *c.getpeername())
s6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s6.settimeout(30)
s6.sendto(b"six", ("::1", port6))
data, src = s6.recvfrom(100)
print("ipv6", data.decode(), *src[:2])
# The address structures at a multiple of 4 GiB (their pointers' low 32
# bits are zero): still central's addresses, both ways.
import ctypes, select, struct
libc = ctypes.CDLL(None, use_errno=True)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int,
                      ctypes.c_int, ctypes.c_int, ctypes.c_long]
at = None
for k in range(1, 64):
    # PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS|MAP_FIXED_NOREPLACE
    got = libc.mmap(k << 32, 4096, 3, 0x22 | 0x100000, -1, 0)
    if got == k << 32:
        at = got
        break
assert at, "no page at a multiple of 4 GiB"
to = struct.pack("=H", socket.AF_INET) + struct.pack("!H", port) + socket.inet_aton(host) + bytes(8)
ctypes.memmove(at, to, len(to))
f = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
libc.sendto.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t,
                        ctypes.c_int, ctypes.c_void_p, ctypes.c_uint]
n = libc.sendto(f.fileno(), b"far", 3, 0, at, len(to))
assert n == 3, "sendto: errno %d" % ctypes.get_errno()
assert select.select([f], [], [], 30)[0], "no reply to far"
buf = ctypes.create_string_buffer(100)
ctypes.memmove(at + 4000, struct.pack("=I", 16), 4)
libc.recvfrom.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t,
                          ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p]
# The source at the page's start again (a pointer at 4 GiB once more).
ctypes.memset(at, 0, 16)
n = libc.recvfrom(f.fileno(), buf, 100, 0, at, at + 4000)
assert n > 0, "recvfrom: errno %d" % ctypes.get_errno()
src = ctypes.string_at(at, 16)
print("far", buf.raw[:n].decode(), socket.inet_ntoa(src[4:8]), struct.unpack("!H", src[2:4])[0])
"#;

/// Stream sockets bound before they connect, one after the other.
const BOUND_CONNECT_PY: &str = r#"
import socket, sys
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for i in range(n):
    s = socket.socket()
    s.bind((host, 0))
    bound = "%s:%d" % s.getsockname()
    s.connect((host, port))
    seen = s.makefile().readline().strip()
    mine = "%s:%d" % s.getsockname()
    assert seen == bound == mine, (i, seen, bound, mine)
    s.close()
print("from the bound address", n)
"#;

/// A long job's short-lived UDP sockets, one after the other (a resolver
/// makes one per lookup): more than the node keeps relays for at once and
/// more than a job may have sockets on central at once.
const UDP_MANY_PY: &str = r#"
import socket, sys
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for i in range(n):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(30)
    try:
        if i % 2:
            s.connect((host, port))
            s.send(b"c%d" % i)
            data = s.recv(100)
        else:
            s.sendto(b"s%d" % i, (host, port))
            data, _ = s.recvfrom(100)
    except OSError as e:
        sys.exit("socket %d: %s" % (i, e))
    assert data == (b"C%d" if i % 2 else b"S%d") % i, (i, data)
    s.close()
print("sockets", n)
"#;

#[test]
fn network_udp_to_a_central_only_server() {
    let Some((c, dir, ip)) = start("network_udp_to_a_central_only_server", "nudp") else {
        return;
    };
    // Echo servers (in upper case) on the central-only address and on
    // central's own IPv6 loopback.
    let udp = in_central(&c, move || UdpSocket::bind((ip, 0)).unwrap());
    let udp6 = in_central(&c, || UdpSocket::bind("[::1]:0").unwrap());
    let port = udp.local_addr().unwrap().port();
    let port6 = udp6.local_addr().unwrap().port();
    for u in [udp, udp6] {
        std::thread::spawn(move || {
            let mut b = [0u8; 1500];
            while let Ok((n, from)) = u.recv_from(&mut b) {
                let up = b[..n].to_ascii_uppercase();
                let _ = u.send_to(&up, from);
            }
        });
    }
    let (text, out) = python(&c, &dir, ("udp.py", UDP_PY), &[&ip, &port, &port6]);
    assert_eq!(
        text,
        format!(
            "recvfrom ONE {ip} {port}\nconnected TWO {ip} {port}\nipv6 SIX ::1 {port6}\n\
             far FAR {ip} {port}\n"
        ),
        "{}",
        describe(&out)
    );
    // Closed sockets give back what stands for them on the node and on
    // central (`close` is not stopped: the relay finds them closed).
    let n = 1100;
    let (text, out) = python(&c, &dir, ("udp_many.py", UDP_MANY_PY), &[&ip, &port, &n]);
    assert_eq!(text, format!("sockets {n}\n"), "{}", describe(&out));
    // Name lookups read central's files and work as they do locally.
    let remote = exec(&c, &["/usr/bin/getent", "hosts", "localhost"]);
    let here = local("/usr/bin/getent", &["hosts", "localhost"], Feed::Null);
    assert_eq!(
        ok_text(&remote, "getent hosts localhost"),
        ok_text(&here, "local getent")
    );
}

const UNIX_PY: &str = r#"
import os, socket, sys
srv, mine = sys.argv[1], sys.argv[2]
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(srv)
s.sendall(b"ping\n")
print("reply", s.recv(100).decode().strip(), s.getpeername(), flush=True)
s.close()
b = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
b.bind(mine + ".client")
b.connect(srv)
b.sendall(b"bound\n")
print("bound", b.recv(100).decode().strip(), b.getsockname(), flush=True)
b.close()
l = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
l.bind(mine)
l.listen(1)
print("ready", l.getsockname(), flush=True)
c, _ = l.accept()
c.sendall(c.recv(100).upper())
c.close()
"#;

#[test]
fn network_unix_socket_paths_are_centrals() {
    if !require_root("network_unix_socket_paths_are_centrals") {
        return;
    }
    let dir = scripts("nunix");
    // Sockets in a directory the node cannot see.
    let only = TestDir::new("nunix-only").unwrap();
    set_mode(only.path(), 0o755);
    let c = DiatomCluster::builder(1)
        .name("nunix")
        .node_mounts(MountView::new().hide(only.path()))
        .start();
    let srv = only.join("srv.sock");
    let l = UnixListener::bind(&srv).unwrap();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut b = [0u8; 100];
            let n = conn.read(&mut b).unwrap_or(0);
            let _ = conn.write_all(&b[..n].to_ascii_uppercase());
        }
    });
    let mine = only.join("job.sock");
    let script = put(&dir, "unix.py", UNIX_PY);
    let (srv_s, mine_s) = (srv.display().to_string(), mine.display().to_string());
    let mut job = spawn(&c, &["/usr/bin/python3", &script, &srv_s, &mine_s]);
    let ready = wait_line(&mut job, "ready ");
    assert_eq!(ready, mine_s, "getsockname of the job's unix socket");
    // The job's socket file is on central.
    let mut s = UnixStream::connect(&mine).unwrap();
    s.write_all(b"to the job").unwrap();
    // The bound client socket's file is central's too.
    assert!(
        std::fs::symlink_metadata(only.join("job.sock.client"))
            .is_ok_and(|m| m.file_type().is_socket()),
        "the bound client socket is not on central"
    );
    let mut got = String::new();
    s.read_to_string(&mut got).unwrap();
    assert_eq!(got, "TO THE JOB");
    let out = job.wait_or_panic(RUN, "the unix-socket job");
    let text = ok_text(&out, "python3 unix.py");
    assert_eq!(
        text,
        format!("reply PING {srv_s}\nbound BOUND {mine_s}.client\nready {mine_s}\n"),
        "{}",
        describe(&out)
    );
}

/// Answers DNS queries on `udp`: `A` records of `name` get `ip`, every
/// other question an empty answer (NOERROR), so a resolver asking for
/// A and AAAA in parallel gets both replies.
fn serve_dns(udp: UdpSocket, name: &'static str, ip: Ipv4Addr) {
    std::thread::spawn(move || {
        let mut b = [0u8; 512];
        while let Ok((n, from)) = udp.recv_from(&mut b) {
            let q = &b[..n];
            // Header, then one question: labels, type, class.
            let mut i = 12;
            let mut labels = Vec::new();
            while i < n && q[i] != 0 {
                let len = usize::from(q[i]);
                let Some(l) = q.get(i + 1..i + 1 + len) else {
                    break;
                };
                labels.push(String::from_utf8_lossy(l).into_owned());
                i += 1 + len;
            }
            let Some(qtype) = q.get(i + 1..i + 3) else {
                continue;
            };
            let end = i + 5;
            let asked = labels.join(".");
            let hit = qtype == [0, 1] && asked.eq_ignore_ascii_case(name);
            let mut r = q[..2].to_vec(); // id
            r.extend_from_slice(&[0x81, 0x80, 0, 1, 0, u8::from(hit), 0, 0, 0, 0]);
            r.extend_from_slice(&q[12..end.min(n)]);
            if hit {
                r.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
                r.extend_from_slice(&ip.octets());
            }
            let _ = udp.send_to(&r, from);
        }
    });
}

#[test]
fn network_dns_lookup_through_central() {
    let Some((c, dir, ip)) = start("network_dns_lookup_through_central", "ndns") else {
        return;
    };
    // A name server only central reaches, named in the resolv.conf the
    // caller's view shows (a private mount namespace around `diatom exec`:
    // the job's files are the home's).
    let udp = in_central(&c, move || UdpSocket::bind((ip, 53)).unwrap());
    serve_dns(udp, "diatom-test.example", Ipv4Addr::new(10, 9, 8, 7));
    let resolv = dir.join("resolv.conf");
    std::fs::write(
        &resolv,
        format!("nameserver {ip}\noptions timeout:5 attempts:2\n"),
    )
    .unwrap();
    set_mode(&resolv, 0o644);
    let view = MountView::new().bind(&resolv, "/etc/resolv.conf");
    let code = "import socket\n\
                print(socket.gethostbyname('diatom-test.example'))\n\
                print(sorted({a[4][0] for a in socket.getaddrinfo('diatom-test.example', 80, socket.AF_INET)}))\n";
    let cmd = c.diatom_cmd_in_view(&view, ["exec", "--", "/usr/bin/python3", "-c", code]);
    let out = c.run(cmd, Feed::Null, RUN);
    let text = ok_text(&out, "python3 name lookups");
    assert_eq!(text, "10.9.8.7\n['10.9.8.7']\n", "{}", describe(&out));
}

/// Jobs started together: only one set of namespaces is made ahead, so
/// all but one make their own network namespace at the clone of PID 1
/// (with the root built ahead), whose `lo` must come up as well; each
/// job's connection goes through its relay on that loopback.
#[test]
fn network_jobs_started_together_each_reach_central() {
    if !require_root("network_jobs_started_together_each_reach_central") {
        return;
    }
    let c = DiatomCluster::builder(1).name("ntog").slots(4).start();
    let dir = scripts("ntog");
    let ip = c.net().central_only_addr();
    let l = in_central(&c, move || TcpListener::bind((ip, 0)).unwrap());
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut conn) = conn else { return };
            let _ = conn.write_all(b"hello from central\n");
        }
    });
    // Each job stays up a moment after its answer, so the others start
    // while it runs.
    let script = put(
        &dir,
        "hello.py",
        "import socket, sys, time\n\
         s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=30)\n\
         print(s.makefile().readline().strip())\n\
         time.sleep(1)\n",
    );
    let port = port.to_string();
    let jobs: Vec<Spawned> = (0..3)
        .map(|_| spawn(&c, &["/usr/bin/python3", &script, &ip.to_string(), &port]))
        .collect();
    for (i, mut job) in jobs.into_iter().enumerate() {
        let out = job.wait_or_panic(RUN, &format!("job {i}"));
        assert_eq!(
            ok_text(&out, &format!("job {i}")),
            "hello from central\n",
            "job {i}: {}",
            describe(&out)
        );
    }
}
