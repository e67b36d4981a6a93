//! Reading central's files through `diatom exec`, side by side with the same
//! command run locally: a 1 GiB file cold (a node with an empty cache) and
//! warm, `find` over a large tree, `gcc -O2 -c` of a ~2000-line C file, and
//! `python3 -c pass`. A real central and node on loopback (release
//! binaries of this workspace). Medians of N runs; MB/s for the big file.
//! Beside the cold read, the time to write a new 1 GiB file locally as the
//! node fills its cache (its page cache is what a cold read cannot avoid),
//! both in memory the VM has never touched and in memory freed just before.
//!
//! `cargo build --release --bins && cargo run --release -p diatom-bench --bin files_bench [-- --runs N]`

use std::process::Command;
use std::time::Duration;

use diatom_bench::cluster::{ms, time, Daemons};
use diatom_bench::{mbps, write_big_file};

fn median(mut v: Vec<Duration>) -> Duration {
    diatom_bench::median(&mut v)
}

fn write_c_file(path: &std::path::Path, functions: usize) {
    let mut s = String::from("#include <stdio.h>\n#include <string.h>\n\n");
    for i in 0..functions {
        s.push_str(&format!(
            "static int f{i}(const char *s, int n) {{\n    int h = {i};\n    for (int k = 0; k < n; k++) {{\n        h = h * 31 + s[k % 7];\n        if (h & 1) h ^= k;\n    }}\n    return h;\n}}\n\n"
        ));
    }
    s.push_str("int main(void) {\n    int t = 0;\n");
    for i in 0..functions {
        s.push_str(&format!("    t += f{i}(\"abcdefg\", {});\n", i % 50));
    }
    s.push_str("    printf(\"%d\\n\", t);\n    return 0;\n}\n");
    std::fs::write(path, s).expect("write C file");
}

/// Writes `size` bytes to the new file `path` in 8 MiB `pwrite`s, as the
/// node fills a cache object: the page cache a cold read must fill on the
/// node, which a local read of a cached file never pays.
fn new_file_write(path: &std::path::Path, size: u64) -> Duration {
    use std::os::unix::fs::FileExt;
    let block: Vec<u8> = (0..8u32 << 20).map(|i| (i * 7 + 1) as u8).collect();
    let t = std::time::Instant::now();
    let f = std::fs::File::create(path).expect("create");
    f.set_len(size).expect("set_len");
    let mut at = 0;
    while at < size {
        f.write_all_at(&block, at).expect("write");
        at += block.len() as u64;
    }
    drop(f);
    t.elapsed()
}

fn main() {
    let runs = diatom_bench::runs_arg(5);
    let dir = std::env::temp_dir().join(format!("diatom-files-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let big = dir.join("big.bin");
    let size: u64 = 1 << 30;
    write_big_file(&big, size, 0x9e37_79b9_7f4a_7c15);
    let csrc = dir.join("prog.c");
    write_c_file(&csrc, 220);
    let lines = std::fs::read_to_string(&csrc)
        .map(|s| s.lines().count())
        .unwrap_or(0);
    let mut d = Daemons::start(&dir, 24036);
    let big_s = big.to_string_lossy().into_owned();
    let read_big = format!("cat '{big_s}' > /dev/null");
    let obj = dir.join("prog.o").to_string_lossy().into_owned();
    let csrc_s = csrc.to_string_lossy().into_owned();

    println!("| workload | local | diatom exec | ratio | notes |");
    println!("|---|---|---|---|---|");

    // 1 GiB cold: a fresh node (empty cache) per run; warm: the same node
    // again. This VM charges ~3 s per GiB of memory the guest has not
    // touched before (the host backs it page by page), while memory freed
    // and reused is cheap: each round measures a cold read both ways,
    // each beside the floor (a new 1 GiB file written) of the same kind.
    // Fresh: every file and cache object so far is kept. Reused: the
    // floor's file and the earlier nodes' caches are deleted just before.
    let mut local = vec![];
    let (mut cold_fresh, mut floor_fresh) = (vec![], vec![]);
    let (mut cold_reused, mut floor_reused, mut warm) = (vec![], vec![], vec![]);
    for i in 0..runs.min(3) {
        let kept = dir.join(format!("new{i}.bin"));
        floor_fresh.push(new_file_write(&kept, size));
        local.push(time(Command::new("sh").args(["-c", &read_big])));
        d.new_node();
        cold_fresh.push(time(&mut d.exec(&["sh", "-c", &read_big])));
        let _ = std::fs::remove_file(&kept);
        d.forget_old_nodes();
        let scratch = dir.join("scratch.bin");
        floor_reused.push(new_file_write(&scratch, size));
        let _ = std::fs::remove_file(&scratch);
        d.new_node();
        d.forget_old_nodes();
        cold_reused.push(time(&mut d.exec(&["sh", "-c", &read_big])));
        warm.push(time(&mut d.exec(&["sh", "-c", &read_big])));
    }
    let each = |v: &[Duration]| v.iter().map(|d| ms(*d)).collect::<Vec<_>>().join(", ");
    eprintln!(
        "cold runs, fresh memory: {}; floor: {}",
        each(&cold_fresh),
        each(&floor_fresh)
    );
    eprintln!(
        "cold runs, reused memory: {}; floor: {}",
        each(&cold_reused),
        each(&floor_reused)
    );
    let l = median(local);
    let row = |what: &str, d: Duration, note: &str| {
        println!(
            "| {what} | {} ({}) | {} ({}) | {:.1}x | {note} |",
            ms(l),
            mbps(size, l),
            ms(d),
            mbps(size, d),
            d.as_secs_f64() / l.as_secs_f64()
        );
    };
    let floor_row = |what: &str, f: Duration| {
        println!(
            "| new 1 GiB file written (8 MiB `pwrite`s), {what} | {} ({}) | — | — | what a cold read's cache fill costs the node at least |",
            ms(f),
            mbps(size, f)
        );
    };
    row(
        "1 GiB read (`cat > /dev/null`), cold, reused memory",
        median(cold_reused),
        "empty node cache",
    );
    floor_row("reused memory", median(floor_reused));
    row(
        "1 GiB read, cold, fresh memory",
        median(cold_fresh),
        "empty node cache, page cache in memory the VM never touched",
    );
    floor_row("fresh memory", median(floor_fresh));
    row("1 GiB read, warm", median(warm), "cached, read natively");

    let cases: Vec<(&str, Vec<String>, &str)> = vec![
        (
            "find /usr/share | wc -l",
            vec!["sh".into(), "-c".into(), "find /usr/share | wc -l".into()],
            "listings read ahead while walking (OpenDir)",
        ),
        (
            "gcc -O2 -c",
            vec![
                "gcc".into(),
                "-O2".into(),
                "-c".into(),
                csrc_s.clone(),
                "-o".into(),
                obj.clone(),
            ],
            "",
        ),
        (
            "python3 -c pass",
            vec!["/usr/bin/python3".into(), "-c".into(), "pass".into()],
            "",
        ),
    ];
    for (name, argv, note) in cases {
        let args: Vec<&str> = argv.iter().map(String::as_str).collect();
        let (l, r) = d.warm_side_by_side(&args, runs);
        let note = if name == "gcc -O2 -c" {
            format!("{lines}-line file, warm")
        } else if note.is_empty() {
            "warm".to_string()
        } else {
            format!("{note}, warm")
        };
        println!(
            "| `{name}` | {} | {} | {:.1}x | {note} |",
            ms(l),
            ms(r),
            r.as_secs_f64() / l.as_secs_f64()
        );
    }
    drop(d);
    let _ = std::fs::remove_dir_all(&dir);
}
