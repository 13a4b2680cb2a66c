//! Building a sandbox's mount namespace, and the host-mount backends that prepare layer sources.

pub mod host;
