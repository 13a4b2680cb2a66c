//! Host-mount backends: putting a sandbox's image layers on the host before
//! the gofer serves them.
//!
//! A snapshotter describes what to mount as a list of [`Mount`] values in the
//! shape containerd uses (`type`, `source`, `options`). This module turns that
//! list into real mounts on the host and takes them down again:
//!
//! * On **Linux** (`linux` module) through mount(2): `bind` (with `rbind` and
//!   a read-only remount for `ro`), `overlay`, `tmpfs`, and any other
//!   filesystem type passed through as is.
//! * On **Windows** ([`windows`]) through the legacy container-layer calls of
//!   `vmcompute.dll` and the volume-mount-point and symbolic-link calls of
//!   the Win32 API: `bind` (a directory symbolic link) and `windows-layer`.
//!   The orchestration is written against the [`windows::WindowsHost`] trait,
//!   so it compiles and is tested on every platform against
//!   [`windows::sim::SimHost`], an in-memory model of the Windows host.
//!
//! # Mounting a layer stack
//!
//! On Linux, the read-only layers become the `lowerdir` of an overlay (the
//! topmost layer first, as overlayfs wants) and the container's writable
//! layer its `upperdir`:
//!
//! ```no_run
//! use std::path::Path;
//! use tessera_mountns::host::{mount_all, unmount_all, Mount, UnmountFlags};
//!
//! let stack = [Mount {
//!     kind: "overlay".into(),
//!     source: "overlay".into(),
//!     options: vec![
//!         "lowerdir=/layers/2/fs:/layers/1/fs".into(),
//!         "upperdir=/layers/3/fs".into(),
//!         "workdir=/layers/3/work".into(),
//!     ],
//! }];
//! mount_all(&stack, Path::new("/run/sandbox/rootfs"))?;
//! // ... the gofer serves /run/sandbox/rootfs ...
//! unmount_all(Path::new("/run/sandbox/rootfs"), UnmountFlags::empty())?;
//! # Ok::<(), tessera_mountns::host::MountError>(())
//! ```
//!
//! On Windows the writable layer is the mount's `source` and its parents,
//! nearest first, travel in a `parentLayerPaths=` option holding a JSON list,
//! exactly as containerd's snapshotter writes it
//! ([`Mount::windows_layer`] builds that option). The target must be an
//! existing empty directory; afterwards it is a volume mount point of the
//! layer's volume:
//!
//! ```no_run
//! use std::path::Path;
//! use tessera_mountns::host::{mount_all, unmount, Mount, UnmountFlags};
//!
//! let scratch = Mount::windows_layer(
//!     r"C:\layers\3",
//!     &[r"C:\layers\2".to_string(), r"C:\layers\1".to_string()],
//! );
//! mount_all(&[scratch], Path::new(r"C:\run\sandbox\rootfs"))?;
//! // ...
//! unmount(Path::new(r"C:\run\sandbox\rootfs"), UnmountFlags::empty())?;
//! # Ok::<(), tessera_mountns::host::MountError>(())
//! ```
//!
//! # Failure
//!
//! Every error is a [`MountError`] naming the operation ([`Op`]), the path it
//! was applied to, and the cause ([`Cause`]). A mount that fails half way
//! undoes the steps it had done before returning, and [`mount_all`] unmounts
//! the mounts it had made, so a failed call leaves the host as it found it
//! (as far as the undo steps themselves succeed; their failures are logged).

use std::fmt;
use std::path::{Path, PathBuf};

use tessera_vfs::Errno;

#[cfg(target_os = "linux")]
pub mod linux;
pub mod windows;

/// One mount to make on the host, in containerd's shape.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Mount {
    /// The mount type: `bind`, `overlay`, `tmpfs` (Linux; any other
    /// filesystem type is passed to mount(2)), or `bind` and `windows-layer`
    /// (Windows).
    pub kind: String,
    /// What to mount: a directory for `bind`, the layer folder for
    /// `windows-layer`, a free-form name for `overlay` and `tmpfs`.
    pub source: String,
    /// Options in mount(8) style (`ro`, `rbind`, `lowerdir=...`,
    /// `parentLayerPaths=[...]`).
    pub options: Vec<String>,
}

