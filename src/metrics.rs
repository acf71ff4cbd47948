//! The metrics protocol, without I/O: an HTTP/1.1 request's bytes in, the
//! whole response out, with the counters in the Prometheus text
//! exposition format (version 0.0.4).
//!
//! ```text
//! GET /metrics HTTP/1.1\r\n          HTTP/1.1 200 OK\r\n
//! Host: localhost\r\n          ->    Content-Type: text/plain; version=0.0.4\r\n
//! \r\n                               Content-Length: 1234\r\n
//!                                    Connection: close\r\n
//!                                    \r\n
//!                                    # HELP uds_reactor_open_connections ...
//!                                    # TYPE uds_reactor_open_connections gauge
//!                                    uds_reactor_open_connections 3
//!                                    # HELP uds_reactor_accepted_total ...
//!                                    ...
//! ```
//!
//! Other paths get `404`, other methods on `/metrics` `405`, a request
//! that does not parse, ends early or exceeds [`MAX_REQUEST`] `400`.
//! Every response closes the connection. The request is parsed by
//! `httparse` (headers and all: a hand-written request-line split would
//! take what real clients send on trust).

use std::fmt::Write as _;

use crate::stats::Stats;

/// The largest request accepted, headers included: past it, `400`.
pub(crate) const MAX_REQUEST: usize = 8 * 1024;

/// Headers parsed per request; more is a `400` (curl and Prometheus send
/// a handful).
const MAX_HEADERS: usize = 64;

/// The response to the request in `request` (everything received so
/// far), or `None` while it is incomplete and may still be valid. `eof`:
/// the client will send nothing more, so an incomplete request is a
/// `400`.
pub(crate) fn respond(request: &[u8], eof: bool, stats: &Stats) -> Option<Vec<u8>> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    match parsed.parse(request) {
        Ok(httparse::Status::Complete(len)) if len <= MAX_REQUEST => {}
        Ok(httparse::Status::Partial) if request.len() <= MAX_REQUEST && !eof => return None,
        Ok(_) => {
            return Some(error(
                400,
                "Bad Request",
                "request too large or incomplete\n",
            ))
        }
        Err(e) => return Some(error(400, "Bad Request", &format!("bad request: {e}\n"))),
    }
    // Complete: method and path are there.
    let path = parsed.path.unwrap_or_default();
    let resource = path.split_once('?').map_or(path, |(p, _)| p);
    if resource != "/metrics" {
        return Some(error(404, "Not Found", "not found: GET /metrics\n"));
    }
    if parsed.method != Some("GET") {
        return Some(error(
            405,
            "Method Not Allowed",
            "method not allowed: GET /metrics\n",
        ));
    }
    Some(response(
        "200 OK",
        "text/plain; version=0.0.4",
        "",
        &exposition(stats),
    ))
}

/// The counters in the text exposition format: `open` as the gauge
/// `uds_reactor_open_connections`, every other key as the counter
/// `uds_reactor_<key>_total`, each with its `# HELP` and `# TYPE`.
pub(crate) fn exposition(stats: &Stats) -> String {
    let mut out = String::with_capacity(2048);
    for counter in stats.counters() {
        // `open` is the one value of the stats line that goes down.
        let (name, kind) = match counter.key {
            "open" => ("uds_reactor_open_connections".to_owned(), "gauge"),
            key => (format!("uds_reactor_{key}_total"), "counter"),
        };
        // Doc comments quote flags in backticks; a scraper shows them raw.
        let help = escape_help(counter.help.trim()).replace('`', "");
        // Writing to a String cannot fail.
        let _ = write!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {}\n",
            counter.value
        );
    }
    out
}

/// `# HELP` text escapes backslash and newline, and nothing else.
fn escape_help(help: &str) -> String {
    help.replace('\\', "\\\\").replace('\n', "\\n")
}

