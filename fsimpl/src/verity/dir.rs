//! Signing directory trees (in progress).
