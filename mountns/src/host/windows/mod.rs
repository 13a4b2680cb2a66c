//! The Windows host-mount backend: `bind` and `windows-layer`.
//!
//! The steps are those containerd's Windows mount code takes, written against
//! the small [`WindowsHost`] trait so that they compile and are tested on every
//! platform: `sys::SystemHost` (compiled on Windows only) makes the real calls and
//! [`sim::SimHost`] is an in-memory model of the host with failure injection.
//!
//! * `bind` replaces the empty target directory with a directory symbolic
//!   link to the source. Windows cannot make such a link read-only, so `ro`
//!   is refused rather than silently ignored. Unmounting removes the link and
//!   puts the empty directory back, so the target looks as it did before the
//!   mount, as a Linux mount point does after umount.
//! * `windows-layer` activates the layer folder (the source), prepares it
//!   over its parents (the `parentLayerPaths=` option), asks for its volume
//!   path, mounts that volume at the target with `SetVolumeMountPointW`, and
//!   records the source in the target's `containerd.io-source` alternate data
//!   stream, which is how a later unmount, given only the target, finds the
//!   layer to release. A step that fails undoes the steps before it, newest
//!   first, and the first error is returned.
//!
//! Paths are `&str` in Windows syntax (either separator is accepted) so that
//! the same logic runs unchanged on Linux against the simulator.

use std::fmt;
use std::path::Path;

use super::{Cause, Mount, MountError, Op};

pub mod sim;
#[cfg(windows)]
pub mod sys;

/// The mount type of a container layer.
pub const WINDOWS_LAYER: &str = "windows-layer";
/// The option prefix whose value is the JSON list of parent layer folders.
pub const PARENT_LAYER_PATHS: &str = "parentLayerPaths=";
/// The alternate data stream on the target that records the mounted layer.
pub const SOURCE_STREAM: &str = "containerd.io-source";
/// What every volume path from `GetLayerMountPath` must start with.
pub const VOLUME_PREFIX: &str = r"\\?\Volume{";

/// Win32 error codes this backend produces or recognises. They are plain
/// numbers (not `windows-sys` constants) so the logic builds on every host.
pub mod codes {
    /// `ERROR_FILE_NOT_FOUND`
    pub const FILE_NOT_FOUND: u32 = 2;
    /// `ERROR_PATH_NOT_FOUND`
    pub const PATH_NOT_FOUND: u32 = 3;
    /// `ERROR_ACCESS_DENIED`
    pub const ACCESS_DENIED: u32 = 5;
    /// `ERROR_GEN_FAILURE`
    pub const GEN_FAILURE: u32 = 31;
    /// `ERROR_INVALID_PARAMETER`
    pub const INVALID_PARAMETER: u32 = 87;
    /// `ERROR_DIR_NOT_EMPTY`
    pub const DIR_NOT_EMPTY: u32 = 145;
    /// `ERROR_BUSY`
    pub const BUSY: u32 = 170;
    /// `ERROR_ALREADY_EXISTS`
    pub const ALREADY_EXISTS: u32 = 183;
    /// `ERROR_DIRECTORY` (the name is not a directory)
    pub const DIRECTORY: u32 = 267;
    /// `ERROR_MOD_NOT_FOUND`
    pub const MOD_NOT_FOUND: u32 = 126;
    /// `ERROR_PROC_NOT_FOUND`
    pub const PROC_NOT_FOUND: u32 = 127;
    /// `ERROR_NOT_FOUND`
    pub const NOT_FOUND: u32 = 1168;
    /// `ERROR_NOT_A_REPARSE_POINT`
    pub const NOT_A_REPARSE_POINT: u32 = 4390;

    /// The symbolic name of a code this module knows.
    pub fn name(code: u32) -> Option<&'static str> {
        Some(match code {
            FILE_NOT_FOUND => "ERROR_FILE_NOT_FOUND",
            PATH_NOT_FOUND => "ERROR_PATH_NOT_FOUND",
            ACCESS_DENIED => "ERROR_ACCESS_DENIED",
            GEN_FAILURE => "ERROR_GEN_FAILURE",
            INVALID_PARAMETER => "ERROR_INVALID_PARAMETER",
            DIR_NOT_EMPTY => "ERROR_DIR_NOT_EMPTY",
            BUSY => "ERROR_BUSY",
            ALREADY_EXISTS => "ERROR_ALREADY_EXISTS",
            DIRECTORY => "ERROR_DIRECTORY",
            MOD_NOT_FOUND => "ERROR_MOD_NOT_FOUND",
            PROC_NOT_FOUND => "ERROR_PROC_NOT_FOUND",
            NOT_FOUND => "ERROR_NOT_FOUND",
            NOT_A_REPARSE_POINT => "ERROR_NOT_A_REPARSE_POINT",
            _ => return None,
        })
    }
}