/// An error response with a one-line plain-text body.
fn error(code: u16, reason: &str, body: &str) -> Vec<u8> {
    let allow = if code == 405 { "Allow: GET\r\n" } else { "" };
    response(
        &format!("{code} {reason}"),
        "text/plain; charset=utf-8",
        allow,
        body,
    )
}

fn response(status: &str, content_type: &str, extra: &str, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(response: &[u8]) -> String {
        let text = String::from_utf8_lossy(response);
        text.lines().next().unwrap_or_default().to_owned()
    }

    fn stats() -> Stats {
        Stats {
            open: 2,
            accepted: 5,
            bytes_in: 1234,
            ..Stats::default()
        }
    }

    #[test]
    fn get_metrics_is_the_exposition() {
        let r = respond(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", false, &stats()).unwrap();
        assert_eq!(status(&r), "HTTP/1.1 200 OK");
        let text = String::from_utf8(r).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.contains("Content-Type: text/plain; version=0.0.4"));
        assert!(head.contains("Connection: close"));
        assert!(head.contains(&format!("Content-Length: {}", body.len())));
        assert!(body.contains(
            "# TYPE uds_reactor_open_connections gauge\nuds_reactor_open_connections 2\n"
        ));
        assert!(body.contains(
            "# TYPE uds_reactor_bytes_in_total counter\nuds_reactor_bytes_in_total 1234\n"
        ));
        assert!(
            body.contains("# HELP uds_reactor_accepted_total Connections accepted and served.\n")
        );
    }

    #[test]
    fn every_counter_of_the_stats_line_appears_once() {
        let body = exposition(&stats());
        let line = stats().to_string();
        let keys: Vec<&str> = line
            .split(' ')
            .skip(1)
            .map(|kv| kv.split('=').next().unwrap())
            .collect();
        assert_eq!(
            body.lines().filter(|l| !l.starts_with('#')).count(),
            keys.len()
        );
        for key in keys.iter().filter(|k| **k != "open") {
            let name = format!("uds_reactor_{key}_total");
            assert_eq!(body.matches(&format!("# TYPE {name} counter\n")).count(), 1);
        }
        // A help text of several doc lines reads as one sentence.
        assert!(body.contains("vanished peer) and partial frames"), "{body}");
    }

    #[test]
    fn waits_for_the_rest_of_a_request() {
        assert_eq!(
            respond(b"GET /metrics HTTP/1.1\r\nHo", false, &stats()),
            None
        );
        let r = respond(b"GET /metrics HTTP/1.1\r\nHo", true, &stats()).unwrap();
        assert_eq!(status(&r), "HTTP/1.1 400 Bad Request");
    }

    #[test]
    fn errors() {
        let s = stats();
        let r = respond(b"GET / HTTP/1.1\r\n\r\n", false, &s).unwrap();
        assert_eq!(status(&r), "HTTP/1.1 404 Not Found");
        let r = respond(b"POST /metrics HTTP/1.1\r\n\r\n", false, &s).unwrap();
        assert_eq!(status(&r), "HTTP/1.1 405 Method Not Allowed");
        assert!(String::from_utf8_lossy(&r).contains("Allow: GET\r\n"));
        let r = respond(b"\x00\x01 nonsense\r\n\r\n", false, &s).unwrap();
        assert_eq!(status(&r), "HTTP/1.1 400 Bad Request");
        let mut big = b"GET /metrics HTTP/1.1\r\nX: ".to_vec();
        big.resize(MAX_REQUEST + 1, b'a');
        let r = respond(&big, false, &s).unwrap();
        assert_eq!(status(&r), "HTTP/1.1 400 Bad Request");
    }

    #[test]
    fn a_query_string_is_the_same_resource() {
        let r = respond(b"GET /metrics?x=1 HTTP/1.1\r\n\r\n", false, &stats()).unwrap();
        assert_eq!(status(&r), "HTTP/1.1 200 OK");
    }
}
