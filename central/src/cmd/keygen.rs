//! `diatom keygen --out FILE`: a fresh 256-bit cluster key, mode 0600.

use crate::cli::KeygenArgs;
use dscp_dicp::Key;

/// Writes a new key; refuses to overwrite an existing file.
pub fn run(args: &KeygenArgs) -> Result<(), dscp_dicp::KeyError> {
    Key::generate().write_new(&args.out)
}
