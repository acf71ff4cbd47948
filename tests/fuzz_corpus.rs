//! Replays every committed fuzz seed (`fuzz/corpus/<target>/`) and crash
//! regression (`fuzz/regressions/<target>/`) through the same functions the
//! fuzz targets call, so stable `cargo test` keeps them passing without
//! nightly or cargo-fuzz.

use std::path::{Path, PathBuf};

use uds_reactor::fuzzing;

/// The files of `fuzz/<kind>/<target>/`, sorted; none if it is missing.
fn inputs(kind: &str, target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz")
        .join(kind)
        .join(target);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.expect("read fuzz dir").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

/// Runs `target` on every seed and regression; returns how many ran.
fn replay(target: &str, run: fn(&[u8])) -> usize {
    let mut n = 0;
    for kind in ["corpus", "regressions"] {
        for path in inputs(kind, target) {
            let data = std::fs::read(&path).expect("read fuzz input");
            let result = std::panic::catch_unwind(|| run(&data));
            assert!(result.is_ok(), "{} fails", path.display());
            n += 1;
        }
    }
    n
}

#[test]
fn codec_seeds_and_regressions_pass() {
    assert!(
        replay("codec", fuzzing::codec) >= 4,
        "codec seeds are committed"
    );
}

#[test]
fn buffer_seeds_and_regressions_pass() {
    assert!(
        replay("buffer", fuzzing::buffer) >= 4,
        "buffer seeds are committed"
    );
}

#[test]
fn conn_seeds_and_regressions_pass() {
    assert!(
        replay("conn", fuzzing::conn) >= 4,
        "conn seeds are committed"
    );
}

#[test]
fn platform_seeds_and_regressions_pass() {
    assert!(
        replay("platform", fuzzing::platform) >= 4,
        "platform seeds are committed"
    );
}

#[test]
fn fds_seeds_and_regressions_pass() {
    assert!(replay("fds", fuzzing::fds) >= 4, "fds seeds are committed");
}

#[test]
fn empty_and_tiny_inputs_pass_every_target() {
    for data in [&b""[..], b"\0", b"\xff", b"\x01\x02\x03"] {
        fuzzing::codec(data);
        fuzzing::buffer(data);
        fuzzing::conn(data);
        fuzzing::platform(data);
        fuzzing::fds(data);
    }
}
