//! What the job sandbox adds to a start: the tracer's spawn and run of a
//! static `busybox true` plain, in a PID namespace (with IPC and UTS), with
//! the full set (mount and network namespaces, the minimal root of
//! `client/src/sandbox/mounts.rs` holding the node's `/usr` read-only so
//! busybox can run, `lo` up), and the same in a v1/v2 cgroup made and
//! removed around each run. Medians of N runs, interleaved so drift hits
//! every column alike. Needs root and a static `/usr/bin/busybox`.
//!
//! `cargo build --release -p diatom-bench --bin sandbox_bench && sudo target/release/sandbox_bench [--runs N]`

use std::path::PathBuf;
use std::time::{Duration, Instant};

use diatom_client::sandbox::cgroup::{CgroupLimits, JobCgroup, Layout};
use diatom_client::sandbox::mounts::{MountPlan, RootSpec};
use tracer::{Command, PassThrough, SyscallSet};

const BUSYBOX: &str = "/usr/bin/busybox";
const NAMESPACES: libc::c_int =
    libc::CLONE_NEWNS | libc::CLONE_NEWIPC | libc::CLONE_NEWUTS | libc::CLONE_NEWNET;

/// A column: its name, namespaces, root and cgroup layout.
type Case<'a> = (
    &'static str,
    Option<libc::c_int>,
    Option<&'a RootSpec>,
    Option<&'a Layout>,
);

fn run(ns: Option<libc::c_int>, root: Option<&RootSpec>, cg: Option<&Layout>) -> Duration {
    let t = Instant::now();
    let group = cg.map(|l| {
        let name = format!("bench-{}", std::process::id());
        std::sync::Arc::new(
            JobCgroup::create(
                l,
                &name,
                CgroupLimits {
                    memory: 1 << 30,
                    pids: 1024,
                },
            )
            .expect("cgroup"),
        )
    });
    let mut cmd = Command::new(BUSYBOX);
    cmd.arg("true");
    if let Some(flags) = ns {
        cmd.pid_namespace(flags);
        if let Some(g) = &group {
            let g = std::sync::Arc::clone(g);
            cmd.on_init(move |pid| g.add(pid.as_raw()));
        }
        if let Some(spec) = root {
            let plan = MountPlan::new(spec).expect("plan");
            // SAFETY: the plan only makes raw system calls.
            unsafe {
                cmd.pre_init(move || plan.apply());
            }
        }
    }
    let st = cmd
        .spawn(PassThrough(SyscallSet::diatom_default()))
        .expect("spawn")
        .run()
        .expect("run");
    assert_eq!(st, tracer::ExitStatus::Exited(0));
    if let Some(g) = group {
        g.remove().expect("remove the cgroup");
    }
    t.elapsed()
}

fn main() {
    let runs = diatom_bench::runs_arg(51);
    let dir = std::env::temp_dir().join(format!("diatom-sandbox-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let spec = RootSpec {
        mount_point: dir.clone(),
        writable: vec![],
        read_only: vec![PathBuf::from("/usr")],
        tty: false,
        user_namespace: false,
        own_netns: true,
        join: vec![],
    };
    let layout = Layout::detect();
    if let Some(l) = &layout {
        l.prepare().expect("cgroup parents");
    }
    let cases: Vec<Case<'_>> = vec![
        ("plain (tracer only)", None, None, None),
        (
            "+ pid, ipc, uts namespaces",
            Some(libc::CLONE_NEWIPC | libc::CLONE_NEWUTS),
            None,
            None,
        ),
        (
            "+ mount, net namespaces, minimal root",
            Some(NAMESPACES),
            Some(&spec),
            None,
        ),
        (
            "+ cgroup made and removed",
            Some(NAMESPACES),
            Some(&spec),
            layout.as_ref(),
        ),
    ];
    let mut times: Vec<Vec<Duration>> = vec![Vec::new(); cases.len()];
    for _ in 0..runs {
        for (i, (_, ns, root, cg)) in cases.iter().enumerate() {
            times[i].push(run(*ns, *root, *cg));
        }
    }
    println!(
        "| `busybox true` under the tracer | median ({runs} runs) | cgroup {} |",
        layout.as_ref().map_or("none", Layout::version)
    );
    println!("|---|---|---|");
    for (i, (name, ..)) in cases.iter().enumerate() {
        let m = diatom_bench::median(&mut times[i]);
        println!("| {name} | {:.2} ms | |", m.as_secs_f64() * 1e3);
    }
    let _ = std::fs::remove_dir(&dir);
}
