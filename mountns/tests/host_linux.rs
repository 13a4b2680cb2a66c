//! The Linux backend against the real kernel.
//!
//! Each test re-runs itself in a child process of this test binary; the child
//! unshares its mount namespace, makes every mount in it private and mounts a
//! fresh tmpfs over /tmp, so nothing it mounts is seen by, or left on, the
//! host. The tests need root and are skipped, with a note, without it.
#![cfg(target_os = "linux")]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use rustix::mount::{MountFlags, MountPropagationFlags};
use tessera_mountns::host::linux::mount_points;
use tessera_mountns::host::{
    mount_all, unmount, unmount_all, unmount_recursive, Cause, Mount, Op, UnmountFlags,
};
use tessera_vfs::Errno;

const CHILD_ENV: &str = "TESSERA_HOST_NS_CHILD";
const RAN: &str = "tessera-host-ns-child-ran:";

/// Runs `body` as root in a private mount namespace (see the module docs).
fn in_private_namespace(name: &str, body: fn(&Path)) {
    if std::env::var_os(CHILD_ENV).is_some() {
        enter_private_namespace();
        body(Path::new("/tmp"));
        println!("{RAN}{name}");
        return;
    }
    // SAFETY: geteuid(2) has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("note: skipping {name}: it needs root for mount(2)");
        return;
    }
    let exe = std::env::current_exe().unwrap();
    let out = Command::new(exe)
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{name} failed in its namespace:\n{stdout}\n{stderr}"
    );
    // Guards against a filter that matched no test and so proved nothing.
    assert!(
        stdout.contains(&format!("{RAN}{name}")),
        "{name} did not run in its namespace:\n{stdout}\n{stderr}"
    );
}

fn enter_private_namespace() {
    // SAFETY: unshare(2) with CLONE_NEWNS only gives this thread its own copy
    // of the mount table (and of its filesystem context); no Rust-visible
    // state changes.
    let rc = unsafe { libc::unshare(libc::CLONE_NEWNS) };
    assert_eq!(rc, 0, "unshare: {}", std::io::Error::last_os_error());
    rustix::mount::mount_change(
        "/",
        MountPropagationFlags::PRIVATE | MountPropagationFlags::REC,
    )
    .unwrap();
    rustix::mount::mount("tmpfs", "/tmp", "tmpfs", MountFlags::empty(), None).unwrap();
}

/// The mount table of this thread: after unshare(2) the test thread's
/// namespace differs from the main thread's, which /proc/self shows.
fn mountinfo() -> Vec<u8> {
    fs::read("/proc/thread-self/mountinfo").unwrap()
}

fn is_mount_point(p: &Path) -> bool {
    let info = mountinfo();
    let p = fs::canonicalize(p).unwrap();
    mount_points(&info).contains(&p)
}

fn dirs(root: &Path, names: &[&str]) -> Vec<PathBuf> {
    names
        .iter()
        .map(|n| {
            let p = root.join(n);
            fs::create_dir_all(&p).unwrap();
            p
        })
        .collect()
}

fn raw_errno(e: &std::io::Error) -> Option<Errno> {
    e.raw_os_error().map(Errno::from_raw)
}

#[test]
fn bind_mount_and_unmount() {
    in_private_namespace("bind_mount_and_unmount", |tmp| {
        let d = dirs(tmp, &["src", "dst"]);
        fs::write(d[0].join("f"), "hello").unwrap();
        Mount::bind(d[0].to_str().unwrap(), false)
            .mount(&d[1])
            .unwrap();
        assert!(is_mount_point(&d[1]));
        assert_eq!(fs::read_to_string(d[1].join("f")).unwrap(), "hello");
        fs::write(d[1].join("g"), "through the bind").unwrap();
        assert!(d[0].join("g").exists());
        unmount(&d[1], UnmountFlags::empty()).unwrap();
        assert!(!is_mount_point(&d[1]));
        assert!(!d[1].join("f").exists());
    });
}

