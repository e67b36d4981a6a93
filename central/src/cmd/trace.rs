//! `diatom trace [-o FILE] [--] PROGRAM [ARGS...]`: run PROGRAM locally under
//! the tracer with Diatom's subscription set and print each intercepted call
//! strace style (on stderr, or to FILE). The program's own stdout and stderr
//! are untouched; the exit status is the program's (128+N when signal N
//! killed it), 255 with one line `diatom: ...` when Diatom itself failed.

use std::ffi::{OsStr, OsString};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use tracer::decode::Printer;
use tracer::{Command, SyscallSet};

/// Arguments of `diatom trace`.
#[derive(clap::Args, Debug, Clone)]
pub struct TraceArgs {
    /// Write the trace to FILE instead of stderr.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// The program (found through PATH like a shell does) and its arguments.
    #[arg(
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "PROGRAM"
    )]
    pub command: Vec<OsString>,
}

/// Runs `diatom trace`; returns the exit code to exit with.
pub fn run(args: &TraceArgs) -> ExitCode {
    match trace(args) {
        Ok(code) => ExitCode::from(code),
        Err(msg) => {
            eprintln!("diatom: {msg}");
            ExitCode::from(255)
        }
    }
}

fn trace(args: &TraceArgs) -> Result<u8, String> {
    let (program, rest) = args
        .command
        .split_first()
        .ok_or_else(|| "trace: no program given".to_string())?;
    let path = resolve(program, std::env::var_os("PATH").as_deref())
        .ok_or_else(|| format!("{}: command not found", program.to_string_lossy()))?;
    let out: Box<dyn Write> = match &args.output {
        Some(f) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(f).map_err(|e| format!("cannot create {}: {e}", f.display()))?,
        )),
        None => Box::new(std::io::LineWriter::new(std::io::stderr())),
    };
    let printer = Printer::new(out, SyscallSet::diatom_default());
    let mut cmd = Command::new(&path);
    cmd.arg0(program).args(rest);
    let mut tracer = cmd.spawn(printer).map_err(|e| format!("tracer: {e}"))?;
    // The terminal's Ctrl-C and Ctrl-\ reach the program itself; the tracer
    // stays to report how it ended. (The child was forked with the default
    // dispositions already.)
    // SAFETY: setting standard dispositions to SIG_IGN.
    unsafe {
        libc::signal(libc::SIGINT, libc::SIG_IGN);
        libc::signal(libc::SIGQUIT, libc::SIG_IGN);
    }
    let status = tracer.run_mut().map_err(|e| match e {
        tracer::TraceError::Spawn(s) => s.to_string(),
        e => format!("tracer: {e}"),
    })?;
    let _ = tracer.handler_mut().flush_output();
    Ok(status.shell_code().clamp(0, 255) as u8)
}

/// Finds `program` as a shell would: a name with a `/` is used as is;
/// otherwise the first executable regular file of that name in `PATH`
/// (an empty entry meaning the current directory).
pub fn resolve(program: &OsStr, path: Option<&OsStr>) -> Option<PathBuf> {
    if program.as_bytes().contains(&b'/') {
        return Some(PathBuf::from(program));
    }
    if program.is_empty() {
        return None;
    }
    let path = path.unwrap_or(OsStr::new("/usr/local/bin:/usr/bin:/bin"));
    path.as_bytes()
        .split(|&b| b == b':')
        .map(|dir| {
            let dir = if dir.is_empty() {
                Path::new(".")
            } else {
                Path::new(OsStr::from_bytes(dir))
            };
            dir.join(program)
        })
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    p.metadata().is_ok_and(|m| m.is_file())
        && nix::unistd::access(p, nix::unistd::AccessFlags::X_OK).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_like_a_shell() {
        let sh = resolve(
            OsStr::new("sh"),
            Some(OsStr::new("/nonexistent:/bin:/usr/bin")),
        )
        .unwrap();
        assert!(sh.ends_with("sh") && sh.is_absolute());
        assert_eq!(resolve(OsStr::new("./x"), None), Some(PathBuf::from("./x")));
        assert_eq!(
            resolve(OsStr::new("no-such-prog-xyz"), Some(OsStr::new("/bin"))),
            None
        );
        // a directory is not a program
        assert_eq!(resolve(OsStr::new("bin"), Some(OsStr::new("/"))), None);
    }
}