/// A failed Windows host call.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WinError {
    /// A Win32 error code (from `GetLastError`, or an HRESULT of the Win32
    /// facility).
    #[error("Windows error {code} ({})", codes::name(*code).unwrap_or("see winerror.h"))]
    Win32 {
        /// The code.
        code: u32,
    },
    /// An HRESULT outside the Win32 facility.
    #[error("HRESULT {hr:#010x}")]
    HResult {
        /// The HRESULT, as its unsigned bit pattern.
        hr: u32,
    },
    /// A DLL could not be loaded; for `vmcompute.dll` this means the
    /// Containers feature is not installed.
    #[error(
        "{library} could not be loaded (Windows error {code}); container layers need the \
         Windows Containers feature"
    )]
    LibraryUnavailable {
        /// The DLL's name.
        library: &'static str,
        /// The Win32 error of `LoadLibraryExW`.
        code: u32,
    },
    /// A DLL lacks a function this backend needs.
    #[error("{library} has no function {function}")]
    MissingFunction {
        /// The DLL's name.
        library: &'static str,
        /// The function's name.
        function: &'static str,
    },
    /// A string holds a NUL and cannot be passed to Windows.
    #[error("{0:?} contains a NUL character")]
    InteriorNul(String),
    /// A failure made on purpose by the simulator.
    #[error("simulated failure of host call #{call} ({function})")]
    Injected {
        /// The 1-based number of the call that failed.
        call: u64,
        /// The trait method that failed.
        function: &'static str,
    },
}

impl WinError {
    /// A Win32 error code.
    pub const fn win32(code: u32) -> WinError {
        WinError::Win32 { code }
    }

    /// The error an HRESULT stands for; `FACILITY_WIN32` codes become
    /// [`WinError::Win32`] so callers can match on the plain code.
    pub const fn from_hresult(hr: i32) -> WinError {
        let bits = hr as u32;
        if bits & 0xFFFF_0000 == 0x8007_0000 {
            WinError::Win32 {
                code: bits & 0xFFFF,
            }
        } else {
            WinError::HResult { hr: bits }
        }
    }

    /// The Win32 code, if the error carries one.
    pub fn code(&self) -> Option<u32> {
        match self {
            WinError::Win32 { code } => Some(*code),
            _ => None,
        }
    }
}

/// What a path is, as far as unmounting cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PathKind {
    /// Nothing is there.
    Missing,
    /// A plain directory.
    Directory,
    /// A directory symbolic link (a `bind`).
    DirSymlink,
    /// A directory on which a volume is mounted (a `windows-layer`).
    VolumeMountPoint,
    /// Anything else: a file, a junction, another reparse point.
    Other,
}

/// The host calls the Windows backend makes. Everything the orchestration
/// does to the host goes through here, which is what lets the simulator
/// count the calls and fail any one of them.
///
/// Layer calls take containerd's split of the layer folder: `home` is the
/// parent folder with its trailing separator, `id` the folder's name.
pub trait WindowsHost {
    /// `ActivateLayer`.
    fn activate_layer(&self, home: &str, id: &str) -> Result<(), WinError>;
    /// `PrepareLayer` over `parents`, nearest parent first.
    fn prepare_layer(&self, home: &str, id: &str, parents: &[String]) -> Result<(), WinError>;
    /// `GetLayerMountPath`: the path where the prepared layer can be reached.
    fn layer_mount_path(&self, home: &str, id: &str) -> Result<String, WinError>;
    /// `UnprepareLayer`.
    fn unprepare_layer(&self, home: &str, id: &str) -> Result<(), WinError>;
    /// `DeactivateLayer`.
    fn deactivate_layer(&self, home: &str, id: &str) -> Result<(), WinError>;
    /// `SetVolumeMountPointW`; both arguments end in a backslash.
    fn set_volume_mount_point(&self, mount_point: &str, volume: &str) -> Result<(), WinError>;
    /// `DeleteVolumeMountPointW`; the argument ends in a backslash.
    fn delete_volume_mount_point(&self, mount_point: &str) -> Result<(), WinError>;
    /// What `path` is, without following a link or mount point at it.
    fn path_kind(&self, path: &str) -> Result<PathKind, WinError>;
    /// Creates an empty directory.
    fn create_dir(&self, path: &str) -> Result<(), WinError>;
    /// Removes an empty directory.
    fn remove_dir(&self, path: &str) -> Result<(), WinError>;
    /// Creates a directory symbolic link at `link` pointing to `target`.
    fn create_dir_symlink(&self, link: &str, target: &str) -> Result<(), WinError>;
    /// Removes the directory symbolic link at `link` (not what it points to).
    fn remove_dir_symlink(&self, link: &str) -> Result<(), WinError>;
    /// The content of the alternate data stream `stream` of `path`, or `None`
    /// if there is no such stream.
    fn read_stream(&self, path: &str, stream: &str) -> Result<Option<Vec<u8>>, WinError>;
    /// Creates or replaces the alternate data stream `stream` of `path`.
    fn write_stream(&self, path: &str, stream: &str, data: &[u8]) -> Result<(), WinError>;
}