#[test]
fn read_only_bind_refuses_writes_with_erofs() {
    in_private_namespace("read_only_bind_refuses_writes_with_erofs", |tmp| {
        let d = dirs(tmp, &["src", "dst"]);
        fs::write(d[0].join("f"), "hello").unwrap();
        Mount::bind(d[0].to_str().unwrap(), true)
            .mount(&d[1])
            .unwrap();
        assert_eq!(fs::read_to_string(d[1].join("f")).unwrap(), "hello");
        let e = fs::write(d[1].join("new"), "x").unwrap_err();
        assert_eq!(raw_errno(&e), Some(Errno::EROFS), "{e}");
        let e = fs::write(d[1].join("f"), "x").unwrap_err();
        assert_eq!(raw_errno(&e), Some(Errno::EROFS), "{e}");
        // Only the bind is read-only, not its source.
        fs::write(d[0].join("new"), "x").unwrap();
        unmount(&d[1], UnmountFlags::empty()).unwrap();
        assert!(!is_mount_point(&d[1]));
    });
}

#[test]
fn overlay_copies_up_on_write() {
    in_private_namespace("overlay_copies_up_on_write", |tmp| {
        let d = dirs(tmp, &["lower1", "lower2", "upper", "work", "merged"]);
        fs::write(d[0].join("a"), "from lower1").unwrap();
        fs::write(d[1].join("a"), "from lower2").unwrap();
        fs::write(d[1].join("b"), "only in lower2").unwrap();
        let m = Mount {
            kind: "overlay".into(),
            source: "overlay".into(),
            options: vec![
                // The first lowerdir is the top of the stack.
                format!("lowerdir={}:{}", d[0].display(), d[1].display()),
                format!("upperdir={}", d[2].display()),
                format!("workdir={}", d[3].display()),
            ],
        };
        m.mount(&d[4]).unwrap();
        assert_eq!(fs::read_to_string(d[4].join("a")).unwrap(), "from lower1");
        assert_eq!(
            fs::read_to_string(d[4].join("b")).unwrap(),
            "only in lower2"
        );
        assert!(!d[2].join("b").exists());

        fs::write(d[4].join("b"), "changed").unwrap();
        // Copied up: the upper layer has the new content, the lower is intact.
        assert_eq!(fs::read_to_string(d[2].join("b")).unwrap(), "changed");
        assert_eq!(
            fs::read_to_string(d[1].join("b")).unwrap(),
            "only in lower2"
        );
        assert_eq!(fs::read_to_string(d[4].join("b")).unwrap(), "changed");

        unmount(&d[4], UnmountFlags::empty()).unwrap();
        assert!(!is_mount_point(&d[4]));
        assert!(!d[4].join("a").exists());
    });
}

#[test]
fn overlay_without_lowerdir_is_refused_before_mounting() {
    in_private_namespace(
        "overlay_without_lowerdir_is_refused_before_mounting",
        |tmp| {
            let d = dirs(tmp, &["merged"]);
            let m = Mount {
                kind: "overlay".into(),
                source: "overlay".into(),
                options: vec!["upperdir=/x".into()],
            };
            let e = m.mount(&d[0]).unwrap_err();
            assert_eq!(e.op, Op::ParseOptions);
            assert!(!is_mount_point(&d[0]));
        },
    );
}

#[test]
fn tmpfs_mount_and_unmount() {
    in_private_namespace("tmpfs_mount_and_unmount", |tmp| {
        let d = dirs(tmp, &["t"]);
        let m = Mount {
            kind: "tmpfs".into(),
            source: "layerscratch".into(),
            options: vec!["size=1m".into(), "mode=700".into(), "nosuid".into()],
        };
        m.mount(&d[0]).unwrap();
        let st = rustix::fs::statfs(&d[0]).unwrap();
        assert_eq!(st.f_type as u64, 0x0102_1994, "TMPFS_MAGIC");
        let vfs = rustix::fs::statvfs(&d[0]).unwrap();
        assert!(vfs.f_flag.contains(rustix::fs::StatVfsMountFlags::NOSUID));
        // size=1m is enforced.
        let e = fs::write(d[0].join("big"), vec![0u8; 2 << 20]).unwrap_err();
        assert_eq!(raw_errno(&e), Some(Errno::ENOSPC), "{e}");
        fs::remove_file(d[0].join("big")).unwrap();
        fs::write(d[0].join("small"), "x").unwrap();
        unmount(&d[0], UnmountFlags::empty()).unwrap();
        assert!(!d[0].join("small").exists());
    });
}

