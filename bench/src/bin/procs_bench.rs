//! Process trees through `diatom exec`, side by side with the same command
//! run locally: `make -j2` of the small C project the integration tests
//! build (`tests/fixtures/procs/project`: a generated header, four objects,
//! one link, so ten processes), a shell loop of 200 fork+exec, and a Python
//! `multiprocessing` pool of 4 workers. A real central and node on
//! loopback (release binaries of this workspace); each run builds from a
//! clean tree; medians of N runs after one warm-up run.
//!
//! `cargo build --release --bins && cargo run --release -p diatom-bench --bin procs_bench [-- --runs N]`

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use diatom_bench::cluster::{ms, time, Daemons};

const PROJECT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/fixtures/procs/project"
);

fn median(mut v: Vec<Duration>) -> Duration {
    diatom_bench::median(&mut v)
}

/// A fresh copy of the project in `to` (removed first).
fn fresh_project(to: &Path) {
    let _ = std::fs::remove_dir_all(to);
    let ok = Command::new("cp")
        .arg("-R")
        .arg(PROJECT)
        .arg(to)
        .status()
        .expect("cp");
    assert!(ok.success(), "copy the project to {}", to.display());
}

fn main() {
    let runs = diatom_bench::runs_arg(5);
    let dir = std::env::temp_dir().join(format!("diatom-procs-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let d = Daemons::start(&dir, 25036);
    let local_tree = dir.join("local");
    let remote_tree = dir.join("remote");
    let pool = "import multiprocessing as m\n\
                def f(x): return sum(i * i for i in range(x))\n\
                if __name__ == '__main__':\n\
                \x20   with m.Pool(4) as p: print(sum(p.map(f, [200000] * 8)))\n";

    println!("| workload | local | diatom exec | ratio | notes |");
    println!("|---|---|---|---|---|");

    // make -j2: one warm-up build fills the node's cache with gcc, cc1, as, ld.
    fresh_project(&remote_tree);
    time(d.exec(&["make", "-s", "-j2"]).current_dir(&remote_tree));
    let (mut local, mut remote) = (vec![], vec![]);
    for _ in 0..runs {
        fresh_project(&local_tree);
        fresh_project(&remote_tree);
        local.push(time(
            Command::new("make")
                .args(["-s", "-j2"])
                .current_dir(&local_tree),
        ));
        remote.push(time(
            d.exec(&["make", "-s", "-j2"]).current_dir(&remote_tree),
        ));
        let built = remote_tree.join("tool");
        assert!(
            built.is_file(),
            "the remote make -j2 built {}",
            built.display()
        );
    }
    let (l, r) = (median(local), median(remote));
    println!(
        "| `make -j2` (small C project) | {} | {} | {:.1}x | 4 objects + link, clean tree, warm cache |",
        ms(l),
        ms(r),
        r.as_secs_f64() / l.as_secs_f64()
    );

    let cases: [(&str, Vec<&str>, &str); 2] = [
        (
            "200 x fork+exec `/bin/true`",
            vec![
                "sh",
                "-c",
                "i=0; while [ $i -lt 200 ]; do /bin/true; i=$((i+1)); done",
            ],
            "one exec image request per exec",
        ),
        (
            "python3 multiprocessing Pool(4)",
            vec!["/usr/bin/python3", "-c", pool],
            "8 tasks on 4 forked workers",
        ),
    ];
    for (name, args, note) in cases {
        let (l, r) = d.warm_side_by_side(&args, runs);
        println!(
            "| {name} | {} | {} | {:.1}x | {note}, warm |",
            ms(l),
            ms(r),
            r.as_secs_f64() / l.as_secs_f64()
        );
    }
    drop(d);
    let _ = std::fs::remove_dir_all(&dir);
}