fn is_sep(c: char) -> bool {
    c == '\\' || c == '/'
}

/// `path` with forward slashes turned into backslashes and trailing
/// separators removed, except where that would change its meaning (`C:\`,
/// `\`).
pub fn clean_path(path: &str) -> String {
    let mut p: String = path
        .chars()
        .map(|c| if c == '/' { '\\' } else { c })
        .collect();
    while p.len() > 1 && p.ends_with('\\') {
        let without = &p[..p.len() - 1];
        // `C:` means "the current directory on C:", not the root.
        if without.len() == 2 && without.ends_with(':') {
            break;
        }
        p.pop();
    }
    p
}

/// `path` cleaned and ending in exactly one backslash, as the volume calls
/// require.
pub fn with_trailing_backslash(path: &str) -> String {
    let mut p = clean_path(path);
    if !p.ends_with('\\') {
        p.push('\\');
    }
    p
}

/// Splits a layer folder into containerd's `(home, id)`: the parent with its
/// trailing separator, and the last name.
pub fn split_layer(source: &str) -> Result<(String, String), MountError> {
    let clean = clean_path(source);
    let invalid = |reason| {
        MountError::new(
            Op::Mount,
            source,
            Cause::InvalidSource {
                source_path: source.to_string(),
                reason,
            },
        )
    };
    let cut = clean
        .rfind(is_sep)
        .ok_or_else(|| invalid("a layer must be a folder path with a parent"))?;
    let (home, id) = clean.split_at(cut + 1);
    if id.is_empty() || id.ends_with(':') {
        return Err(invalid("a layer must be a folder path with a parent"));
    }
    Ok((home.to_string(), id.to_string()))
}

/// The parent layer folders in the mount's `parentLayerPaths=` option
/// (the last such option wins), or none.
pub fn parent_layer_paths(m: &Mount) -> Result<Vec<String>, MountError> {
    let mut parents = Vec::new();
    for option in &m.options {
        if let Some(json) = option.strip_prefix(PARENT_LAYER_PATHS) {
            parents = serde_json::from_str::<Vec<String>>(json).map_err(|e| {
                MountError::new(
                    Op::ParseOptions,
                    m.source.as_str(),
                    Cause::InvalidOption {
                        option: option.clone(),
                        reason: format!("not a JSON list of strings: {e}"),
                    },
                )
            })?;
        }
    }
    Ok(parents)
}

/// The target as a `&str`, which Windows paths we accept always are.
pub fn target_str(target: &Path) -> Result<&str, MountError> {
    target
        .to_str()
        .ok_or_else(|| MountError::new(Op::Mount, target, Cause::InvalidTarget))
}

/// Mounts `m` on `target` through `host`.
///
/// # Errors
///
/// See the module documentation: the step that failed, after undoing the
/// ones before it.
pub fn mount_with<H: WindowsHost + ?Sized>(
    host: &H,
    m: &Mount,
    target: &str,
) -> Result<(), MountError> {
    match m.kind.as_str() {
        "bind" => bind(host, m, target),
        WINDOWS_LAYER => mount_layer(host, m, target),
        other => Err(MountError::new(
            Op::Mount,
            target,
            Cause::UnsupportedKind(other.to_string()),
        )),
    }
}

/// Mounts every entry of `mounts` on `target`; on failure unmounts those
/// already mounted, newest first, and returns the first error.
///
/// # Errors
///
/// The first failure.
pub fn mount_all_with<H: WindowsHost + ?Sized>(
    host: &H,
    mounts: &[Mount],
    target: &str,
) -> Result<(), MountError> {
    for (done, m) in mounts.iter().enumerate() {
        if let Err(e) = mount_with(host, m, target) {
            for _ in 0..done {
                if let Err(undo) = unmount_with(host, target) {
                    log::warn!("mount_all: undoing an earlier mount failed: {undo}");
                }
            }
            return Err(e);
        }
    }
    Ok(())
}

