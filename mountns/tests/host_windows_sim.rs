//! The Windows backend's orchestration, run against the simulated Windows
//! host on every platform.

use tessera_mountns::host::windows::sim::{SimHost, SimNodeKind};
use tessera_mountns::host::windows::{
    mount_all_with, mount_with, unmount_all_with, unmount_with, WinError, SOURCE_STREAM,
};
use tessera_mountns::host::{Cause, Mount, Op};

const BASE: &str = r"C:\layers\1";
const MID: &str = r"C:\layers\2";
const SCRATCH: &str = r"C:\layers\3";
const TARGET: &str = r"C:\run\rootfs";

/// A host with a three-layer stack, an empty target and a bind source.
fn host() -> SimHost {
    let h = SimHost::new();
    h.add_layer(BASE);
    h.add_layer(MID);
    h.add_layer(SCRATCH);
    h.add_file(r"C:\layers\1\Files\hello.txt");
    h.add_dir(TARGET);
    h.add_file(r"C:\data\readme.txt");
    h
}

fn scratch_mount() -> Mount {
    Mount::windows_layer(SCRATCH, &[MID.to_string(), BASE.to_string()])
}

#[test]
fn windows_layer_mounts_and_unmounts_cleanly() {
    let h = host();
    let before = h.state();

    mount_with(&h, &scratch_mount(), TARGET).unwrap();
    assert_eq!(
        h.call_log(),
        vec![
            "ActivateLayer",
            "PrepareLayer",
            "GetLayerMountPath",
            "SetVolumeMountPointW",
            "WriteFile(stream)"
        ]
    );
    let during = h.state();
    let layer = &during.layers[SCRATCH];
    assert_eq!(layer.activations, 1);
    assert_eq!(
        layer.prepared_over.as_deref(),
        Some(&[MID.to_string(), BASE.to_string()][..])
    );
    let volume = layer.volume.clone().unwrap();
    assert!(volume.starts_with(r"\\?\Volume{"), "{volume}");
    assert_eq!(
        h.node(TARGET).unwrap().kind,
        SimNodeKind::VolumeMountPoint(volume.clone())
    );
    assert_eq!(
        during.volumes[&volume].root_streams[SOURCE_STREAM],
        SCRATCH.as_bytes()
    );

    unmount_with(&h, TARGET).unwrap();
    assert_eq!(h.state(), before);
}

#[test]
fn windows_layer_failure_at_every_step_leaves_the_host_unchanged() {
    let expected_ops = [
        Op::ActivateLayer,
        Op::PrepareLayer,
        Op::GetLayerMountPath,
        Op::SetVolumeMountPoint,
        Op::RecordSource,
    ];
    let mut n = 1;
    loop {
        let h = host();
        let before = h.state();
        h.fail_call(n);
        match mount_with(&h, &scratch_mount(), TARGET) {
            Ok(()) => break,
            Err(e) => {
                assert_eq!(
                    h.state(),
                    before,
                    "failure at host call {n} left the host changed ({e})"
                );
                assert_eq!(e.op, expected_ops[(n - 1) as usize], "{e}");
                assert!(
                    matches!(e.cause, Cause::Windows(WinError::Injected { call, .. }) if call == n),
                    "{e}"
                );
            }
        }
        n += 1;
        assert!(n <= 50, "mount never succeeded");
    }
    // Every step was made to fail once before the run that succeeded.
    assert_eq!(n as usize, expected_ops.len() + 1);
}

#[test]
fn undo_runs_in_reverse_order() {
    let h = host();
    h.fail_call(5);
    let e = mount_with(&h, &scratch_mount(), TARGET).unwrap_err();
    assert_eq!(e.op, Op::RecordSource);
    assert_eq!(
        h.call_log()[5..],
        [
            "DeleteVolumeMountPointW",
            "UnprepareLayer",
            "DeactivateLayer"
        ]
    );
}