#[test]
fn unmount_of_a_non_mount_point_is_einval_but_unmount_all_is_fine() {
    in_private_namespace(
        "unmount_of_a_non_mount_point_is_einval_but_unmount_all_is_fine",
        |tmp| {
            let d = dirs(tmp, &["plain"]);
            let e = unmount(&d[0], UnmountFlags::empty()).unwrap_err();
            assert_eq!(e.op, Op::UnmountSyscall);
            assert_eq!(e.errno(), Some(Errno::EINVAL));
            unmount_all(&d[0], UnmountFlags::empty()).unwrap();
            unmount_all(Path::new(""), UnmountFlags::empty()).unwrap();
            unmount_all(&tmp.join("missing"), UnmountFlags::empty()).unwrap();
            unmount_recursive(&tmp.join("missing"), UnmountFlags::empty()).unwrap();
        },
    );
}

#[test]
fn unmount_all_peels_stacked_mounts() {
    in_private_namespace("unmount_all_peels_stacked_mounts", |tmp| {
        let d = dirs(tmp, &["t"]);
        let fs1 = Mount {
            kind: "tmpfs".into(),
            source: "one".into(),
            options: vec![],
        };
        let fs2 = Mount {
            source: "two".into(),
            ..fs1.clone()
        };
        mount_all(&[fs1, fs2], &d[0]).unwrap();
        unmount_all(&d[0], UnmountFlags::empty()).unwrap();
        assert!(!is_mount_point(&d[0]));
    });
}

#[test]
fn unmount_recursive_takes_nested_mounts_first() {
    in_private_namespace("unmount_recursive_takes_nested_mounts_first", |tmp| {
        let d = dirs(tmp, &["t", "src"]);
        let tmpfs = Mount {
            kind: "tmpfs".into(),
            source: "outer".into(),
            options: vec![],
        };
        tmpfs.mount(&d[0]).unwrap();
        let inner = d[0].join("inner");
        fs::create_dir(&inner).unwrap();
        Mount::bind(d[1].to_str().unwrap(), false)
            .mount(&inner)
            .unwrap();
        assert!(is_mount_point(&inner));
        // The outer mount is busy while the inner one exists.
        let e = unmount(&d[0], UnmountFlags::empty()).unwrap_err();
        assert_eq!(e.errno(), Some(Errno::EBUSY));
        unmount_recursive(&d[0], UnmountFlags::empty()).unwrap();
        assert!(!is_mount_point(&d[0]));
    });
}

#[test]
fn mount_all_that_fails_half_way_unmounts_what_it_mounted() {
    in_private_namespace(
        "mount_all_that_fails_half_way_unmounts_what_it_mounted",
        |tmp| {
            let d = dirs(tmp, &["t", "src"]);
            let mounts = [
                Mount {
                    kind: "tmpfs".into(),
                    source: "first".into(),
                    options: vec![],
                },
                Mount::bind(d[1].to_str().unwrap(), true),
                Mount::bind(tmp.join("does-not-exist").to_str().unwrap(), false),
            ];
            let e = mount_all(&mounts, &d[0]).unwrap_err();
            assert_eq!(e.op, Op::MountSyscall);
            assert_eq!(e.cause, Cause::Errno(Errno::ENOENT));
            assert!(!is_mount_point(&d[0]), "the first two mounts were left");
            // And the target is usable again.
            fs::write(d[0].join("f"), "x").unwrap();
        },
    );
}

#[test]
fn propagation_options_are_applied() {
    in_private_namespace("propagation_options_are_applied", |tmp| {
        let d = dirs(tmp, &["t"]);
        let m = Mount {
            kind: "tmpfs".into(),
            source: "shared-one".into(),
            options: vec!["shared".into()],
        };
        m.mount(&d[0]).unwrap();
        let info = String::from_utf8(mountinfo()).unwrap();
        let line = info.lines().find(|l| l.contains(" shared-one ")).unwrap();
        assert!(line.contains(" shared:"), "{line}");
        unmount(&d[0], UnmountFlags::empty()).unwrap();
    });
}
