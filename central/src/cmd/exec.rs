//! `diatom exec`: place a job through central (or an embedded central and
//! node when no daemon answers), then act as its home until it ends.

use std::ffi::OsString;
use std::net::UdpSocket;
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::ExitCode;

use diatom_client::config::parse_size;
use diatom_client::net::Net;
use dscp_dicp::msg::control::JobEvent;
use dscp_dicp::msg::job::{Launch, WinSize};
use dscp_dicp::{Key, Keyring, Peer};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::Signal;

use super::{fail, EXIT_FAILURE};
use crate::cli::{Cli, ExecArgs};
use crate::control::{self, ExecRequest, Grant, PeerCred, Request, Response};
use crate::embedded::Embedded;
use crate::home::closure::{exec_closure, resolve_program};
use crate::home::session::{self, HomeJob, Outcome};
use crate::home::signals;

/// A validated `diatom exec` invocation (the second parsing step).
#[derive(Debug)]
struct Plan {
    exe: PathBuf,
    argv: Vec<OsString>,
    envp: Vec<Vec<u8>>,
    cwd: PathBuf,
    memory: Option<u64>,
    pids: Option<u64>,
}

fn plan(args: &ExecArgs) -> Result<Plan, String> {
    let cwd =
        std::env::current_dir().map_err(|e| format!("cannot read the current directory: {e}"))?;
    let name = args.command.first().ok_or("no program given")?;
    let name_str = name.to_str().ok_or("the program name is not valid UTF-8")?;
    let exe = resolve_program(name_str, std::env::var_os("PATH").as_deref(), &cwd)
        .map_err(|e| e.to_string())?;
    let memory = args
        .memory
        .as_deref()
        .map(parse_size)
        .transpose()
        .map_err(|e| e.to_string())?;
    Ok(Plan {
        exe,
        argv: args.command.clone(),
        envp: session::job_environment(&args.env)?,
        cwd,
        memory,
        pids: args.pids,
    })
}

/// Who placed the job: the daemon (the connection it answered on, kept to
/// ask for the job's end) or an embedded cluster that must live as long as
/// the job.
enum Placement {
    Daemon(UnixStream),
    // Held only to be dropped (stopped) after the job.
    Embedded(#[allow(dead_code)] Embedded),
}

/// Central as first asked: the daemon, with the request sent (its answer
/// is read by [`placed`]), or none, so the job needs an embedded cluster.
enum Asked {
    Daemon(UnixStream),
    NoDaemon,
}

/// Sends the request to the daemon without waiting for its answer: the
/// program's closure is worked out while central places the job.
fn ask_central(cli: &Cli, req: &ExecRequest) -> Result<Asked, String> {
    match UnixStream::connect(&cli.socket) {
        Ok(stream) => {
            control::send(&stream, &Request::Exec(req.clone()), &[]).map_err(|e| e.to_string())?;
            Ok(Asked::Daemon(stream))
        }
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            Ok(Asked::NoDaemon)
        }
        Err(e) => Err(format!(
            "cannot reach central at {}: {e}",
            cli.socket.display()
        )),
    }
}

/// Why `diatom exec` stops before its job runs.
#[derive(Debug)]
enum Stop {
    /// An error, for the `diatom:` line.
    Failed(String),
    /// A forwarded signal came first (the user's Ctrl-C).
    Interrupted(Signal),
}

impl From<String> for Stop {
    fn from(why: String) -> Stop {
        Stop::Failed(why)
    }
}

/// Central's answer to the request on `stream`.
fn grant_from(stream: UnixStream) -> Result<(Grant, UdpSocket, Placement), String> {
    let (resp, mut fds): (Response, _) =
        control::recv(&stream).map_err(|e| format!("central: {e}"))?;
    match resp {
        Response::Granted(g) => {
            let fd = fds.pop().ok_or("central sent no socket with the grant")?;
            Ok((g, UdpSocket::from(fd), Placement::Daemon(stream)))
        }
        Response::Error(why) => Err(why),
        other => Err(format!("central answered {other:?}")),
    }
}

