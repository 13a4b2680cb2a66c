//! The two hash algorithms fs-verity defines, and the salted block hasher.
//!
//! fs-verity prefixes every hashed block with the salt, zero-padded to a
//! whole number of the hash's *input* blocks (64 bytes for SHA-256, 128 for
//! SHA-512). Because the padded salt fills whole input blocks, the hash state
//! after absorbing it can be computed once and cloned for every block: the
//! salt then costs nothing per block.

use sha2::{Digest as _, Sha256, Sha512};

/// The largest digest fs-verity uses (SHA-512), and so the size of the
/// descriptor's root-hash field.
pub const MAX_DIGEST_SIZE: usize = 64;

/// The largest salt fs-verity accepts.
pub const MAX_SALT_SIZE: usize = 32;

/// Zeros to pad a short last block with, without allocating.
static ZEROS: [u8; 4096] = [0; 4096];

/// A hash algorithm of fs-verity (`FS_VERITY_HASH_ALG_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HashAlg {
    /// SHA-256, fs-verity's algorithm number 1 and its default.
    Sha256,
    /// SHA-512, fs-verity's algorithm number 2.
    Sha512,
}

impl HashAlg {
    /// Bytes in one digest.
    pub const fn digest_size(self) -> usize {
        match self {
            HashAlg::Sha256 => 32,
            HashAlg::Sha512 => 64,
        }
    }

    /// The hash's input block size, to which the salt is padded.
    pub const fn input_block_size(self) -> usize {
        match self {
            HashAlg::Sha256 => 64,
            HashAlg::Sha512 => 128,
        }
    }

    /// The number stored in the descriptor's `hash_algorithm` byte.
    pub const fn fsverity_id(self) -> u8 {
        match self {
            HashAlg::Sha256 => 1,
            HashAlg::Sha512 => 2,
        }
    }

    /// The algorithm with descriptor number `id`, if fs-verity defines it.
    pub const fn from_fsverity_id(id: u8) -> Option<HashAlg> {
        match id {
            1 => Some(HashAlg::Sha256),
            2 => Some(HashAlg::Sha512),
            _ => None,
        }
    }

    /// The name `fsverity --hash-alg` takes and prints (`"sha256"`).
    pub const fn name(self) -> &'static str {
        match self {
            HashAlg::Sha256 => "sha256",
            HashAlg::Sha512 => "sha512",
        }
    }

    /// The algorithm named `name` (as [`HashAlg::name`] spells it).
    pub fn from_name(name: &str) -> Option<HashAlg> {
        match name {
            "sha256" => Some(HashAlg::Sha256),
            "sha512" => Some(HashAlg::Sha512),
            _ => None,
        }
    }

    /// The plain (unsalted) hash of `data`.
    pub fn hash(self, data: &[u8]) -> Digest {
        match self {
            HashAlg::Sha256 => Digest::from_slice(&Sha256::digest(data)),
            HashAlg::Sha512 => Digest::from_slice(&Sha512::digest(data)),
        }
    }
}

/// A digest of either algorithm, stored inline.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Digest {
    len: u8,
    bytes: [u8; MAX_DIGEST_SIZE],
}

impl Digest {
    /// A digest holding a copy of `bytes` (at most [`MAX_DIGEST_SIZE`];
    /// longer input is cut, which no hash of ours produces).
    pub fn from_slice(bytes: &[u8]) -> Digest {
        let n = bytes.len().min(MAX_DIGEST_SIZE);
        let mut d = Digest {
            len: n as u8,
            bytes: [0; MAX_DIGEST_SIZE],
        };
        d.bytes[..n].copy_from_slice(&bytes[..n]);
        d
    }

    /// The all-zero digest of `alg`: fs-verity's root hash of an empty file.
    pub fn zero(alg: HashAlg) -> Digest {
        Digest {
            len: alg.digest_size() as u8,
            bytes: [0; MAX_DIGEST_SIZE],
        }
    }

    /// The digest's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }

    /// Lower-case hexadecimal, as `fsverity digest` prints it.
    pub fn to_hex(&self) -> String {
        to_hex(self.as_bytes())
    }

    /// Parses lower- or upper-case hexadecimal of an `alg` digest.
    pub fn from_hex(alg: HashAlg, hex: &str) -> Option<Digest> {
        let bytes = from_hex(hex)?;
        (bytes.len() == alg.digest_size()).then(|| Digest::from_slice(&bytes))
    }
}

