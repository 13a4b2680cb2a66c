//! The 256-byte `fsverity_descriptor`, whose hash is a file's digest.
//!
//! Layout (little-endian): `u8 version = 1`, `u8 hash_algorithm`,
//! `u8 log_blocksize`, `u8 salt_size`, `le32` reserved (was `sig_size`; zero
//! when measured), `le64 data_size`, `root_hash[64]` and `salt[32]` each
//! zero-padded, then 144 reserved zero bytes.

use super::hash::{Digest, HashAlg, MAX_DIGEST_SIZE, MAX_SALT_SIZE};
use super::params::MerkleParams;
use tessera_vfs::{Errno, Result};

/// Bytes in an encoded descriptor.
pub const DESCRIPTOR_SIZE: usize = 256;

const ROOT_AT: usize = 16;
const SALT_AT: usize = ROOT_AT + MAX_DIGEST_SIZE;
const RESERVED_AT: usize = SALT_AT + MAX_SALT_SIZE;

/// What a file's digest commits to: parameters, size and root hash.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Descriptor {
    /// How the tree was built.
    pub params: MerkleParams,
    /// The file's size in bytes.
    pub data_size: u64,
    /// The hash of the tree's top block (all zeros for an empty file).
    pub root_hash: Digest,
}

impl Descriptor {
    /// The descriptor's bytes.
    pub fn to_bytes(&self) -> [u8; DESCRIPTOR_SIZE] {
        let mut b = [0u8; DESCRIPTOR_SIZE];
        let salt = self.params.salt();
        b[0] = 1;
        b[1] = self.params.alg().fsverity_id();
        b[2] = self.params.log_block_size();
        b[3] = salt.len() as u8;
        b[8..16].copy_from_slice(&self.data_size.to_le_bytes());
        let root = self.root_hash.as_bytes();
        b[ROOT_AT..ROOT_AT + root.len()].copy_from_slice(root);
        b[SALT_AT..SALT_AT + salt.len()].copy_from_slice(salt);
        b
    }

    /// Decodes a descriptor, refusing anything fs-verity would not write.
    ///
    /// # Errors
    /// `EINVAL` for a wrong length, version, algorithm, block size or salt
    /// size, or non-zero reserved or padding bytes.
    pub fn parse(b: &[u8]) -> Result<Descriptor> {
        let b: &[u8; DESCRIPTOR_SIZE] = b.try_into().map_err(|_| Errno::EINVAL)?;
        if b[0] != 1 || b[4..8] != [0; 4] || b[RESERVED_AT..].iter().any(|&x| x != 0) {
            return Err(Errno::EINVAL);
        }
        let alg = HashAlg::from_fsverity_id(b[1]).ok_or(Errno::EINVAL)?;
        let block_size = 1usize.checked_shl(u32::from(b[2])).ok_or(Errno::EINVAL)?;
        let salt_len = usize::from(b[3]);
        if salt_len > MAX_SALT_SIZE {
            return Err(Errno::EINVAL);
        }
        let params = MerkleParams::new(alg, block_size, &b[SALT_AT..SALT_AT + salt_len])?;
        let ds = alg.digest_size();
        if b[ROOT_AT + ds..SALT_AT].iter().any(|&x| x != 0)
            || b[SALT_AT + salt_len..RESERVED_AT].iter().any(|&x| x != 0)
        {
            return Err(Errno::EINVAL);
        }
        let mut size = [0u8; 8];
        size.copy_from_slice(&b[8..16]);
        Ok(Descriptor {
            params,
            data_size: u64::from_le_bytes(size),
            root_hash: Digest::from_slice(&b[ROOT_AT..ROOT_AT + ds]),
        })
    }

    /// The file digest: the hash of the descriptor, what `fsverity digest`
    /// prints and a signature signs.
    pub fn digest(&self) -> Digest {
        self.params.alg().hash(&self.to_bytes())
    }

    /// The file digest as `fsverity digest` prints it: `sha256:<hex>`.
    pub fn digest_string(&self) -> String {
        format!("{}:{}", self.params.alg().name(), self.digest().to_hex())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_rejects() {
        let p = MerkleParams::new(HashAlg::Sha512, 1024, b"salty").unwrap();
        let d = Descriptor {
            params: p,
            data_size: 12345,
            root_hash: HashAlg::Sha512.hash(b"x"),
        };
        let b = d.to_bytes();
        assert_eq!(Descriptor::parse(&b), Ok(d));
        for (at, v) in [
            (0, 2),
            (1, 3),
            (2, 9),
            (3, 33),
            (5, 1),
            (255, 1),
            (SALT_AT + 5, 1),
        ] {
            let mut bad = b;
            bad[at] = v;
            assert_eq!(Descriptor::parse(&bad), Err(Errno::EINVAL), "byte {at}");
        }
        assert_eq!(Descriptor::parse(&b[..255]), Err(Errno::EINVAL));
    }
}
