//! Decoder rules, one test per rule.

use super::*;

fn frames(
    framing: Framing,
    max: usize,
    chunks: &[&[u8]],
) -> (Vec<Vec<u8>>, Result<Eof, FrameError>) {
    let mut d = Decoder::new(framing, max);
    let mut spare = Vec::new();
    let mut out = Vec::new();
    for chunk in chunks {
        if let Err(e) = d.decode(chunk, &mut spare, |f| {
            out.push(f.wire().to_vec());
            true
        }) {
            return (out, Err(e));
        }
    }
    let eof = d.decode_eof(&mut spare, |f| {
        out.push(f.wire().to_vec());
        true
    });
    (out, Ok(eof))
}

#[test]
fn line_frames_include_their_newline() {
    let (f, eof) = frames(Framing::Line, 100, &[b"a\nbc\n"]);
    assert_eq!(f, [b"a\n".to_vec(), b"bc\n".to_vec()]);
    assert_eq!(eof, Ok(Eof::Clean));
}

#[test]
fn line_tail_at_eof_is_delivered_as_is() {
    let (f, _) = frames(Framing::Line, 100, &[b"a\nta", b"il"]);
    assert_eq!(f, [b"a\n".to_vec(), b"tail".to_vec()]);
}

#[test]
fn line_longer_than_max_is_an_error() {
    let (f, eof) = frames(Framing::Line, 3, &[b"ok\n", b"toolong"]);
    assert_eq!(f, [b"ok\n".to_vec()]);
    assert!(matches!(eof, Err(FrameError::TooLarge { max: 3, .. })));
}

#[test]
fn line_of_exactly_max_payload_is_accepted() {
    let (f, _) = frames(Framing::Line, 3, &[b"ab", b"c\n"]);
    assert_eq!(f, [b"abc\n".to_vec()]);
}

#[test]
fn length_frames_keep_their_header_and_allow_zero() {
    let (f, eof) = frames(Framing::Length, 10, &[b"\0\0\0\x02hi\0\0\0\0"]);
    assert_eq!(f, [b"\0\0\0\x02hi".to_vec(), b"\0\0\0\0".to_vec()]);
    assert_eq!(eof, Ok(Eof::Clean));
}

#[test]
fn length_header_over_max_is_an_error_before_any_payload() {
    let (_, eof) = frames(Framing::Length, 10, &[b"\xff\xff\xff\xff"]);
    assert_eq!(
        eof,
        Err(FrameError::TooLarge {
            len: u32::MAX as u64,
            max: 10
        })
    );
}

#[test]
fn length_partial_frame_at_eof_is_dropped() {
    let (f, eof) = frames(Framing::Length, 10, &[b"\0\0\0\x05ab"]);
    assert!(f.is_empty());
    assert_eq!(eof, Ok(Eof::Dropped(6)));
}

#[test]
fn split_at_every_byte_gives_the_same_frames() {
    let input: &[u8] = b"\0\0\0\x03abc\0\0\0\0\0\0\0\x01z";
    let whole = frames(Framing::Length, 10, &[input]);
    let pieces: Vec<&[u8]> = input.chunks(1).collect();
    assert_eq!(frames(Framing::Length, 10, &pieces), whole);
    let lines: &[u8] = b"one\ntwo\n\nthree";
    let pieces: Vec<&[u8]> = lines.chunks(1).collect();
    assert_eq!(
        frames(Framing::Line, 10, &pieces),
        frames(Framing::Line, 10, &[lines])
    );
}
