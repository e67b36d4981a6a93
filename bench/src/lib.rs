//! Helpers shared by the benchmark binaries: command-line knobs, medians,
//! a loopback cluster ([`cluster`]) and protocol pieces ([`proto`]).

pub mod cluster;
pub mod proto;

use std::time::Duration;

/// The value of `--runs N` on the command line, or `default`.
pub fn runs_arg(default: usize) -> usize {
    usize_arg("--runs", default)
}

/// The value of `NAME N` on the command line (`name` with its dashes), or
/// `default`.
pub fn usize_arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(default)
}

/// Writes `bytes` (whole MiB) of xorshift data from `seed` to `path`: a
/// big file no compression or deduplication can shortcut.
pub fn write_big_file(path: &std::path::Path, bytes: u64, seed: u64) {
    use std::io::Write;
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).expect("create big file"));
    let mut x = seed | 1;
    let mut block = vec![0u8; 1 << 20];
    for _ in 0..bytes / block.len() as u64 {
        for c in block.chunks_exact_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            c.copy_from_slice(&x.to_le_bytes());
        }
        f.write_all(&block).expect("write big file");
    }
    f.flush().expect("flush big file");
}

/// `bytes` moved in `d`, as "N MB/s".
pub fn mbps(bytes: u64, d: Duration) -> String {
    format!("{:.0} MB/s", bytes as f64 / d.as_secs_f64() / 1e6)
}

/// The median of `v` (upper median for an even count); zero when empty.
pub fn median(v: &mut [Duration]) -> Duration {
    if v.is_empty() {
        return Duration::ZERO;
    }
    v.sort();
    v[v.len() / 2]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        let ms = Duration::from_millis;
        assert_eq!(median(&mut []), Duration::ZERO);
        assert_eq!(median(&mut [ms(3), ms(1), ms(2)]), ms(2));
        assert_eq!(median(&mut [ms(4), ms(1), ms(3), ms(2)]), ms(3));
    }
}