impl std::fmt::Debug for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Digest({})", self.to_hex())
    }
}

/// Lower-case hexadecimal of `bytes`.
pub fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    s
}

/// Parses hexadecimal (either case, even length); `None` on anything else.
pub fn from_hex(hex: &str) -> Option<Vec<u8>> {
    fn nibble(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    }
    let h = hex.as_bytes();
    if !h.len().is_multiple_of(2) {
        return None;
    }
    h.chunks_exact(2)
        .map(|p| Some(nibble(p[0])? << 4 | nibble(p[1])?))
        .collect()
}

/// A hash state that has already absorbed the padded salt.
#[derive(Clone)]
enum State {
    Sha256(Sha256),
    Sha512(Sha512),
}

/// Hashes fs-verity blocks: `H(padded salt ‖ block ‖ zero padding)`.
#[derive(Clone)]
pub struct BlockHasher {
    alg: HashAlg,
    salted: State,
}

impl BlockHasher {
    /// A hasher for `alg` with `salt` (empty for none; the caller has checked
    /// its length).
    pub fn new(alg: HashAlg, salt: &[u8]) -> BlockHasher {
        // An empty salt adds no prefix at all, not a block of zeros.
        let mut padded = Vec::new();
        if !salt.is_empty() {
            let unit = alg.input_block_size();
            padded.extend_from_slice(salt);
            padded.resize(salt.len().div_ceil(unit) * unit, 0);
        }
        let salted = match alg {
            HashAlg::Sha256 => State::Sha256(Sha256::new_with_prefix(&padded)),
            HashAlg::Sha512 => State::Sha512(Sha512::new_with_prefix(&padded)),
        };
        BlockHasher { alg, salted }
    }

    /// The algorithm.
    pub fn alg(&self) -> HashAlg {
        self.alg
    }

    /// Hashes `data` zero-padded to `block_size` bytes and writes the digest
    /// into `out` (which must be exactly one digest long).
    pub fn hash_block_into(&self, data: &[u8], block_size: usize, out: &mut [u8]) {
        match &self.salted {
            State::Sha256(s) => {
                let mut h = s.clone();
                h.update(data);
                pad(&mut |z| h.update(z), block_size.saturating_sub(data.len()));
                out.copy_from_slice(&h.finalize());
            }
            State::Sha512(s) => {
                let mut h = s.clone();
                h.update(data);
                pad(&mut |z| h.update(z), block_size.saturating_sub(data.len()));
                out.copy_from_slice(&h.finalize());
            }
        }
    }

    /// The digest of `data` zero-padded to `block_size` bytes.
    pub fn hash_block(&self, data: &[u8], block_size: usize) -> Digest {
        let mut out = [0u8; MAX_DIGEST_SIZE];
        let n = self.alg.digest_size();
        self.hash_block_into(data, block_size, &mut out[..n]);
        Digest::from_slice(&out[..n])
    }
}

fn pad(update: &mut dyn FnMut(&[u8]), mut n: usize) {
    while n > 0 {
        let k = n.min(ZEROS.len());
        update(&ZEROS[..k]);
        n -= k;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip_and_rejects() {
        let d = HashAlg::Sha256.hash(b"abc");
        assert_eq!(
            d.to_hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(Digest::from_hex(HashAlg::Sha256, &d.to_hex()), Some(d));
        assert_eq!(Digest::from_hex(HashAlg::Sha512, &d.to_hex()), None);
        assert_eq!(from_hex("abc"), None);
        assert_eq!(from_hex("zz"), None);
        assert_eq!(from_hex("A0ff"), Some(vec![0xa0, 0xff]));
    }

    #[test]
    fn salt_is_padded_to_input_block() {
        let salt = [7u8; 5];
        for alg in [HashAlg::Sha256, HashAlg::Sha512] {
            let mut manual = salt.to_vec();
            manual.resize(alg.input_block_size(), 0);
            manual.extend_from_slice(b"data");
            manual.resize(alg.input_block_size() + 1024, 0);
            let h = BlockHasher::new(alg, &salt).hash_block(b"data", 1024);
            assert_eq!(h, alg.hash(&manual));
        }
    }

    #[test]
    fn no_salt_means_no_prefix() {
        let mut manual = b"xy".to_vec();
        manual.resize(8192, 0);
        let h = BlockHasher::new(HashAlg::Sha256, &[]).hash_block(b"xy", 8192);
        assert_eq!(h, HashAlg::Sha256.hash(&manual));
    }
}