fn bind<H: WindowsHost + ?Sized>(host: &H, m: &Mount, target: &str) -> Result<(), MountError> {
    if m.read_only() {
        // Windows has no read-only directory link; mounting it writable
        // would silently break the caller's isolation.
        return Err(MountError::new(
            Op::Mount,
            target,
            Cause::NotImplementedOnWindows("a read-only bind mount"),
        ));
    }
    let t = clean_path(target);
    host.remove_dir(&t)
        .map_err(|e| MountError::new(Op::RemoveTargetDir, t.as_str(), e))?;
    if let Err(e) = host.create_dir_symlink(&t, &clean_path(&m.source)) {
        if let Err(undo) = host.create_dir(&t) {
            log::warn!("bind: restoring {t} after a failed link: {undo}");
        }
        return Err(MountError::new(Op::CreateLink, t.as_str(), e));
    }
    Ok(())
}

/// A step of `mount_layer` that has been done and would have to be undone.
#[derive(Clone, Copy, Debug)]
enum Done {
    Activated,
    Prepared,
    VolumeMounted,
}

fn mount_layer<H: WindowsHost + ?Sized>(
    host: &H,
    m: &Mount,
    target: &str,
) -> Result<(), MountError> {
    // Everything that can be checked without the host is checked first, so a
    // bad request makes no host call at all.
    let parents = parent_layer_paths(m)?;
    let (home, id) = split_layer(&m.source)?;
    let target = clean_path(target);
    let mount_point = with_trailing_backslash(&target);

    let mut done: Vec<Done> = Vec::with_capacity(3);
    let result = (|| {
        let src = m.source.as_str();
        host.activate_layer(&home, &id)
            .map_err(|e| MountError::new(Op::ActivateLayer, src, e))?;
        done.push(Done::Activated);

        host.prepare_layer(&home, &id, &parents)
            .map_err(|e| MountError::new(Op::PrepareLayer, src, e))?;
        done.push(Done::Prepared);

        let volume = host
            .layer_mount_path(&home, &id)
            .map_err(|e| MountError::new(Op::GetLayerMountPath, src, e))?;
        if !volume.starts_with(VOLUME_PREFIX) {
            return Err(MountError::new(
                Op::SetVolumeMountPoint,
                target.as_str(),
                Cause::NotAVolume(volume),
            ));
        }
        let volume = with_trailing_backslash(&volume);

        host.set_volume_mount_point(&mount_point, &volume)
            .map_err(|e| MountError::new(Op::SetVolumeMountPoint, target.as_str(), e))?;
        done.push(Done::VolumeMounted);

        host.write_stream(&target, SOURCE_STREAM, m.source.as_bytes())
            .map_err(|e| MountError::new(Op::RecordSource, target.as_str(), e))?;
        Ok(())
    })();

    if result.is_err() {
        for step in done.iter().rev() {
            let undone = match step {
                Done::VolumeMounted => host.delete_volume_mount_point(&mount_point),
                Done::Prepared => host.unprepare_layer(&home, &id),
                Done::Activated => host.deactivate_layer(&home, &id),
            };
            if let Err(e) = undone {
                log::warn!(
                    "windows-layer mount of {}: undoing {step:?} failed: {e}",
                    m.source
                );
            }
        }
    }
    result
}

/// Unmounts whatever `bind` or `windows-layer` mounted at `target`. A target
/// that is neither (including one that does not exist) is left alone.
///
/// # Errors
///
/// The step that failed. Unlike mounting, unmounting is not rolled back:
/// once the volume mount point is gone, so is the record of its layer, and
/// the error names the layer step left to finish by hand.
pub fn unmount_with<H: WindowsHost + ?Sized>(host: &H, target: &str) -> Result<(), MountError> {
    let target = clean_path(target);
    let kind = host
        .path_kind(&target)
        .map_err(|e| MountError::new(Op::Inspect, target.as_str(), e))?;
    match kind {
        PathKind::DirSymlink => {
            host.remove_dir_symlink(&target)
                .map_err(|e| MountError::new(Op::RemoveLink, target.as_str(), e))?;
            host.create_dir(&target)
                .map_err(|e| MountError::new(Op::RestoreTargetDir, target.as_str(), e))
        }
        PathKind::VolumeMountPoint => unmount_layer(host, &target),
        // Not a mount: as Linux's unmount-all treats EINVAL, nothing to do.
        PathKind::Missing | PathKind::Directory | PathKind::Other => Ok(()),
    }
}