impl Mount {
    /// A `bind` mount of `source`, read-only when `read_only` is set.
    pub fn bind(source: impl Into<String>, read_only: bool) -> Mount {
        let mut options = vec!["rbind".to_string()];
        if read_only {
            options.push("ro".to_string());
        }
        Mount {
            kind: "bind".into(),
            source: source.into(),
            options,
        }
    }

    /// A `windows-layer` mount of the layer folder `source` over its parent
    /// layer folders `parents` (nearest parent first), with the parents
    /// written as the `parentLayerPaths=` JSON option containerd uses.
    pub fn windows_layer(source: impl Into<String>, parents: &[String]) -> Mount {
        // Serialising a list of strings cannot fail; fall back to an empty
        // list rather than panic if serde_json ever thinks otherwise.
        let json = serde_json::to_string(parents).unwrap_or_else(|_| "[]".to_string());
        Mount {
            kind: windows::WINDOWS_LAYER.into(),
            source: source.into(),
            options: vec![format!("{}{json}", windows::PARENT_LAYER_PATHS)],
        }
    }

    /// Whether the options ask for a read-only mount (the last of `ro`/`rw`
    /// wins, as in mount(8)).
    pub fn read_only(&self) -> bool {
        let mut ro = false;
        for o in &self.options {
            match o.as_str() {
                "ro" => ro = true,
                "rw" => ro = false,
                _ => {}
            }
        }
        ro
    }

    /// Mounts this on `target` on the current host.
    ///
    /// # Errors
    ///
    /// A [`MountError`] naming the step that failed; the steps done before it
    /// have been undone.
    pub fn mount(&self, target: &Path) -> Result<(), MountError> {
        #[cfg(target_os = "linux")]
        {
            linux::mount(self, target)
        }
        #[cfg(windows)]
        {
            let t = windows::target_str(target)?;
            windows::mount_with(&windows::sys::SystemHost, self, t)
        }
        #[cfg(not(any(target_os = "linux", windows)))]
        {
            Err(MountError::new(
                Op::Mount,
                target,
                Cause::UnsupportedPlatform,
            ))
        }
    }
}

/// Mounts every entry of `mounts` on `target`, in order (later mounts stack on
/// earlier ones).
///
/// # Errors
///
/// The first failure. The mounts already made by this call are unmounted
/// first, newest first.
pub fn mount_all(mounts: &[Mount], target: &Path) -> Result<(), MountError> {
    #[cfg(windows)]
    {
        let t = windows::target_str(target)?;
        windows::mount_all_with(&windows::sys::SystemHost, mounts, t)
    }
    #[cfg(not(windows))]
    {
        for (done, m) in mounts.iter().enumerate() {
            if let Err(e) = m.mount(target) {
                for _ in 0..done {
                    if let Err(undo) = unmount(target, UnmountFlags::empty()) {
                        log::warn!("mount_all: undoing an earlier mount failed: {undo}");
                    }
                }
                return Err(e);
            }
        }
        Ok(())
    }
}

/// Unmounts the topmost mount at `target`.
///
/// On Linux this is umount2(2) and a target that is not a mount point gives
/// `EINVAL`, as it does there. On Windows a target that is neither a
/// directory link nor a volume mount point is not an error.
///
/// # Errors
///
/// A [`MountError`] with the step that failed.
pub fn unmount(target: &Path, flags: UnmountFlags) -> Result<(), MountError> {
    #[cfg(target_os = "linux")]
    {
        linux::unmount(target, flags)
    }
    #[cfg(windows)]
    {
        let _ = flags;
        let t = windows::target_str(target)?;
        windows::unmount_with(&windows::sys::SystemHost, t)
    }
    #[cfg(not(any(target_os = "linux", windows)))]
    {
        let _ = flags;
        Err(MountError::new(
            Op::Unmount,
            target,
            Cause::UnsupportedPlatform,
        ))
    }
}

