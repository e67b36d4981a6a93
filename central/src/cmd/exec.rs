//! `diatom exec`: place a job through central (or an embedded central and
//! node when no daemon answers), then act as its home until it ends.

use std::ffi::OsString;
use std::net::UdpSocket;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::ExitCode;

use diatom_client::config::parse_size;
use diatom_client::net::Net;
use dscp_dicp::msg::control::JobEvent;
use dscp_dicp::msg::job::{Launch, WinSize};
use dscp_dicp::{Key, Keyring, Peer};

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

/// An embedded cluster that must live as long as the job (None when the
/// daemon placed it).
type Placement = Option<Embedded>;

fn place(cli: &Cli, req: &ExecRequest) -> Result<(Grant, UdpSocket, Placement), String> {
    match UnixStream::connect(&cli.socket) {
        Ok(stream) => {
            control::send(&stream, &Request::Exec(req.clone()), &[]).map_err(|e| e.to_string())?;
            let (resp, mut fds): (Response, _) =
                control::recv(&stream).map_err(|e| format!("central: {e}"))?;
            match resp {
                Response::Granted(g) => {
                    let fd = fds.pop().ok_or("central sent no socket with the grant")?;
                    Ok((g, UdpSocket::from(fd), None))
                }
                Response::Error(why) => Err(why),
                other => Err(format!("central answered {other:?}")),
            }
        }
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
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
            let (g, s) = emb.central().exec(cred, req)?;
            Ok((g, s, Some(emb)))
        }
        Err(e) => Err(format!(
            "cannot reach central at {}: {e}",
            cli.socket.display()
        )),
    }
}

/// Waits (briefly) until central has recorded the job's end, so that what
/// the user runs next (`diatom ps`) agrees with the exit they just saw.
/// Best effort: an old or unreachable central is not an error here.
fn await_end(cli: &Cli, job: u64) {
    let Ok(stream) = UnixStream::connect(&cli.socket) else {
        return;
    };
    if control::send(&stream, &Request::AwaitEnd { job }, &[]).is_ok() {
        let _: Result<(Response, _), _> = control::recv(&stream);
    }
}

/// Runs `diatom exec`.
pub fn run(cli: &Cli, args: &ExecArgs) -> ExitCode {
    // Before any thread exists, so every thread inherits the mask and the
    // signal thread alone receives them.
    if let Err(e) = signals::block(&signals::forwarded(args.tty)) {
        return fail(&format!("cannot block signals: {e}"));
    }
    let plan = match plan(args) {
        Ok(p) => p,
        Err(e) => return fail(&e),
    };
    let env_pairs: Vec<(OsString, OsString)> = std::env::vars_os().collect();
    let t0 = std::time::Instant::now();
    // The kernel passes a script the name execve was given: as typed when
    // it has a slash (relative to the cwd, which the home shares with the
    // caller), the PATH match otherwise, as a shell does.
    let typed = args.command.first().map(std::path::Path::new);
    let exec_name = match typed {
        Some(t) if t.as_os_str().as_encoded_bytes().contains(&b'/') => t,
        _ => plan.exe.as_path(),
    };
    let exec_plan = match exec_closure(exec_name, &plan.argv, &env_pairs) {
        Ok(p) => p,
        Err(e) => return fail(&e),
    };
    let tty = args.tty.then(|| {
        crate::home::terminal::window_size(0)
            .or_else(|| crate::home::terminal::window_size(1))
            .map(|(rows, cols, _, _)| WinSize { rows, cols })
            .unwrap_or(WinSize { rows: 24, cols: 80 })
    });
    let launch =
        match session::launch_from_plan(&exec_plan, &plan.exe, plan.envp.clone(), &plan.cwd, tty) {
            Ok(l) => l,
            Err(e) => return fail(&e),
        };
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
    log::debug!("closure ready after {:?}", t0.elapsed());
    let (grant, sock, placement) = match place(cli, &req) {
        Ok(v) => v,
        Err(e) => return fail(&e),
    };
    log::debug!(
        "job {} placed on {} after {:?}",
        grant.job,
        grant.node,
        t0.elapsed()
    );
    let outcome = home(grant.clone(), sock, launch, args.tty);
    log::debug!("job {} ended after {:?}", grant.job, t0.elapsed());
    // Only a job whose end the node reported is worth waiting for: when the
    // node is lost no report comes, and waiting would only delay the
    // `diatom:` line the user must see within 5 s (docs/faults.md).
    if placement.is_none() && matches!(outcome, Ok(Outcome::Ended(_))) {
        await_end(cli, grant.job);
    }
    drop(placement);
    exit_for(&grant, outcome)
}

fn home(grant: Grant, sock: UdpSocket, launch: Launch, tty: bool) -> Result<Outcome, String> {
    let key = Key::from_hex(&grant.session_key)
        .map_err(|e| format!("central sent a bad session key: {e}"))?;
    let mut keys = Keyring::new();
    keys.insert(grant.job, &key);
    let net = Net::open_session(sock, keys)
        .map_err(|e| format!("cannot open the job's endpoint: {e}"))?;
    Ok(session::run(HomeJob {
        net,
        node: Peer {
            addr: grant.node_addr,
            key_id: grant.job,
        },
        node_name: grant.node.clone(),
        launch,
        tty,
    }))
}

fn exit_for(grant: &Grant, outcome: Result<Outcome, String>) -> ExitCode {
    match outcome {
        Err(e) => fail(&e),
        Ok(Outcome::Lost(why)) => fail(&why),
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