#[test]
fn a_failing_undo_does_not_hide_the_first_error() {
    let h = host();
    // Fail the stream write, then the first undo step as well.
    h.fail_call(5);
    h.fail_call(6);
    let e = mount_with(&h, &scratch_mount(), TARGET).unwrap_err();
    assert_eq!(e.op, Op::RecordSource);
    assert!(matches!(
        e.cause,
        Cause::Windows(WinError::Injected { call: 5, .. })
    ));
}

#[test]
fn every_layer_of_a_stack_can_be_mounted_in_turn() {
    // A base layer has no parents; its option is an empty list.
    let h = host();
    let before = h.state();
    mount_with(&h, &Mount::windows_layer(BASE, &[]), TARGET).unwrap();
    assert_eq!(h.state().layers[BASE].prepared_over, Some(vec![]));
    unmount_all_with(&h, TARGET).unwrap();
    assert_eq!(h.state(), before);
}

#[test]
fn an_unknown_parent_fails_at_prepare_and_is_undone() {
    let h = host();
    let before = h.state();
    let m = Mount::windows_layer(SCRATCH, &[r"C:\layers\nope".to_string()]);
    let e = mount_with(&h, &m, TARGET).unwrap_err();
    assert_eq!(e.op, Op::PrepareLayer);
    assert_eq!(e.path.to_str(), Some(SCRATCH));
    assert_eq!(h.state(), before);
}

#[test]
fn a_volume_path_without_the_volume_prefix_is_refused() {
    let h = host();
    h.set_layer_mount_path(SCRATCH, SCRATCH);
    let before = h.state();
    let e = mount_with(&h, &scratch_mount(), TARGET).unwrap_err();
    assert_eq!(e.cause, Cause::NotAVolume(SCRATCH.to_string()));
    assert!(e.to_string().contains(r"\\?\Volume{"), "{e}");
    assert_eq!(h.state(), before);
    assert!(!h.call_log().contains(&"SetVolumeMountPointW"));
}

#[test]
fn bad_parent_json_makes_no_host_call() {
    let h = host();
    let m = Mount {
        kind: "windows-layer".into(),
        source: SCRATCH.into(),
        options: vec!["parentLayerPaths=[\"C:\\\\x\"".into()],
    };
    let e = mount_with(&h, &m, TARGET).unwrap_err();
    assert_eq!(e.op, Op::ParseOptions);
    assert_eq!(h.calls(), 0);
}

#[test]
fn bind_mounts_and_unmounts_cleanly() {
    let h = host();
    let before = h.state();
    mount_with(&h, &Mount::bind(r"C:\data", false), TARGET).unwrap();
    assert_eq!(
        h.node(TARGET).unwrap().kind,
        SimNodeKind::DirSymlink(r"C:\data".into())
    );
    unmount_with(&h, TARGET).unwrap();
    assert_eq!(h.state(), before);
    // The source was never touched.
    assert!(h.node(r"C:\data\readme.txt").is_some());
}

#[test]
fn bind_failure_at_every_step_leaves_the_host_unchanged() {
    let mut n = 1;
    loop {
        let h = host();
        let before = h.state();
        h.fail_call(n);
        match mount_with(&h, &Mount::bind(r"C:\data", false), TARGET) {
            Ok(()) => break,
            Err(e) => assert_eq!(h.state(), before, "failure at call {n}: {e}"),
        }
        n += 1;
        assert!(n <= 10, "bind never succeeded");
    }
    assert_eq!(n, 3, "a bind is two host calls");
}

#[test]
fn bind_onto_a_non_empty_target_fails_cleanly() {
    let h = host();
    h.add_file(r"C:\run\rootfs\stray");
    let before = h.state();
    let e = mount_with(&h, &Mount::bind(r"C:\data", false), TARGET).unwrap_err();
    assert_eq!(e.op, Op::RemoveTargetDir);
    assert_eq!(h.state(), before);
}

