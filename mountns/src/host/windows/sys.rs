//! The real Windows host: the system-call edge of the Windows backend.
//!
//! Volume mount points, symbolic links and file attributes come from
//! `windows-sys` (kernel32). The legacy container-layer functions live in
//! `vmcompute.dll`, which exists only where the Windows Containers feature is
//! installed; it is loaded from System32 on first use with `LoadLibraryExW`
//! and its functions found with `GetProcAddress`, so a host without the
//! feature still starts and gets [`WinError::LibraryUnavailable`] from the
//! first layer call. (A `raw-dylib` import would make the whole process fail
//! to start there, and needs `dlltool` to cross-build.)
//!
//! Directories and alternate data streams go through `std::fs`, which on
//! Windows is a thin layer over the same calls (`path:stream` names a stream).

use std::ffi::c_void;
use std::sync::OnceLock;

use windows_sys::Win32::Foundation::{GetLastError, BOOL, FALSE, HANDLE, INVALID_HANDLE_VALUE};
use windows_sys::Win32::Storage::FileSystem::{
    CreateSymbolicLinkW, DeleteVolumeMountPointW, FindClose, FindFirstFileW, GetFileAttributesW,
    GetVolumeNameForVolumeMountPointW, SetVolumeMountPointW, FILE_ATTRIBUTE_DIRECTORY,
    FILE_ATTRIBUTE_REPARSE_POINT, INVALID_FILE_ATTRIBUTES,
    SYMBOLIC_LINK_FLAG_ALLOW_UNPRIVILEGED_CREATE, SYMBOLIC_LINK_FLAG_DIRECTORY, WIN32_FIND_DATAW,
};
use windows_sys::Win32::System::LibraryLoader::{
    GetProcAddress, LoadLibraryExW, LOAD_LIBRARY_SEARCH_SYSTEM32,
};

use super::{codes, with_trailing_backslash, PathKind, WinError, WindowsHost};

/// `IO_REPARSE_TAG_SYMLINK`, kept here to avoid a `windows-sys` feature for
/// one constant.
const IO_REPARSE_TAG_SYMLINK: u32 = 0xA000_000C;
/// `IO_REPARSE_TAG_MOUNT_POINT` (junctions and volume mount points).
const IO_REPARSE_TAG_MOUNT_POINT: u32 = 0xA000_0003;

/// The most UTF-16 units a path from `GetLayerMountPath` may have; a larger
/// length is treated as a broken answer rather than allocated.
const MAX_PATH_UNITS: usize = 32 * 1024;

const VMCOMPUTE: &str = "vmcompute.dll";

/// The host this process runs on.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemHost;

