//! Shared helpers for the benchmark binaries (timing, medians, tables).