/// Unmounts every mount stacked at `target`. An empty path, a path that does
/// not exist and a path that is not a mount point are not errors.
///
/// # Errors
///
/// The first failure other than "not a mount point".
pub fn unmount_all(target: &Path, flags: UnmountFlags) -> Result<(), MountError> {
    #[cfg(target_os = "linux")]
    {
        linux::unmount_all(target, flags)
    }
    #[cfg(windows)]
    {
        let _ = flags;
        let t = windows::target_str(target)?;
        windows::unmount_all_with(&windows::sys::SystemHost, t)
    }
    #[cfg(not(any(target_os = "linux", windows)))]
    {
        let _ = flags;
        Err(MountError::new(
            Op::Unmount,
            target,
            Cause::UnsupportedPlatform,
        ))
    }
}

/// Unmounts everything mounted at or below `target`, deepest first. On
/// Windows, where mounts do not nest under a target, this is
/// [`unmount_all`].
///
/// # Errors
///
/// The first failure other than "not a mount point".
pub fn unmount_recursive(target: &Path, flags: UnmountFlags) -> Result<(), MountError> {
    #[cfg(target_os = "linux")]
    {
        linux::unmount_recursive(target, flags)
    }
    #[cfg(not(target_os = "linux"))]
    {
        unmount_all(target, flags)
    }
}

bitflags::bitflags! {
    /// umount2(2) flags. Windows has no equivalent and ignores them.
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
    pub struct UnmountFlags: u32 {
        /// `MNT_FORCE`: abort pending requests (network filesystems).
        const FORCE = 1;
        /// `MNT_DETACH`: lazy unmount; detach now, clean up when unused.
        const DETACH = 2;
        /// `MNT_EXPIRE`: mark for expiry; unmount on the second call.
        const EXPIRE = 4;
        /// `UMOUNT_NOFOLLOW`: do not follow a symbolic link at the target.
        const NOFOLLOW = 8;
    }
}

/// The operation, or the step of one, that failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Op {
    /// Mounting, before any host call (option checks).
    Mount,
    /// Unmounting, before any host call.
    Unmount,
    /// Reading the mount's options.
    ParseOptions,
    /// Looking at what a path is (directory, link, mount point).
    Inspect,
    /// Removing the empty target directory a link replaces.
    RemoveTargetDir,
    /// Creating the directory symbolic link of a Windows bind.
    CreateLink,
    /// Removing the directory symbolic link of a Windows bind.
    RemoveLink,
    /// Putting back the empty directory a Windows bind replaced.
    RestoreTargetDir,
    /// `ActivateLayer`.
    ActivateLayer,
    /// `PrepareLayer`.
    PrepareLayer,
    /// `GetLayerMountPath`.
    GetLayerMountPath,
    /// `SetVolumeMountPointW`.
    SetVolumeMountPoint,
    /// Writing the layer source to the target's alternate data stream.
    RecordSource,
    /// Reading the layer source back from the alternate data stream.
    ReadSource,
    /// `DeleteVolumeMountPointW`.
    DeleteVolumeMountPoint,
    /// `UnprepareLayer`.
    UnprepareLayer,
    /// `DeactivateLayer`.
    DeactivateLayer,
    /// A mount(2) that creates a mount.
    MountSyscall,
    /// A mount(2) with `MS_REMOUNT` (read-only bind and other flags).
    Remount,
    /// A mount(2) that changes propagation (`private`, `rshared`, ...).
    SetPropagation,
    /// umount2(2).
    UnmountSyscall,
    /// Reading `/proc/self/mountinfo`.
    ReadMountinfo,
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Op::Mount => "mount",
            Op::Unmount => "unmount",
            Op::ParseOptions => "parse mount options of",
            Op::Inspect => "inspect",
            Op::RemoveTargetDir => "remove target directory",
            Op::CreateLink => "create directory link",
            Op::RemoveLink => "remove directory link",
            Op::RestoreTargetDir => "restore target directory",
            Op::ActivateLayer => "activate layer",
            Op::PrepareLayer => "prepare layer",
            Op::GetLayerMountPath => "get volume path of layer",
            Op::SetVolumeMountPoint => "set volume mount point",
            Op::RecordSource => "record layer source on",
            Op::ReadSource => "read layer source from",
            Op::DeleteVolumeMountPoint => "delete volume mount point",
            Op::UnprepareLayer => "unprepare layer",
            Op::DeactivateLayer => "deactivate layer",
            Op::MountSyscall => "mount(2) on",
            Op::Remount => "remount",
            Op::SetPropagation => "set propagation of",
            Op::UnmountSyscall => "umount2(2) of",
            Op::ReadMountinfo => "read mountinfo for",
        })
    }
}