/// `DriverInfo` of the legacy layer API: a `GraphDriverType` and a home
/// folder. containerd passes flavour 0 with the layer's parent folder as home.
#[repr(C)]
struct DriverInfo {
    flavour: i32,
    home_dir: *const u16,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct Guid {
    data1: u32,
    data2: u16,
    data3: u16,
    data4: [u8; 8],
}

/// `WC_LAYER_DESCRIPTOR`: a parent layer's id, flags and folder.
#[repr(C)]
struct LayerDescriptor {
    layer_id: Guid,
    flags: u32,
    path: *const u16,
}

type LayerFn = unsafe extern "system" fn(*const DriverInfo, *const u16) -> i32;
type PrepareFn =
    unsafe extern "system" fn(*const DriverInfo, *const u16, *const LayerDescriptor, u32) -> i32;
type MountPathFn =
    unsafe extern "system" fn(*const DriverInfo, *const u16, *mut usize, *mut u16) -> i32;
type NameToGuidFn = unsafe extern "system" fn(*const u16, *mut Guid) -> i32;

struct Vmcompute {
    activate: Result<LayerFn, WinError>,
    prepare: Result<PrepareFn, WinError>,
    mount_path: Result<MountPathFn, WinError>,
    unprepare: Result<LayerFn, WinError>,
    deactivate: Result<LayerFn, WinError>,
    name_to_guid: Result<NameToGuidFn, WinError>,
}

/// The loaded library, or why it could not be loaded. Loaded once; the
/// library then stays loaded for the life of the process.
static LIB: OnceLock<Result<Vmcompute, WinError>> = OnceLock::new();

fn wide(s: &str) -> Result<Vec<u16>, WinError> {
    if s.contains('\0') {
        return Err(WinError::InteriorNul(s.to_string()));
    }
    Ok(s.encode_utf16().chain(std::iter::once(0)).collect())
}

fn last_error() -> WinError {
    // SAFETY: GetLastError only reads the calling thread's last-error value.
    WinError::win32(unsafe { GetLastError() })
}

fn check_bool(ok: BOOL) -> Result<(), WinError> {
    if ok == FALSE {
        Err(last_error())
    } else {
        Ok(())
    }
}

fn check_hr(hr: i32) -> Result<(), WinError> {
    if hr < 0 {
        Err(WinError::from_hresult(hr))
    } else {
        Ok(())
    }
}

fn io_error(e: std::io::Error) -> WinError {
    match e.raw_os_error() {
        Some(code) => WinError::win32(code as u32),
        None => WinError::win32(codes::GEN_FAILURE),
    }
}

fn load() -> Result<Vmcompute, WinError> {
    let name = wide(VMCOMPUTE)?;
    // SAFETY: `name` is a NUL-terminated UTF-16 string that outlives the
    // call; a null file handle is what the API requires; the flag restricts
    // the search to System32 so a planted DLL elsewhere is not picked up.
    let module = unsafe {
        LoadLibraryExW(
            name.as_ptr(),
            std::ptr::null_mut::<c_void>() as HANDLE,
            LOAD_LIBRARY_SEARCH_SYSTEM32,
        )
    };
    if module.is_null() {
        // SAFETY: as in `last_error`.
        let code = unsafe { GetLastError() };
        return Err(WinError::LibraryUnavailable {
            library: VMCOMPUTE,
            code,
        });
    }
    let find = |symbol: &'static [u8], function: &'static str| {
        // SAFETY: `module` is a loaded module handle that is never freed, and
        // `symbol` is a NUL-terminated ASCII name.
        let proc_addr = unsafe { GetProcAddress(module, symbol.as_ptr()) };
        proc_addr.ok_or(WinError::MissingFunction {
            library: VMCOMPUTE,
            function,
        })
    };
    // SAFETY (all transmutes below): each function pointer comes from
    // vmcompute.dll's export of that name, whose documented signature
    // (the legacy layer API that hcsshim also binds) is the target type; the
    // pointers stay valid because the module is never unloaded.
    Ok(Vmcompute {
        activate: find(b"ActivateLayer\0", "ActivateLayer").map(|f| {
            // SAFETY: see above.
            unsafe { std::mem::transmute::<unsafe extern "system" fn() -> isize, LayerFn>(f) }
        }),
        prepare: find(b"PrepareLayer\0", "PrepareLayer").map(|f| {
            // SAFETY: see above.
            unsafe { std::mem::transmute::<unsafe extern "system" fn() -> isize, PrepareFn>(f) }
        }),
        mount_path: find(b"GetLayerMountPath\0", "GetLayerMountPath").map(|f| {
            // SAFETY: see above.
            unsafe { std::mem::transmute::<unsafe extern "system" fn() -> isize, MountPathFn>(f) }
        }),
        unprepare: find(b"UnprepareLayer\0", "UnprepareLayer").map(|f| {
            // SAFETY: see above.
            unsafe { std::mem::transmute::<unsafe extern "system" fn() -> isize, LayerFn>(f) }
        }),
        deactivate: find(b"DeactivateLayer\0", "DeactivateLayer").map(|f| {
            // SAFETY: see above.
            unsafe { std::mem::transmute::<unsafe extern "system" fn() -> isize, LayerFn>(f) }
        }),
        name_to_guid: find(b"NameToGuid\0", "NameToGuid").map(|f| {
            // SAFETY: see above.
            unsafe { std::mem::transmute::<unsafe extern "system" fn() -> isize, NameToGuidFn>(f) }
        }),
    })
}

fn lib() -> Result<&'static Vmcompute, WinError> {
    LIB.get_or_init(load).as_ref().map_err(Clone::clone)
}

/// Calls one of the `(DriverInfo, id)` layer functions.
fn layer_call(f: &Result<LayerFn, WinError>, home: &str, id: &str) -> Result<(), WinError> {
    let f = f.as_ref().map_err(Clone::clone)?;
    let home = wide(home)?;
    let id = wide(id)?;
    let info = DriverInfo {
        flavour: 0,
        home_dir: home.as_ptr(),
    };
    // SAFETY: `info` and the two NUL-terminated strings live until the call
    // returns; the function only reads them.
    check_hr(unsafe { f(&info, id.as_ptr()) })
}

/// The last name of a layer folder, which is what the layer service hashes
/// into the layer's id.
fn base_name(path: &str) -> &str {
    let trimmed = path.trim_end_matches(['\\', '/']);
    match trimmed.rfind(['\\', '/']) {
        Some(i) => &trimmed[i + 1..],
        None => trimmed,
    }
}

