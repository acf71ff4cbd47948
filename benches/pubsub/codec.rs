//! The two wire protocols the pub/sub driver speaks: uds-reactor's
//! newline-framed one (examples/pubsub.rs) and Redis's RESP. Each turns
//! the same three requests into bytes and the same three kinds of reply
//! back into a [`Frame`], so that everything else in the driver is one
//! code path for both servers.

/// Which server's protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    /// `SUB t` → `+OK`; `PUB t p` → `:n`; subscribers get `MSG t p`.
    Line,
    /// RESP arrays: `SUBSCRIBE t`, `PUBLISH t p`; `message` pushes.
    Resp,
}

/// One reply or push, borrowed from the read buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A subscription confirmed (`+OK`, or RESP's `subscribe` array).
    Ack,
    /// A PUB's reply: how many subscribers the message went to.
    Int(i64),
    /// A message delivered to a subscriber.
    Msg { topic: &'a [u8], payload: &'a [u8] },
}

/// A parsed frame and the bytes it took, or None if incomplete.
pub type Parsed<'a> = Option<(Frame<'a>, usize)>;

impl Proto {
    /// Appends a subscribe request for `topic`.
    pub fn subscribe(self, topic: &[u8], out: &mut Vec<u8>) {
        match self {
            Proto::Line => line(out, &[b"SUB", topic]),
            Proto::Resp => resp(out, &[b"SUBSCRIBE", topic]),
        }
    }

    /// Appends a publish request.
    pub fn publish(self, topic: &[u8], payload: &[u8], out: &mut Vec<u8>) {
        match self {
            Proto::Line => line(out, &[b"PUB", topic, payload]),
            Proto::Resp => resp(out, &[b"PUBLISH", topic, payload]),
        }
    }

    /// Parses the first frame in `buf`.
    ///
    /// # Errors
    ///
    /// An error reply from the server, or bytes that are no frame.
    pub fn parse(self, buf: &[u8]) -> Result<Parsed<'_>, String> {
        match self {
            Proto::Line => parse_line(buf),
            Proto::Resp => parse_resp(buf),
        }
    }
}

fn line(out: &mut Vec<u8>, words: &[&[u8]]) {
    for (i, w) in words.iter().enumerate() {
        if i > 0 {
            out.push(b' ');
        }
        out.extend_from_slice(w);
    }
    out.push(b'\n');
}

fn resp(out: &mut Vec<u8>, words: &[&[u8]]) {
    out.push(b'*');
    push_num(out, words.len());
    out.extend_from_slice(b"\r\n");
    for w in words {
        out.push(b'$');
        push_num(out, w.len());
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(w);
        out.extend_from_slice(b"\r\n");
    }
}

/// Appends `n` in decimal, without allocating.
fn push_num(out: &mut Vec<u8>, mut n: usize) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// A signed decimal integer, all of `s`.
pub fn parse_int(s: &[u8]) -> Option<i64> {
    let (neg, digits) = match s.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, s),
    };
    if digits.is_empty() || digits.len() > 18 {
        return None;
    }
    let mut v: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        v = v * 10 + i64::from(d - b'0');
    }
    Some(if neg { -v } else { v })
}

fn shown(b: &[u8]) -> String {
    let s = String::from_utf8_lossy(&b[..b.len().min(120)]);
    format!("{s:?}")
}

fn parse_line(buf: &[u8]) -> Result<Parsed<'_>, String> {
    let Some(end) = memchr::memchr(b'\n', buf) else {
        return Ok(None);
    };
    let used = end + 1;
    let l = buf[..end].strip_suffix(b"\r").unwrap_or(&buf[..end]);
    let frame = match l.first() {
        Some(b'+') => Frame::Ack,
        Some(b':') => {
            Frame::Int(parse_int(&l[1..]).ok_or_else(|| format!("bad integer {}", shown(l)))?)
        }
        Some(b'-') => return Err(format!("server error {}", shown(l))),
        _ => {
            let rest = l
                .strip_prefix(b"MSG ")
                .ok_or_else(|| format!("unexpected line {}", shown(l)))?;
            let sp =
                memchr::memchr(b' ', rest).ok_or_else(|| format!("no payload in {}", shown(l)))?;
            Frame::Msg {
                topic: &rest[..sp],
                payload: &rest[sp + 1..],
            }
        }
    };
    Ok(Some((frame, used)))
}