fn unmount_layer<H: WindowsHost + ?Sized>(host: &H, target: &str) -> Result<(), MountError> {
    let record = host
        .read_stream(target, SOURCE_STREAM)
        .map_err(|e| MountError::new(Op::ReadSource, target, e))?
        .ok_or_else(|| {
            MountError::new(
                Op::ReadSource,
                target,
                Cause::MissingSourceRecord {
                    stream: SOURCE_STREAM,
                },
            )
        })?;
    let source = String::from_utf8(record).map_err(|_| {
        MountError::new(
            Op::ReadSource,
            target,
            Cause::CorruptSourceRecord {
                stream: SOURCE_STREAM,
            },
        )
    })?;
    // Checked before the mount point goes, while a bad record can still be
    // reported with nothing changed.
    let (home, id) = split_layer(&source)?;

    host.delete_volume_mount_point(&with_trailing_backslash(target))
        .map_err(|e| MountError::new(Op::DeleteVolumeMountPoint, target, e))?;
    host.unprepare_layer(&home, &id)
        .map_err(|e| MountError::new(Op::UnprepareLayer, source.as_str(), e))?;
    host.deactivate_layer(&home, &id)
        .map_err(|e| MountError::new(Op::DeactivateLayer, source.as_str(), e))
}

/// [`unmount_with`], except that an empty path is not looked at at all.
/// Windows does not stack mounts on one directory, so one unmount is all.
///
/// # Errors
///
/// As [`unmount_with`].
pub fn unmount_all_with<H: WindowsHost + ?Sized>(host: &H, target: &str) -> Result<(), MountError> {
    if target.is_empty() {
        return Ok(());
    }
    unmount_with(host, target)
}

impl fmt::Display for PathKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PathKind::Missing => "nothing",
            PathKind::Directory => "a directory",
            PathKind::DirSymlink => "a directory symbolic link",
            PathKind::VolumeMountPoint => "a volume mount point",
            PathKind::Other => "something else",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_path_keeps_roots() {
        assert_eq!(clean_path(r"C:\a\b\\"), r"C:\a\b");
        assert_eq!(clean_path("C:/a/b/"), r"C:\a\b");
        assert_eq!(clean_path(r"C:\"), r"C:\");
        assert_eq!(clean_path(r"\"), r"\");
        assert_eq!(clean_path(""), "");
        assert_eq!(with_trailing_backslash(r"C:\mnt"), r"C:\mnt\");
        assert_eq!(with_trailing_backslash(r"C:\mnt\\"), r"C:\mnt\");
        assert_eq!(
            with_trailing_backslash(r"\\?\Volume{1234}"),
            r"\\?\Volume{1234}\"
        );
    }

    #[test]
    fn split_layer_like_containerd() {
        assert_eq!(
            split_layer(r"C:\layers\abc").unwrap(),
            (r"C:\layers\".to_string(), "abc".to_string())
        );
        assert_eq!(
            split_layer(r"C:\layers\abc\").unwrap(),
            (r"C:\layers\".to_string(), "abc".to_string())
        );
        assert!(split_layer("abc").is_err());
        assert!(split_layer(r"C:\").is_err());
        assert!(split_layer("").is_err());
    }

    #[test]
    fn parent_paths_bad_json_is_an_option_error() {
        let m = Mount {
            kind: WINDOWS_LAYER.into(),
            source: r"C:\l\1".into(),
            options: vec!["parentLayerPaths=[1,".into()],
        };
        let e = parent_layer_paths(&m).unwrap_err();
        assert_eq!(e.op, Op::ParseOptions);
        assert!(matches!(e.cause, Cause::InvalidOption { .. }));
        let none = Mount {
            options: vec![],
            ..m
        };
        assert!(parent_layer_paths(&none).unwrap().is_empty());
    }

    #[test]
    fn hresult_of_win32_facility_becomes_the_code() {
        assert_eq!(
            WinError::from_hresult(0x8007_0002_u32 as i32),
            WinError::win32(codes::FILE_NOT_FOUND)
        );
        assert_eq!(
            WinError::from_hresult(0x8000_4001_u32 as i32),
            WinError::HResult { hr: 0x8000_4001 }
        );
        assert!(WinError::win32(2)
            .to_string()
            .contains("ERROR_FILE_NOT_FOUND"));
    }
}