/// Waits until central's answer is readable on `stream` (`None`) or a
/// forwarded signal other than SIGWINCH arrives (central may wait long
/// for a free slot, and Ctrl-C must end `diatom exec` meanwhile).
fn await_answer(stream: &UnixStream, listener: &mut signals::Listener) -> Option<Signal> {
    loop {
        let mut fds = [
            PollFd::new(stream.as_fd(), PollFlags::POLLIN),
            PollFd::new(listener.signal_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            // The answer is read (and its error reported) as without signals.
            Err(_) => return None,
        }
        let answered = fds[0].any().unwrap_or(true);
        let signalled = fds[1].any().unwrap_or(false);
        if signalled {
            match listener.pending() {
                Ok(Some(Signal::SIGWINCH)) | Ok(None) => {}
                Ok(Some(sig)) => return Some(sig),
                Err(_) => return None,
            }
        }
        if answered {
            return None;
        }
    }
}

/// Whether `stream` has something to read now.
fn readable_now(stream: &UnixStream) -> bool {
    let mut fds = [PollFd::new(stream.as_fd(), PollFlags::POLLIN)];
    poll(&mut fds, PollTimeout::ZERO).is_ok_and(|n| n > 0)
}

/// The placement: the daemon's answer, or an embedded cluster's.
fn placed(
    asked: Asked,
    cli: &Cli,
    req: &ExecRequest,
    listener: Option<&mut signals::Listener>,
) -> Result<(Grant, UdpSocket, Placement), Stop> {
    match asked {
        Asked::Daemon(stream) => {
            let Some(sig) = listener.and_then(|l| await_answer(&stream, l)) else {
                return Ok(grant_from(stream)?);
            };
            // The grant may have come with the signal: its node waits for
            // a launch that will not come.
            if readable_now(&stream) {
                if let Ok((grant, sock, _)) = grant_from(stream) {
                    abandon(grant, sock, &session::interrupted_reason(sig));
                }
            }
            // Dropping the connection tells central to stop placing it.
            Err(Stop::Interrupted(sig))
        }
        Asked::NoDaemon => {
            log::info!(
                "no central daemon at {}: starting an embedded one",
                cli.socket.display()
            );
            let emb = Embedded::start().map_err(|e| format!("embedded cluster: {e}"))?;
            let cred = PeerCred {
                pid: std::process::id() as i32,
                uid: nix::unistd::getuid().as_raw(),
                gid: nix::unistd::getgid().as_raw(),
            };
            // The embedded node has a slot for this job alone: no wait.
            let (g, s) = emb.central().exec(cred, req, &|| true)?;
            Ok((g, s, Placement::Embedded(emb)))
        }
    }
}

/// Waits (briefly) until central has recorded the job's end, so that what
/// the user runs next (`diatom ps`) agrees with the exit they just saw.
/// Asked on the connection that placed the job (no new connection and
/// control thread on central). Best effort: an old or unreachable central
/// is not an error here.
fn await_end(stream: &UnixStream, job: u64) {
    if control::send(stream, &Request::AwaitEnd { job }, &[]).is_ok() {
        let _: Result<(Response, _), _> = control::recv(stream);
    }
}

/// Runs `diatom exec`.
pub fn run(cli: &Cli, args: &ExecArgs) -> ExitCode {
    // The home sends the job's file data (see keep_message_buffers).
    diatom_client::net::keep_message_buffers();
    // Before any thread exists, so every thread inherits the mask and the
    // signal thread alone receives them.
    if let Err(e) = signals::block(&signals::forwarded(args.tty)) {
        return fail(&format!("cannot block signals: {e}"));
    }
    // Listened to from now on: a signal during the placement or the
    // launch ends `diatom exec` (there is no job to forward it to yet).
    let mut signals = match signals::Listener::new(&signals::forwarded(args.tty)) {
        Ok(s) => Some(s),
        Err(e) => {
            log::warn!("cannot listen for signals, they will not reach the job: {e}");
            None
        }
    };
    let plan = match plan(args) {
        Ok(p) => p,
        Err(e) => return fail(&e),
    };
    let t0 = std::time::Instant::now();
    let req = ExecRequest {
        program: plan.exe.clone(),
        argv: plan
            .argv
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect(),
        cwd: plan.cwd.clone(),
        node: args.node.clone(),
        memory: plan.memory,
        pids: plan.pids,
    };
    // The program's closure (interpreter, libraries) is worked out while
    // central places the job: neither needs the other until the launch.
    // Without a daemon there is nothing to wait for, and no cluster is
    // started for a program that cannot be launched.
    let asked = ask_central(cli, &req);
    let launch = launch_for(args, &plan);
    // Also off the critical path: the first sealed datagram (the launch)
    // would otherwise wait for the crypto crates' CPU probes.
    dscp_dicp::crypto::detect_cpu_features();
    let placed = match (&launch, asked) {
        (Err(_), Ok(Asked::NoDaemon)) => Err(Stop::Failed("no cluster started".to_string())),
        (_, Err(e)) => Err(Stop::Failed(e)),
        (_, Ok(a)) => placed(a, cli, &req, signals.as_mut().map(|(l, _)| l)),
    };
    log::debug!("closure ready and job placed after {:?}", t0.elapsed());
    let (grant, outcome, placement, session) = match (launch, placed) {
        (_, Err(Stop::Interrupted(sig))) => return interrupted(sig),
        (Ok(_), Err(Stop::Failed(e))) => return fail(&e),
        (Err(e), Ok((grant, sock, _placement))) => {
            // The node waits for a launch: tell it none comes, so the job
            // ends now (as failed, with this reason) rather than at the
            // node's launch timeout.
            abandon(grant, sock, &e);
            return fail(&e);
        }
        (Err(e), Err(Stop::Failed(_))) => return fail(&e),
        (Ok(launch), Ok((grant, sock, placement))) => {
            log::debug!("job {} placed on {}", grant.job, grant.node);
            let (outcome, session) = match home(grant.clone(), sock, launch, args.tty, signals) {
                Ok((o, net)) => (Ok(o), Some(net)),
                Err(e) => (Err(e), None),
            };
            (grant, outcome, placement, session)
        }
    };
    log::debug!("job {} ended after {:?}", grant.job, t0.elapsed());
    // Only a job whose end the node reported is worth waiting for: when the
    // node is lost no report comes, and waiting would only delay the
    // `diatom:` line the user must see within 5 s (docs/faults.md).
    // An interrupted start too: the node reports its end at once.
    if let (Placement::Daemon(stream), Ok(Outcome::Ended(_) | Outcome::Interrupted(_))) =
        (&placement, &outcome)
    {
        await_end(stream, grant.job);
    }
    drop(placement);
    // The job is over and the node's last request answered: dropping the
    // session's endpoint would only join its driver thread (a wake-up and
    // a thread exit, on the way to the caller's prompt) before the process
    // exit ends that thread anyway.
    std::mem::forget(session);
    exit_for(&grant, outcome)
}

/// The job's launch: the program's closure as the kernel would exec it
/// here, with the caller's environment, cwd and terminal.
fn launch_for(args: &ExecArgs, plan: &Plan) -> Result<Launch, String> {
    let env_pairs: Vec<(OsString, OsString)> = std::env::vars_os().collect();
    // The kernel passes a script the name execve was given: as typed when
    // it has a slash (relative to the cwd, which the home shares with the
    // caller), the PATH match otherwise, as a shell does.
    let typed = args.command.first().map(std::path::Path::new);
    let exec_name = match typed {
        Some(t) if t.as_os_str().as_encoded_bytes().contains(&b'/') => t,
        _ => plan.exe.as_path(),
    };
    let exec_plan = exec_closure(exec_name, &plan.argv, &env_pairs).map_err(|e| e.to_string())?;
    let tty = args.tty.then(|| {
        crate::home::terminal::window_size(0)
            .or_else(|| crate::home::terminal::window_size(1))
            .map(|(rows, cols, _, _)| WinSize { rows, cols })
            .unwrap_or(WinSize { rows: 24, cols: 80 })
    });
    session::launch_from_plan(&exec_plan, &plan.exe, plan.envp.clone(), &plan.cwd, tty)
}

/// Tells the node of a placed job that no launch will come (best effort:
/// without it the node gives up on its own after its launch timeout).
fn abandon(grant: Grant, sock: UdpSocket, why: &str) {
    if let Ok((net, node)) = job_session(&grant, sock) {
        let _ = diatom_client::net::ask::<dscp_dicp::msg::job::Response>(
            &net,
            node,
            dscp_dicp::msg::job::Request::Abandon(why.to_string()),
            std::time::Duration::from_secs(2),
        );
    }
}

/// The job's session with its node, under the key central made for it.
fn job_session(grant: &Grant, sock: UdpSocket) -> Result<(Net, Peer), String> {
    let key = Key::from_hex(&grant.session_key)
        .map_err(|e| format!("central sent a bad session key: {e}"))?;
    let mut keys = Keyring::new();
    keys.insert(grant.job, &key);
    let net = Net::open_session(sock, keys)
        .map_err(|e| format!("cannot open the job's endpoint: {e}"))?;
    let node = Peer {
        addr: grant.node_addr,
        key_id: grant.job,
    };
    Ok((net, node))
}

/// Runs the job's home to the job's end; also returns the job session's
/// endpoint, for the caller to decide when it goes.
fn home(
    grant: Grant,
    sock: UdpSocket,
    launch: Launch,
    tty: bool,
    signals: Option<(signals::Listener, signals::Waker)>,
) -> Result<(Outcome, Net), String> {
    let (net, node) = job_session(&grant, sock)?;
    let kept = net.clone();
    let outcome = session::run(HomeJob {
        net,
        node,
        node_name: grant.node.clone(),
        launch,
        tty,
        signals,
    });
    Ok((outcome, kept))
}

/// The exit of a `diatom exec` that a signal ended before its job
/// started: a shell's for a program the signal ended, without a line
/// (the user asked for it).
fn interrupted(sig: Signal) -> ExitCode {
    ExitCode::from((128 + sig as i32).clamp(0, 255) as u8)
}

fn exit_for(grant: &Grant, outcome: Result<Outcome, String>) -> ExitCode {
    match outcome {
        Err(e) => fail(&e),
        Ok(Outcome::Lost(why)) => fail(&why),
        Ok(Outcome::Interrupted(sig)) => interrupted(sig),
        Ok(Outcome::Ended(JobEvent::Exited { code })) => ExitCode::from((code & 0xff) as u8),
        Ok(Outcome::Ended(JobEvent::Signaled { signal })) => {
            ExitCode::from((128 + signal).clamp(0, 255) as u8)
        }
        Ok(Outcome::Ended(JobEvent::Killed { reason })) => {
            eprintln!("diatom: job killed on {}: {reason}", grant.node);
            ExitCode::from(137)
        }
        Ok(Outcome::Ended(JobEvent::Failed { reason })) => fail(&reason),
        Ok(Outcome::Ended(JobEvent::Started)) => ExitCode::from(EXIT_FAILURE),
    }
}
