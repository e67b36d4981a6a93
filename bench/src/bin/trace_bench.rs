//! Tracer overhead: the same workloads native, under Diatom's tracer (the
//! subscription set Diatom uses, a handler that lets every call run), under
//! `strace -f` and under `strace -f --seccomp-bpf` on the same call set.
//! Medians of several runs (round-robin, so drift hits every column alike),
//! ratios to native. Prints a Markdown table for BENCHMARKS.md.
//!
//! `cargo run --release -p diatom-bench --bin trace_bench [-- --runs N] [--cmd SCRIPT]`

use std::os::fd::AsRawFd;
use std::process::{Command as StdCommand, Stdio};
use std::time::{Duration, Instant};

use tracer::{Action, Command, Handler, SyscallSet, SyscallStop};

/// Lets every call run, counting the stops.
struct Counting {
    set: SyscallSet,
    stops: u64,
}

impl Handler for Counting {
    fn subscriptions(&self) -> SyscallSet {
        self.set.clone()
    }
    fn handle_syscall(&mut self, _stop: &mut SyscallStop<'_>) -> Action {
        self.stops += 1;
        Action::Continue
    }
}

struct Workload {
    name: &'static str,
    script: String,
}

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Native,
    Diatom,
    Strace,
    StraceSeccomp,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let runs = diatom_bench::runs_arg(5);
    let py = if std::path::Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    };
    let custom = args
        .iter()
        .position(|a| a == "--cmd")
        .and_then(|i| args.get(i + 1))
        .cloned();
    let mut workloads = vec![
        Workload {
            name: "python3 CPU loop",
            script: format!("{py} -c 's=0\nfor i in range(8000000): s+=i*i\nprint(s)'"),
        },
        Workload {
            name: "find /usr | wc -l",
            script: "find /usr | wc -l".into(),
        },
        Workload {
            name: "tar cf - /usr/include | wc -c",
            script: "tar cf - /usr/include 2>/dev/null | wc -c".into(),
        },
        Workload {
            name: "500 x /bin/true",
            script: "i=0; while [ $i -lt 500 ]; do /bin/true; i=$((i+1)); done".into(),
        },
    ];
    if let Some(script) = custom {
        // `--cmd SCRIPT`: measure only that shell script.
        workloads = vec![Workload {
            name: "custom",
            script,
        }];
    }
    let set = SyscallSet::diatom_default();
    let strace = strace_names(&set);
    let mut modes = vec![Mode::Native, Mode::Diatom];
    match &strace {
        Some(_) => modes.extend([Mode::Strace, Mode::StraceSeccomp]),
        None => {
            eprintln!("note: strace not found (apt-get install -y strace): its columns are skipped")
        }
    }
    println!("machine: {}, {} CPUs", cpu_model(), nproc());
    println!(
        "{runs} runs per cell, median; Diatom = tracer crate (release), diatom_default set ({} calls), pass-through handler",
        set.len()
    );
    if let Some((names, dropped)) = &strace {
        println!(
            "strace: same call names via -e trace= ({} calls{}), -o /dev/null",
            names.split(',').count(),
            if dropped.is_empty() {
                String::new()
            } else {
                format!("; unknown to this strace: {}", dropped.join(","))
            }
        );
    }
    println!();
    // One unmeasured round warms the page cache for every workload.
    for w in &workloads {
        run(Mode::Native, &w.script, &set, None);
    }
    let mut rows = Vec::new();
    for w in &workloads {
        let mut wall: Vec<Vec<Duration>> = vec![Vec::new(); modes.len()];
        let mut cpu: Vec<Vec<Duration>> = vec![Vec::new(); modes.len()];
        let mut stops = 0;
        for _ in 0..runs {
            for (i, m) in modes.iter().enumerate() {
                let r = run(
                    *m,
                    &w.script,
                    &set,
                    strace.as_ref().map(|(n, _)| n.as_str()),
                );
                wall[i].push(r.wall);
                cpu[i].push(r.cpu);
                if *m == Mode::Diatom {
                    stops = r.stops;
                }
            }
        }
        rows.push((w.name, stops, wall, cpu));
    }
    for (title, pick_cpu) in [
        ("Wall-clock time", false),
        ("CPU time (user+sys of tracee, tracer, strace)", true),
    ] {
        println!("{title}:\n");
        let mut header = "| workload | native | Diatom | stops |".to_string();
        let mut rule = "|---|---|---|---|".to_string();
        if strace.is_some() {
            header.push_str(" strace -f | strace -f --seccomp-bpf |");
            rule.push_str("---|---|");
        }
        println!("{header}\n{rule}");
        for (name, stops, wall, cpu) in &mut rows {
            let cells = if pick_cpu { cpu } else { wall };
            let med: Vec<f64> = cells.iter_mut().map(|v| median(v)).collect();
            let mut line = format!("| {} | {:.3} s |", name.replace('|', "\\|"), med[0]);
            for (i, m) in modes.iter().enumerate().skip(1) {
                line.push_str(&format!(" {:.3} s ({:.2}x) |", med[i], med[i] / med[0]));
                if *m == Mode::Diatom {
                    line.push_str(&format!(" {stops} |"));
                }
            }
            println!("{line}");
        }
        println!();
    }
}