/// The text of a RESP line at `buf[at..]` (up to CRLF) and the offset
/// after it; None if the line is not complete yet.
fn resp_line(buf: &[u8], at: usize) -> Option<(&[u8], usize)> {
    let rest = buf.get(at..)?;
    let nl = memchr::memchr(b'\n', rest)?;
    let l = rest[..nl].strip_suffix(b"\r").unwrap_or(&rest[..nl]);
    Some((l, at + nl + 1))
}

/// An element of a RESP array (only the kinds pub/sub replies use).
#[derive(Clone, Copy)]
enum Elem<'a> {
    Bulk(&'a [u8]),
    Int(i64),
}

fn parse_resp(buf: &[u8]) -> Result<Parsed<'_>, String> {
    let Some((head, mut at)) = resp_line(buf, 0) else {
        return Ok(None);
    };
    let bad = |what: &str, l: &[u8]| format!("bad RESP {what} {}", shown(l));
    let frame = match head.first() {
        Some(b'+') => Frame::Ack,
        Some(b':') => Frame::Int(parse_int(&head[1..]).ok_or_else(|| bad("integer", head))?),
        Some(b'-') => return Err(format!("server error {}", shown(head))),
        Some(b'*') => {
            let n = parse_int(&head[1..]).ok_or_else(|| bad("array", head))?;
            if n != 3 {
                return Err(bad("array length", head));
            }
            let mut elems = [Elem::Int(0); 3];
            for e in &mut elems {
                let Some((l, next)) = resp_line(buf, at) else {
                    return Ok(None);
                };
                at = next;
                *e = match l.first() {
                    Some(b':') => Elem::Int(parse_int(&l[1..]).ok_or_else(|| bad("integer", l))?),
                    Some(b'$') => {
                        let len = parse_int(&l[1..])
                            .and_then(|v| usize::try_from(v).ok())
                            .ok_or_else(|| bad("bulk length", l))?;
                        if buf.len() < at + len + 2 {
                            return Ok(None);
                        }
                        let data = &buf[at..at + len];
                        if &buf[at + len..at + len + 2] != b"\r\n" {
                            return Err(bad("bulk end", &buf[at..]));
                        }
                        at += len + 2;
                        Elem::Bulk(data)
                    }
                    _ => return Err(bad("array element", l)),
                };
            }
            match elems {
                [Elem::Bulk(b"message"), Elem::Bulk(topic), Elem::Bulk(payload)] => {
                    Frame::Msg { topic, payload }
                }
                [Elem::Bulk(b"subscribe"), Elem::Bulk(_), Elem::Int(n)] if n > 0 => Frame::Ack,
                _ => return Err(bad("push", &buf[..at])),
            }
        }
        _ => return Err(bad("reply", head)),
    };
    Ok(Some((frame, at)))
}

/// Round-trips each protocol's frames, including split reads; panics on
/// a mismatch. Cheap: run at the start of every bench.
pub fn self_check() {
    let resp_msg = b"*3\r\n$7\r\nmessage\r\n$1\r\nt\r\n$3\r\nabc\r\n";
    for cut in 0..resp_msg.len() {
        assert_eq!(parse_resp(&resp_msg[..cut]), Ok(None), "cut {cut}");
    }
    let want = Frame::Msg {
        topic: b"t",
        payload: b"abc",
    };
    assert_eq!(parse_resp(resp_msg), Ok(Some((want, resp_msg.len()))));
    let ack = b"*3\r\n$9\r\nsubscribe\r\n$1\r\nt\r\n:1\r\n";
    assert_eq!(parse_resp(ack), Ok(Some((Frame::Ack, ack.len()))));
    assert_eq!(parse_resp(b":100\r\n"), Ok(Some((Frame::Int(100), 6))));
    assert!(parse_resp(b"-ERR x\r\n").is_err());
    let mut out = Vec::new();
    Proto::Resp.publish(b"t", b"abc", &mut out);
    assert_eq!(out, b"*3\r\n$7\r\nPUBLISH\r\n$1\r\nt\r\n$3\r\nabc\r\n");

    let line_msg = b"MSG t abc\n";
    assert_eq!(parse_line(&line_msg[..5]), Ok(None));
    let want = Frame::Msg {
        topic: b"t",
        payload: b"abc",
    };
    assert_eq!(parse_line(line_msg), Ok(Some((want, line_msg.len()))));
    assert_eq!(parse_line(b"+OK\n"), Ok(Some((Frame::Ack, 4))));
    assert_eq!(parse_line(b":100\r\n"), Ok(Some((Frame::Int(100), 6))));
    assert!(parse_line(b"-ERR x\n").is_err());
    out.clear();
    Proto::Line.publish(b"t", b"abc", &mut out);
    assert_eq!(out, b"PUB t abc\n");
}
