//! The command line's own usage errors against the real binary: what was
//! typed wrong is named in clap's style, the status is 2, nothing is bound.

mod common;

use std::ffi::OsStr;
use std::process::Command;

use common::{bin, exists, run_to_exit, TempDir};

/// Runs the binary with `args` and no systemd variables; returns the exit
/// status code and stderr.
fn run(args: &[&OsStr]) -> (Option<i32>, String) {
    let mut cmd = Command::new(bin());
    cmd.args(args)
        .env_remove("LISTEN_PID")
        .env_remove("LISTEN_FDS");
    let (status, stderr) = run_to_exit(&mut cmd);
    (status.code(), stderr)
}

#[test]
fn a_second_path_is_named_as_unexpected() {
    let dir = TempDir::new("cli-two");
    let (a, b) = (dir.path("a.sock"), dir.path("b.sock"));
    let (code, stderr) = run(&[a.as_os_str(), b.as_os_str()]);
    assert_eq!(code, Some(2), "{stderr}");
    let first = stderr.lines().next().unwrap_or_default();
    assert_eq!(
        first,
        format!("error: unexpected argument '{}' found", b.display()),
        "{stderr}"
    );
    assert!(stderr.contains("Usage: uds-reactor"), "{stderr}");
    assert!(!exists(&a) && !exists(&b));
}

#[test]
fn a_subcommand_after_a_path_is_named_as_one() {
    let dir = TempDir::new("cli-sub");
    let a = dir.path("a.sock");
    let (code, stderr) = run(&[a.as_os_str(), OsStr::new("client")]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.starts_with("error: the subcommand 'client' cannot be used with"),
        "{stderr}"
    );
    assert!(!exists(&a));
}

/// Without PATH the library decides (nothing inherited: refused), and the
/// binary reports that as a usage error.
#[test]
fn no_path_and_no_activation_is_a_usage_error() {
    let (code, stderr) = run(&[]);
    assert_eq!(code, Some(2), "{stderr}");
    let first = stderr.lines().next().unwrap_or_default();
    assert!(
        first.starts_with("error:") && first.contains("PATH") && first.contains("systemd"),
        "{stderr}"
    );
    assert!(stderr.contains("Usage: uds-reactor"), "{stderr}");

    // Activation variables meant for another process change nothing.
    let mut cmd = Command::new(bin());
    cmd.env("LISTEN_PID", "1").env("LISTEN_FDS", "1");
    let (status, stderr) = run_to_exit(&mut cmd);
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.starts_with("error:"), "{stderr}");
}

#[test]
fn every_command_lists_the_same_types_and_framings() {
    for command in [&[][..], &["client"][..], &["load"][..]] {
        for (flag, choices) in [
            ("--type", "[possible values: stream, seqpacket, dgram]"),
            ("--framing", "[possible values: raw, line, length]"),
        ] {
            let rest = [flag, "bogus", "@x"];
            let args: Vec<&OsStr> = command.iter().chain(&rest).map(OsStr::new).collect();
            let (code, stderr) = run(&args);
            assert_eq!(code, Some(2), "{command:?} {flag}: {stderr}");
            assert!(
                stderr.starts_with(&format!("error: invalid value 'bogus' for '{flag} ")),
                "{command:?} {flag}: {stderr}"
            );
            assert!(stderr.contains(choices), "{command:?} {flag}: {stderr}");
        }
    }
}