/// One measured run.
struct Measured {
    wall: Duration,
    cpu: Duration,
    stops: u64,
}

/// User + system time of this process (`RUSAGE_SELF`) or of its reaped
/// children (`RUSAGE_CHILDREN`).
fn cpu_time(who: i32) -> Duration {
    // SAFETY: getrusage fills a zeroed struct.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(who, &mut ru);
        ru
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

fn total_cpu() -> Duration {
    cpu_time(libc::RUSAGE_SELF) + cpu_time(libc::RUSAGE_CHILDREN)
}

fn median(v: &mut [Duration]) -> f64 {
    diatom_bench::median(v).as_secs_f64()
}

/// Runs the script once in `mode`.
fn run(mode: Mode, script: &str, set: &SyscallSet, strace: Option<&str>) -> Measured {
    let c0 = total_cpu();
    let t0 = Instant::now();
    let mut stops = 0;
    let ok = match mode {
        Mode::Native => quiet(StdCommand::new("/bin/sh").args(["-c", script])),
        Mode::Strace | Mode::StraceSeccomp => {
            let mut c = StdCommand::new("strace");
            c.args(["-f", "-o", "/dev/null"]);
            if mode == Mode::StraceSeccomp {
                c.arg("--seccomp-bpf");
            }
            c.arg("-e")
                .arg(format!("trace={}", strace.unwrap_or("all")));
            c.args(["/bin/sh", "-c", script]);
            quiet(&mut c)
        }
        Mode::Diatom => {
            let null = std::fs::OpenOptions::new()
                .write(true)
                .open("/dev/null")
                .expect("/dev/null");
            let fd = null.as_raw_fd();
            let mut c = Command::new("/bin/sh");
            c.args(["-c", script]);
            // SAFETY: dup2 is async-signal-safe.
            unsafe {
                c.pre_exec(move || {
                    if libc::dup2(fd, 1) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
            let h = Counting {
                set: set.clone(),
                stops: 0,
            };
            match c.spawn(h) {
                Ok(mut t) => {
                    let st = t.run_mut();
                    stops = t.handler().stops;
                    matches!(st, Ok(tracer::ExitStatus::Exited(0)))
                }
                Err(e) => {
                    eprintln!("trace_bench: {e}");
                    std::process::exit(1);
                }
            }
        }
    };
    let t = t0.elapsed();
    if !ok {
        eprintln!("warning: {script:?} failed in one run");
    }
    Measured {
        wall: t,
        cpu: total_cpu().saturating_sub(c0),
        stops,
    }
}

fn quiet(c: &mut StdCommand) -> bool {
    c.stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// The set's names that this strace knows (and the ones it does not).
fn strace_names(set: &SyscallSet) -> Option<(String, Vec<String>)> {
    let ok = |names: &str| {
        StdCommand::new("strace")
            .args([
                "-o",
                "/dev/null",
                "-e",
                &format!("trace={names}"),
                "/bin/true",
            ])
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    };
    if !ok("openat") {
        return None;
    }
    let all = set.names();
    if ok(&all) {
        return Some((all, Vec::new()));
    }
    let (known, unknown): (Vec<&str>, Vec<&str>) = all.split(',').partition(|n| ok(n));
    Some((
        known.join(","),
        unknown.into_iter().map(String::from).collect(),
    ))
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

fn nproc() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