#[test]
fn read_only_bind_is_refused() {
    let h = host();
    let e = mount_with(&h, &Mount::bind(r"C:\data", true), TARGET).unwrap_err();
    assert_eq!(
        e.cause,
        Cause::NotImplementedOnWindows("a read-only bind mount")
    );
    assert!(e.to_string().contains("not implemented on Windows"), "{e}");
    assert_eq!(h.calls(), 0);
}

#[test]
fn unknown_kind_is_refused() {
    let h = host();
    let m = Mount {
        kind: "overlay".into(),
        ..Mount::default()
    };
    let e = mount_with(&h, &m, TARGET).unwrap_err();
    assert_eq!(e.cause, Cause::UnsupportedKind("overlay".into()));
    assert_eq!(h.calls(), 0);
}

#[test]
fn unmount_of_a_non_mount_is_not_an_error() {
    let h = host();
    let before = h.state();
    unmount_with(&h, TARGET).unwrap(); // a plain directory
    unmount_with(&h, r"C:\nowhere").unwrap(); // nothing at all
    unmount_with(&h, r"C:\data\readme.txt").unwrap(); // a file
    assert_eq!(h.state(), before);
}

#[test]
fn unmount_all_of_an_empty_path_is_not_an_error() {
    let h = host();
    unmount_all_with(&h, "").unwrap();
    assert_eq!(h.calls(), 0);
}

#[test]
fn unmount_without_the_source_stream_is_a_clear_error() {
    let h = host();
    mount_with(&h, &scratch_mount(), TARGET).unwrap();
    h.remove_stream(TARGET, SOURCE_STREAM);
    let during = h.state();
    let e = unmount_with(&h, TARGET).unwrap_err();
    assert_eq!(e.op, Op::ReadSource);
    assert_eq!(
        e.cause,
        Cause::MissingSourceRecord {
            stream: SOURCE_STREAM
        }
    );
    let text = e.to_string();
    assert!(text.contains("containerd.io-source"), "{text}");
    assert!(text.contains(TARGET), "{text}");
    // Nothing was released on a guess.
    assert_eq!(h.state(), during);
}

#[test]
fn unmount_with_a_corrupt_source_record_changes_nothing() {
    let h = host();
    mount_with(&h, &scratch_mount(), TARGET).unwrap();
    h.put_stream(TARGET, SOURCE_STREAM, &[0xff, 0xfe]);
    let during = h.state();
    let e = unmount_with(&h, TARGET).unwrap_err();
    assert!(matches!(e.cause, Cause::CorruptSourceRecord { .. }), "{e}");
    assert_eq!(h.state(), during);
}

#[test]
fn mount_all_that_fails_half_way_unmounts_what_it_mounted() {
    let h = host();
    let before = h.state();
    // The second target cannot take a bind: the first mount made it a
    // volume mount point.
    let mounts = [scratch_mount(), Mount::bind(r"C:\data", false)];
    let e = mount_all_with(&h, &mounts, TARGET).unwrap_err();
    assert_eq!(e.op, Op::RemoveTargetDir);
    assert_eq!(h.state(), before);
}

#[test]
fn mount_all_mounts_everything() {
    let h = host();
    h.add_dir(r"C:\run\other");
    mount_all_with(&h, &[scratch_mount()], TARGET).unwrap();
    mount_all_with(&h, &[Mount::bind(r"C:\data", false)], r"C:\run\other").unwrap();
    assert!(matches!(
        h.node(TARGET).unwrap().kind,
        SimNodeKind::VolumeMountPoint(_)
    ));
    assert!(matches!(
        h.node(r"C:\run\other").unwrap().kind,
        SimNodeKind::DirSymlink(_)
    ));
}

#[test]
fn forward_slashes_and_trailing_separators_are_accepted() {
    let h = host();
    let before = h.state();
    mount_with(&h, &scratch_mount(), "C:/run/rootfs/").unwrap();
    unmount_with(&h, r"C:\run\rootfs\").unwrap();
    assert_eq!(h.state(), before);
}