impl WindowsHost for SystemHost {
    fn activate_layer(&self, home: &str, id: &str) -> Result<(), WinError> {
        layer_call(&lib()?.activate, home, id)
    }

    fn prepare_layer(&self, home: &str, id: &str, parents: &[String]) -> Result<(), WinError> {
        let lib = lib()?;
        let prepare = lib.prepare.as_ref().map_err(Clone::clone)?;
        let name_to_guid = lib.name_to_guid.as_ref().map_err(Clone::clone)?;
        // The descriptors point into `paths`, which must outlive the call.
        let paths = parents
            .iter()
            .map(|p| wide(p))
            .collect::<Result<Vec<_>, _>>()?;
        let mut descriptors = Vec::with_capacity(parents.len());
        for (parent, path) in parents.iter().zip(&paths) {
            let name = wide(base_name(parent))?;
            let mut guid = Guid::default();
            // SAFETY: `name` is NUL-terminated and `guid` is a writable GUID,
            // both live across the call.
            check_hr(unsafe { name_to_guid(name.as_ptr(), &mut guid) })?;
            descriptors.push(LayerDescriptor {
                layer_id: guid,
                flags: 0,
                path: path.as_ptr(),
            });
        }
        let count = u32::try_from(descriptors.len())
            .map_err(|_| WinError::win32(codes::INVALID_PARAMETER))?;
        let home = wide(home)?;
        let id = wide(id)?;
        let info = DriverInfo {
            flavour: 0,
            home_dir: home.as_ptr(),
        };
        let first = if descriptors.is_empty() {
            std::ptr::null()
        } else {
            descriptors.as_ptr()
        };
        // SAFETY: `info`, `id`, the descriptor array of `count` entries and
        // the strings they point to all live until the call returns.
        check_hr(unsafe { prepare(&info, id.as_ptr(), first, count) })
    }

    fn layer_mount_path(&self, home: &str, id: &str) -> Result<String, WinError> {
        let f = lib()?.mount_path.as_ref().map_err(Clone::clone)?;
        let home = wide(home)?;
        let id = wide(id)?;
        let info = DriverInfo {
            flavour: 0,
            home_dir: home.as_ptr(),
        };
        let mut len: usize = 0;
        // SAFETY: a null buffer asks for the length only, written to `len`.
        check_hr(unsafe { f(&info, id.as_ptr(), &mut len, std::ptr::null_mut()) })?;
        if len == 0 {
            return Ok(String::new());
        }
        if len > MAX_PATH_UNITS {
            return Err(WinError::win32(codes::INVALID_PARAMETER));
        }
        let mut buf = vec![0u16; len];
        // SAFETY: `buf` has room for the `len` units the first call asked for.
        check_hr(unsafe { f(&info, id.as_ptr(), &mut len, buf.as_mut_ptr()) })?;
        let end = buf.iter().position(|&c| c == 0).unwrap_or(buf.len());
        Ok(String::from_utf16_lossy(&buf[..end]))
    }

    fn unprepare_layer(&self, home: &str, id: &str) -> Result<(), WinError> {
        layer_call(&lib()?.unprepare, home, id)
    }

    fn deactivate_layer(&self, home: &str, id: &str) -> Result<(), WinError> {
        layer_call(&lib()?.deactivate, home, id)
    }

    fn set_volume_mount_point(&self, mount_point: &str, volume: &str) -> Result<(), WinError> {
        let mp = wide(mount_point)?;
        let vol = wide(volume)?;
        // SAFETY: both strings are NUL-terminated and live across the call.
        check_bool(unsafe { SetVolumeMountPointW(mp.as_ptr(), vol.as_ptr()) })
    }

    fn delete_volume_mount_point(&self, mount_point: &str) -> Result<(), WinError> {
        let mp = wide(mount_point)?;
        // SAFETY: `mp` is NUL-terminated and lives across the call.
        check_bool(unsafe { DeleteVolumeMountPointW(mp.as_ptr()) })
    }

