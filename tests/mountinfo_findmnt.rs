//! The `mountinfo` text Tessera generates parses with util-linux's
//! `findmnt -F` (the spec's check), with the tree, options and propagation
//! it describes.

use std::process::Command;

use tessera::ops::tessera::starting_process;
use tessera_vfs::abi::*;

#[test]
fn findmnt_parses_our_mountinfo() {
    if Command::new("findmnt").arg("--version").output().is_err() {
        eprintln!("SKIPPED: findmnt (util-linux) is not installed");
        return;
    }
    let p = starting_process().unwrap();
    p.mkdirat(AT_FDCWD, b"/m", 0o755).unwrap();
    p.mkdirat(AT_FDCWD, b"/with space", 0o755).unwrap();
    p.mount(
        b"none",
        b"/m",
        b"tmpfs",
        MountFlags::MS_NOSUID | MountFlags::MS_NODEV,
        b"size=64k,mode=0700",
    )
    .unwrap();
    p.mount(b"none", b"/m", b"", MountFlags::MS_SHARED, b"")
        .unwrap();
    p.mkdirat(AT_FDCWD, b"/m/sub", 0o755).unwrap();
    p.mount(b"/m/sub", b"/with space", b"", MountFlags::MS_BIND, b"")
        .unwrap();
    p.mount(b"none", b"/m", b"tmpfs", MountFlags::MS_RDONLY, b"")
        .unwrap();
    let text = p.mountinfo();
    let dir = std::env::temp_dir().join(format!("tessera-mountinfo-{}", std::process::id()));
    std::fs::write(&dir, &text).unwrap();
    let out = Command::new("findmnt")
        .args(["-F"])
        .arg(&dir)
        .args(["-l", "-n", "-o", "TARGET,FSTYPE,OPTIONS,FSROOT,PROPAGATION"])
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&dir);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "findmnt failed: {stderr}\n{}",
        String::from_utf8_lossy(&text)
    );
    // findmnt skips bad lines with status 0: a parse error shows only on stderr.
    assert!(
        stderr.is_empty(),
        "findmnt complained: {stderr}\n{}",
        String::from_utf8_lossy(&text)
    );
    let lines: Vec<Vec<&str>> = stdout
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(lines.len(), 4, "{stdout}");
    assert!(
        lines.iter().any(|l| l[0] == "/" && l[1] == "tmpfs"),
        "{stdout}"
    );
    assert!(
        lines.iter().any(|l| l[0] == "/m"
            && l[2].starts_with("rw,nosuid,nodev")
            && l[4].contains("shared")),
        "{stdout}"
    );
    assert!(
        lines.iter().any(|l| l[0] == "/m" && l[2].starts_with("ro")),
        "{stdout}"
    );
    // The bind shows its root inside the filesystem, and the escaped space decodes.
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("/with space") && l.contains("/sub")),
        "{stdout}"
    );
}
