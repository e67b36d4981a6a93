//! Diatom wire protocols (DSCP and DICP).
