//! Central daemon and CLI library.