/// Why an operation failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Cause {
    /// A Linux system call failed.
    #[error("{0}")]
    Errno(Errno),
    /// A Windows call failed.
    #[error(transparent)]
    Windows(#[from] windows::WinError),
    /// The mount type is not one this platform's backend knows.
    #[error("mount type {0:?} is not supported here")]
    UnsupportedKind(String),
    /// The feature exists elsewhere but cannot be provided on Windows.
    #[error("{0} is not implemented on Windows")]
    NotImplementedOnWindows(&'static str),
    /// An option could not be understood.
    #[error("invalid mount option {option:?}: {reason}")]
    InvalidOption {
        /// The option as given.
        option: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The source is not usable for this mount type.
    #[error("invalid source {source_path:?}: {reason}")]
    InvalidSource {
        /// The source as given.
        source_path: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The target path cannot be given to the host (not Unicode, NUL byte).
    #[error("the target path cannot be passed to the host")]
    InvalidTarget,
    /// `GetLayerMountPath` gave something that is not a volume.
    #[error("layer volume path {0:?} does not start with \\\\?\\Volume{{ and cannot be mounted")]
    NotAVolume(String),
    /// A volume mount point carries no record of the layer mounted there.
    #[error(
        "the volume mount point has no {stream:?} alternate data stream, so the layer \
         mounted there is unknown and cannot be released"
    )]
    MissingSourceRecord {
        /// The stream's name.
        stream: &'static str,
    },
    /// The source record is not valid UTF-8 text.
    #[error("the {stream:?} alternate data stream does not hold a UTF-8 path")]
    CorruptSourceRecord {
        /// The stream's name.
        stream: &'static str,
    },
    /// More mounts are stacked than this code is willing to peel off.
    #[error("more than {0} mounts are stacked at the target")]
    TooManyMounts(usize),
    /// Host mounts are implemented for Linux and Windows only.
    #[error("host mounts are not supported on this platform")]
    UnsupportedPlatform,
}

/// A failed host-mount operation: what was being done, to which path, and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{op} {}: {cause}", path.display())]
pub struct MountError {
    /// The operation or step that failed.
    pub op: Op,
    /// The path it was applied to (the target, or the layer for layer steps).
    pub path: PathBuf,
    /// Why it failed.
    #[source]
    pub cause: Cause,
}

impl MountError {
    /// Builds an error.
    pub fn new(op: Op, path: impl Into<PathBuf>, cause: impl Into<Cause>) -> MountError {
        MountError {
            op,
            path: path.into(),
            cause: cause.into(),
        }
    }

    /// The Linux errno of the cause, if it is one.
    pub fn errno(&self) -> Option<Errno> {
        match self.cause {
            Cause::Errno(e) => Some(e),
            _ => None,
        }
    }
}

impl From<Errno> for Cause {
    fn from(e: Errno) -> Cause {
        Cause::Errno(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_only_last_option_wins() {
        let mut m = Mount::bind("/a", true);
        assert!(m.read_only());
        m.options.push("rw".into());
        assert!(!m.read_only());
        assert!(!Mount::bind("/a", false).read_only());
    }

    #[test]
    fn windows_layer_option_round_trips() {
        let parents = vec![r"C:\l\2".to_string(), "C:\\l\\\"odd\"".to_string()];
        let m = Mount::windows_layer(r"C:\l\3", &parents);
        assert_eq!(m.kind, "windows-layer");
        assert_eq!(windows::parent_layer_paths(&m).unwrap(), parents);
    }

    #[test]
    fn error_names_op_path_and_cause() {
        let e = MountError::new(Op::UnmountSyscall, "/x", Errno::EBUSY);
        let text = e.to_string();
        assert!(text.contains("umount2(2)"), "{text}");
        assert!(text.contains("/x"), "{text}");
        assert!(text.contains("EBUSY"), "{text}");
        assert_eq!(e.errno(), Some(Errno::EBUSY));
    }
}
