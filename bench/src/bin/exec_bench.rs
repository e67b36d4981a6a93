//! `diatom exec` start-up cost: a real central and node on loopback
//! (release binaries from this workspace), compared side by side with a
//! local run of the same command. Warm: the node's cache already holds the
//! program and its libraries. Cold: a node with an empty cache for every
//! run. Embedded: no daemon, `diatom exec` starts its own (always cold).
//! Medians of N runs, interleaved so drift hits every column alike.
//!
//! `cargo build --release --bins && cargo run --release -p diatom-bench --bin exec_bench [-- --runs N]`
//! (after `make static-cli` it times the static `diatom` that `make
//! install` installs; it prints which one it ran).

use std::process::Command;

use diatom_bench::cluster::{cli, ms, time, Daemons};

fn median(mut v: Vec<std::time::Duration>) -> std::time::Duration {
    diatom_bench::median(&mut v)
}

fn main() {
    let runs = diatom_bench::runs_arg(21);
    let dir = std::env::temp_dir().join(format!("diatom-exec-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let mut d = Daemons::start(&dir, 22036);
    println!("`diatom`: {}", cli().display());
    let cases: [(&str, &[&str]); 2] = [
        ("/bin/true", &["/bin/true"]),
        ("python3 -c pass", &["/usr/bin/python3", "-c", "pass"]),
    ];
    println!("| command | local | diatom exec warm | ratio | diatom exec cold | embedded (cold) |");
    println!("|---|---|---|---|---|---|");
    for (name, argv) in cases {
        let (mut local, mut warm, mut cold, mut embedded) = (vec![], vec![], vec![], vec![]);
        // Fill the cache once before the warm runs.
        time(&mut d.exec(argv));
        for _ in 0..runs {
            local.push(time(Command::new(argv[0]).args(&argv[1..])));
            warm.push(time(&mut d.exec(argv)));
        }
        // Apart from the warm runs: an embedded start's teardown (a whole
        // central and node exiting) would still be running during the
        // next warm run.
        for _ in 0..runs {
            let mut e = Command::new(cli());
            e.arg("--socket")
                .arg(dir.join("no-daemon.sock"))
                .arg("exec")
                .args(argv);
            embedded.push(time(&mut e));
        }
        for _ in 0..runs.min(7) {
            d.new_node();
            cold.push(time(&mut d.exec(argv)));
        }
        let (l, w) = (median(local), median(warm));
        println!(
            "| `{name}` | {} | {} | {:.1}x | {} | {} |",
            ms(l),
            ms(w),
            w.as_secs_f64() / l.as_secs_f64(),
            ms(median(cold)),
            ms(median(embedded))
        );
    }
    drop(d);
    let _ = std::fs::remove_dir_all(&dir);
}
