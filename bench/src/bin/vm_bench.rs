//! Diatom nodes as QEMU/TCG virtual machines (issue 11): how long a VM
//! takes from QEMU's start until its node is `up` with central, and how
//! long jobs take in it, side by side with the same command run locally.
//! Uses the integration tests' harness (`diatom_tests::vm`): central in a
//! network namespace, the VM on a tap bridged to it, an initramfs holding
//! only the static `diatom-client`.
//!
//! Each of `--boots N` boots (default 3) runs every command once first
//! ("first": the VM's cache holds only what the rows above fetched); after
//! the last boot, `--runs N` (default 5) warm runs interleaved with local
//! ones. Medians. Root; `make static-client` first.
//!
//! `make static-client && cargo build --release --bins && cargo run --release -p diatom-bench --bin vm_bench [-- --runs N --boots N]`

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use diatom_bench::cluster::{ms, time};
use diatom_tests::cluster::DiatomCluster;
use diatom_tests::vm::{VmCluster, PRIMES_C};

const PYTHON: &str = "import hashlib; print(sum(i * i for i in range(100000)), \
                      hashlib.sha256(b'diatom').hexdigest())";

fn median(mut v: Vec<Duration>) -> Duration {
    diatom_bench::median(&mut v)
}

fn vm_time(c: &DiatomCluster, work: &Path, argv: &[&str]) -> Duration {
    let mut cmd = c.diatom_cmd(["exec", "--node", "vm1", "--"].iter().chain(argv));
    cmd.current_dir(work);
    time(&mut cmd)
}

fn local_time(work: &Path, argv: &[&str]) -> Duration {
    time(Command::new(argv[0]).args(&argv[1..]).current_dir(work))
}

fn main() {
    let runs = diatom_bench::runs_arg(5);
    let boots = diatom_bench::usize_arg("--boots", 3).max(1);
    let work = std::env::temp_dir().join(format!("diatom-vm-bench-{}", std::process::id()));
    std::fs::create_dir_all(&work).expect("work dir");
    std::fs::write(
        work.join("data.bin"),
        diatom_tests::cluster::pseudo_random(1 << 20, 7),
    )
    .expect("data file");
    std::fs::write(work.join("primes.c"), PRIMES_C).expect("source");
    let cases: [(&str, &[&str]); 6] = [
        ("/bin/true", &["/bin/true"]),
        ("/bin/echo hello", &["/bin/echo", "hello"]),
        ("sha256sum (1 MiB file)", &["sha256sum", "data.bin"]),
        (
            "python3 -c (hashlib, sum)",
            &["/usr/bin/python3", "-c", PYTHON],
        ),
        ("gcc -O2 -c primes.c", &["gcc", "-O2", "-c", "primes.c"]),
        ("./primes (gcc-built, CPU-bound)", &["./primes"]),
    ];
    // ./primes exists before its row runs in the VM.
    local_time(&work, &["gcc", "-O2", "-o", "primes", "primes.c"]);

    let mut boot = Vec::new();
    let mut first: Vec<Vec<Duration>> = vec![Vec::new(); cases.len()];
    let mut last = None;
    for _ in 0..boots {
        drop(last.take());
        let Some(vms) = VmCluster::start("vm_bench", "vmbench", 1) else {
            eprintln!("vm_bench: cannot boot a VM here (see above)");
            std::process::exit(1);
        };
        boot.push(vms.boot_time(1).expect("booted"));
        for (i, (_, argv)) in cases.iter().enumerate() {
            first[i].push(vm_time(vms.cluster(), &work, argv));
        }
        last = Some(vms);
    }
    let vms = last.expect("at least one boot");
    println!(
        "VM: {} (QEMU TCG, 1 vCPU, {} MiB); boot until the node is up, median of {boots}: {} (all: {})",
        vms.host().release,
        diatom_tests::vm::VM_MEMORY_MIB,
        ms(median(boot.clone())),
        boot.iter().map(|d| ms(*d)).collect::<Vec<_>>().join(", ")
    );
    println!();
    println!("| command | local | VM warm | ratio | VM first run after boot |");
    println!("|---|---|---|---|---|");
    for (i, (name, argv)) in cases.iter().enumerate() {
        let (mut local, mut warm) = (Vec::new(), Vec::new());
        for _ in 0..runs {
            local.push(local_time(&work, argv));
            warm.push(vm_time(vms.cluster(), &work, argv));
        }
        let (l, w) = (median(local), median(warm));
        println!(
            "| `{name}` | {} | {} | {:.1}x | {} |",
            ms(l),
            ms(w),
            w.as_secs_f64() / l.as_secs_f64(),
            ms(median(first[i].clone()))
        );
    }
    drop(vms);
    let _ = std::fs::remove_dir_all(&work);
}
