//! The `tessera verity` subcommand.
//!
//! ```text
//! tessera verity digest FILE... [--hash-alg=sha256|sha512] [--block-size=N] [--salt=HEX]
//! tessera verity sign DIR [--hash-alg=...] [--block-size=N] [--salt=HEX]
//! tessera verity check DIR HASH
//! ```
//!
//! `digest` prints one line per file exactly as `fsverity digest` does
//! (`sha256:<hex> FILE`). `sign` writes the trees and the manifest (see
//! [`super::dir`]) and prints the root hash; `check` prints one line per
//! mismatching path, `<path>: <what>`. Exit status: 0 all well, 1 a file
//! failed or does not match, 2 a usage error.

use std::io::Write;
use std::path::Path;

use super::build::build_tree_from_reader;
use super::dir::{check_dir, parse_root_hash, sign_dir};
use super::hash::{from_hex, HashAlg};
use super::params::{MerkleParams, DEFAULT_BLOCK_SIZE};
use super::source::io_errno;
use tessera_vfs::Errno;

const USAGE: &str =
    "usage: tessera verity digest FILE... [--hash-alg=sha256|sha512] [--block-size=N] [--salt=HEX]
       tessera verity sign DIR [--hash-alg=sha256|sha512] [--block-size=N] [--salt=HEX]
       tessera verity check DIR HASH";

/// Runs `tessera verity` with `args` (the words after `verity`), writing to
/// `out` and `err`; returns the exit status.
pub fn run(args: &[String], out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    match parse(args) {
        Ok(cmd) => cmd.run(out, err),
        Err(msg) => {
            let _ = writeln!(err, "tessera verity: {msg}\n{USAGE}");
            2
        }
    }
}

#[derive(Debug)]
enum Cmd {
    Help,
    Digest(MerkleParams, Vec<String>),
    Sign(MerkleParams, String),
    Check(String, String),
}

fn parse(args: &[String]) -> Result<Cmd, String> {
    let Some((sub, rest)) = args.split_first() else {
        return Err("missing subcommand".to_string());
    };
    let mut alg = HashAlg::Sha256;
    let mut block_size = DEFAULT_BLOCK_SIZE;
    let mut salt = Vec::new();
    let mut params_given = false;
    let mut operands = Vec::new();
    let mut it = rest.iter();
    let mut options_done = false;
    while let Some(a) = it.next() {
        if options_done || !a.starts_with("--") {
            operands.push(a.clone());
            continue;
        }
        if a == "--" {
            options_done = true;
            continue;
        }
        if a == "--help" {
            return Ok(Cmd::Help);
        }
        // Both `--opt=value` and `--opt value`, as getopt_long takes them.
        let (name, value) = match a.split_once('=') {
            Some((n, v)) => (n, v.to_string()),
            None => (
                a.as_str(),
                it.next()
                    .ok_or_else(|| format!("option {a} needs a value"))?
                    .clone(),
            ),
        };
        params_given = true;
        match name {
            "--hash-alg" => {
                alg = HashAlg::from_name(&value)
                    .ok_or_else(|| format!("unknown hash algorithm {value:?}"))?
            }
            "--block-size" => {
                block_size = value
                    .parse()
                    .map_err(|_| format!("invalid block size {value:?}"))?
            }
            "--salt" => salt = from_hex(&value).ok_or_else(|| format!("invalid salt {value:?}"))?,
            _ => return Err(format!("unknown option {name}")),
        }
    }
    let params = MerkleParams::new(alg, block_size, &salt).map_err(|e| {
        if e == Errno::EMSGSIZE {
            format!("salt of {} bytes is longer than 32", salt.len())
        } else {
            format!("block size {block_size} is not a power of two in 1024..=65536")
        }
    })?;
    match (sub.as_str(), operands.len()) {
        ("help" | "--help", _) => Ok(Cmd::Help),
        ("digest", 1..) => Ok(Cmd::Digest(params, operands)),
        ("sign", 1) => Ok(Cmd::Sign(params, operands.remove(0))),
        ("check", 2) if !params_given => {
            let hash = operands.pop().unwrap_or_default();
            Ok(Cmd::Check(operands.remove(0), hash))
        }
        ("check", 2) => Err("check takes no tree options: the manifest records them".into()),
        ("digest" | "sign" | "check", _) => Err(format!("wrong number of operands for {sub}")),
        _ => Err(format!("unknown subcommand {sub:?}")),
    }
}

impl Cmd {
    fn run(self, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
        match self {
            Cmd::Help => {
                let _ = writeln!(out, "{USAGE}");
                0
            }
            Cmd::Digest(params, files) => {
                let mut status = 0;
                for f in files {
                    let tree = std::fs::File::open(&f)
                        .map_err(|e| io_errno(&e))
                        .and_then(|file| build_tree_from_reader(params, file));
                    match tree {
                        Ok(t) => {
                            let _ = writeln!(out, "{} {f}", t.descriptor().digest_string());
                        }
                        Err(e) => {
                            let _ = writeln!(err, "tessera verity: {f}: {e}");
                            status = 1;
                        }
                    }
                }
                status
            }
            Cmd::Sign(params, dir) => match sign_dir(Path::new(&dir), params) {
                Ok(m) => {
                    let _ = writeln!(out, "{}:{}", params.alg().name(), m.root_hash().to_hex());
                    0
                }
                Err(e) => {
                    let _ = writeln!(err, "tessera verity: {e}");
                    1
                }
            },
            Cmd::Check(dir, hash) => {
                let Some((alg, digest)) = parse_root_hash(&hash) else {
                    let _ = writeln!(err, "tessera verity: invalid root hash {hash:?}\n{USAGE}");
                    return 2;
                };
                match check_dir(Path::new(&dir), alg, &digest) {
                    Ok(findings) if findings.is_empty() => {
                        let _ = writeln!(out, "{dir}: OK");
                        0
                    }
                    Ok(findings) => {
                        for f in &findings {
                            let _ = writeln!(out, "{f}");
                        }
                        1
                    }
                    Err(e) => {
                        let _ = writeln!(err, "tessera verity: {e}");
                        1
                    }
                }
            }
        }
    }
}
