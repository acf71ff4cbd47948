//! The load generator as a child process: the built `uds-reactor load
//! ... --json`, pinned to the load CPU the way procs.rs pins servers, its
//! one-line report read back. Only the fields the bench uses are parsed,
//! by hand: the report is flat numbers under unique keys.

use std::path::Path;
use std::process::{Command, Stdio};

use uds_reactor::SocketType;

use crate::procs;

/// One timed run: what to ask `uds-reactor load` for.
pub struct Run<'a> {
    pub path: &'a Path,
    /// The server's socket type (`--type`).
    pub ty: SocketType,
    pub connections: usize,
    pub size: usize,
    pub pipeline: usize,
    pub churn: bool,
    /// Sending time (`-d`); messages in flight are still awaited.
    pub secs: f64,
    /// Descriptors attached to every message (`--fds`).
    pub fds: usize,
}

/// The report's fields the bench reads.
#[derive(Debug)]
pub struct Report {
    pub messages: f64,
    pub bytes: f64,
    pub connections_opened: f64,
    pub msgs_per_sec: f64,
    pub mb_per_sec: f64,
    pub conns_per_sec: f64,
    pub p50_us: f64,
    pub p99_us: f64,
}

/// Runs the load generator to completion on `cpu` (if any).
///
/// # Errors
///
/// The generator's own error line (a failed connect, a verification
/// error, a stall), or why it could not be run or read.
pub fn run(run: &Run<'_>, cpu: Option<usize>) -> Result<Report, String> {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_uds-reactor"));
    cmd.arg("load")
        .args(["--type", run.ty.as_str()])
        .args(["-c", &run.connections.to_string()])
        .args(["-s", &run.size.to_string()])
        .args(["-P", &run.pipeline.to_string()])
        .args(["-d", &run.secs.to_string()])
        .arg("--json");
    if run.churn {
        cmd.arg("--churn");
    }
    if run.fds > 0 {
        cmd.args(["--fds", &run.fds.to_string()]);
    }
    // stderr is a pipe, not a terminal: no progress lines.
    let child = cmd
        .arg(run.path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("start uds-reactor load: {e}"))?;
    if let Some(cpu) = cpu {
        // It starts on this process's CPU (CPU 1): right for the split
        // placement, moved at once for the same-CPU one, long before its
        // first connect (its start-up is not measured: the server's CPU is).
        procs::pin(child.id(), cpu);
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("wait for uds-reactor load: {e}"))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Err(match stderr.lines().next() {
            Some(line) => line.to_owned(),
            None => format!("uds-reactor load: {}", out.status),
        });
    }
    parse(&String::from_utf8_lossy(&out.stdout))
}

/// Reads the report from `--json`'s object.
fn parse(json: &str) -> Result<Report, String> {
    let num = |key: &str| number(json, key).ok_or_else(|| format!("no \"{key}\" in {json}"));
    // A run with errors exits non-zero; a report saying otherwise is a bug.
    if num("errors")? != 0.0 {
        return Err(format!("load reported errors: {json}"));
    }
    Ok(Report {
        messages: num("messages")?,
        bytes: num("bytes")?,
        connections_opened: num("connections_opened")?,
        msgs_per_sec: num("msgs_per_sec")?,
        mb_per_sec: num("mb_per_sec")?,
        conns_per_sec: num("conns_per_sec")?,
        p50_us: num("p50")?,
        p99_us: num("p99")?,
    })
}

/// The number after `"key":`, wherever it is nested.
fn number(json: &str, key: &str) -> Option<f64> {
    let pattern = format!("\"{key}\":");
    let rest = &json[json.find(&pattern)? + pattern.len()..];
    let end = rest.find([',', '}']).unwrap_or(rest.len());
    rest[..end].trim().parse().ok()
}
