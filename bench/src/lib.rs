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
