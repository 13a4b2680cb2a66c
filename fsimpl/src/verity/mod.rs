//! fs-verity: Merkle trees over file data, in Linux's exact format.
//!
//! A file's *digest* commits to every byte of it: the data is cut into
//! blocks, each block is hashed (with an optional salt), the hashes are
//! packed into blocks and hashed again, up to one root hash; the digest is
//! the hash of a 256-byte descriptor holding the parameters, the size and the
//! root hash. The format is Linux's (`Documentation/filesystems/fsverity.rst`),
//! so `fsverity digest` and this module agree on every digest, tree and
//! descriptor byte (a test checks that against the real tool).
//!
//! - [`build`]: build the tree of a byte stream ([`TreeBuilder`],
//!   [`build_tree`]).
//! - [`verify`]: read a file through its tree, checking only the blocks a
//!   read touches ([`Verifier`]).
//! - `dir`: sign a whole directory tree with one root hash, and check it.
//! - `cli`: the `tessera verity` subcommand.
//! - `fs`: the `verity` filesystem type, a read-only layer over a lower
//!   directory signed by `dir` (or by `fs::sign_lower` through the VFS),
//!   checking every lookup, listing, attribute, symlink target and read
//!   against one root hash.
//!
//! `dir` and `cli` walk host directories with Unix metadata (modes, owners,
//! symlinks) and `fs` reads `dir`'s manifest, so the three exist on Unix only; the tree library builds everywhere (the
//! workspace is also checked for Windows).
//!
//! Hashing uses the `sha2` crate (the issue asks for it). Version 0.11 picks
//! the SHA-NI (SHA-256) or AVX2 (SHA-512) code at run time and has no `asm`
//! feature any more, so none is enabled.

pub mod build;
#[cfg(unix)]
pub mod cli;
pub mod descriptor;
#[cfg(unix)]
pub mod dir;
#[cfg(unix)]
pub mod fs;
pub mod hash;
pub mod params;
pub mod source;
pub mod verify;

pub use build::{build_tree, build_tree_from_reader, MerkleTree, TreeBuilder};
pub use descriptor::{Descriptor, DESCRIPTOR_SIZE};
pub use hash::{Digest, HashAlg};
pub use params::{MerkleParams, TreeLayout, DEFAULT_BLOCK_SIZE};
pub use source::ReadAt;
pub use verify::{Verifier, VerityError};