    fn path_kind(&self, path: &str) -> Result<PathKind, WinError> {
        // FindFirstFileW would treat wildcards as a pattern; such a name
        // cannot be a mount we made.
        let body = path.strip_prefix(r"\\?\").unwrap_or(path);
        if path.is_empty() || body.contains(['*', '?']) {
            return Ok(PathKind::Missing);
        }
        let w = wide(path)?;
        // SAFETY: `w` is NUL-terminated and lives across the call.
        let attrs = unsafe { GetFileAttributesW(w.as_ptr()) };
        if attrs == INVALID_FILE_ATTRIBUTES {
            let e = last_error();
            return match e.code() {
                Some(codes::FILE_NOT_FOUND | codes::PATH_NOT_FOUND) => Ok(PathKind::Missing),
                _ => Err(e),
            };
        }
        if attrs & FILE_ATTRIBUTE_REPARSE_POINT == 0 {
            return Ok(if attrs & FILE_ATTRIBUTE_DIRECTORY != 0 {
                PathKind::Directory
            } else {
                PathKind::Other
            });
        }
        // The reparse tag tells a symbolic link from a mount point; only the
        // find-data structure reports it without opening the file.
        // SAFETY: WIN32_FIND_DATAW is plain data; all-zero is a valid value.
        let mut data: WIN32_FIND_DATAW = unsafe { std::mem::zeroed() };
        // SAFETY: `w` is NUL-terminated; `data` is writable and lives across
        // the call.
        let find = unsafe { FindFirstFileW(w.as_ptr(), &mut data) };
        if find == INVALID_HANDLE_VALUE {
            return Err(last_error());
        }
        // SAFETY: `find` is the valid search handle just returned.
        unsafe { FindClose(find) };
        let is_dir = data.dwFileAttributes & FILE_ATTRIBUTE_DIRECTORY != 0;
        match data.dwReserved0 {
            IO_REPARSE_TAG_SYMLINK if is_dir => Ok(PathKind::DirSymlink),
            IO_REPARSE_TAG_MOUNT_POINT => {
                // Junctions carry the same tag; only a volume mount point
                // has a volume name.
                let mp = wide(&with_trailing_backslash(path))?;
                let mut name = [0u16; 64];
                // SAFETY: `mp` is NUL-terminated; `name` has the stated
                // capacity (a volume GUID path is 49 units with its NUL).
                let ok = unsafe {
                    GetVolumeNameForVolumeMountPointW(
                        mp.as_ptr(),
                        name.as_mut_ptr(),
                        name.len() as u32,
                    )
                };
                Ok(if ok == FALSE {
                    PathKind::Other
                } else {
                    PathKind::VolumeMountPoint
                })
            }
            _ => Ok(PathKind::Other),
        }
    }

    fn create_dir(&self, path: &str) -> Result<(), WinError> {
        std::fs::create_dir(path).map_err(io_error)
    }

    fn remove_dir(&self, path: &str) -> Result<(), WinError> {
        std::fs::remove_dir(path).map_err(io_error)
    }

    fn create_dir_symlink(&self, link: &str, target: &str) -> Result<(), WinError> {
        let l = wide(link)?;
        let t = wide(target)?;
        // SAFETY: both strings are NUL-terminated and live across the call.
        // The unprivileged flag lets it work in developer mode without admin
        // rights; older Windows rejects it, so retry without.
        let ok = unsafe {
            CreateSymbolicLinkW(
                l.as_ptr(),
                t.as_ptr(),
                SYMBOLIC_LINK_FLAG_DIRECTORY | SYMBOLIC_LINK_FLAG_ALLOW_UNPRIVILEGED_CREATE,
            )
        };
        if ok != 0 {
            return Ok(());
        }
        let first = last_error();
        if first.code() != Some(codes::INVALID_PARAMETER) {
            return Err(first);
        }
        // SAFETY: as above.
        let ok =
            unsafe { CreateSymbolicLinkW(l.as_ptr(), t.as_ptr(), SYMBOLIC_LINK_FLAG_DIRECTORY) };
        if ok != 0 {
            Ok(())
        } else {
            Err(last_error())
        }
    }

    fn remove_dir_symlink(&self, link: &str) -> Result<(), WinError> {
        // RemoveDirectoryW on a directory link removes the link, never the
        // directory it points to.
        std::fs::remove_dir(link).map_err(io_error)
    }

    fn read_stream(&self, path: &str, stream: &str) -> Result<Option<Vec<u8>>, WinError> {
        match std::fs::read(format!("{path}:{stream}")) {
            Ok(data) => Ok(Some(data)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_error(e)),
        }
    }

    fn write_stream(&self, path: &str, stream: &str, data: &[u8]) -> Result<(), WinError> {
        std::fs::write(format!("{path}:{stream}"), data).map_err(io_error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_name_is_last_component() {
        assert_eq!(base_name(r"C:\layers\abc"), "abc");
        assert_eq!(base_name(r"C:\layers\abc\"), "abc");
        assert_eq!(base_name("abc"), "abc");
    }

    #[test]
    fn wide_rejects_nul() {
        assert!(wide("a\0b").is_err());
        assert_eq!(wide("ab").unwrap(), vec![97, 98, 0]);
    }
}
