//! The tracer on real binaries, through `diatom trace` and the library.
