use super::*;
use proptest::prelude::*;

fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![tag];
    v.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
    v.extend_from_slice(body);
    v
}

#[test]
fn next_frame_cases() {
    // (input, max, expected)
    let q = msg(b'Q', b"select 1\0");
    let cases: Vec<(Vec<u8>, usize, Result<Option<Frame>, FrameError>)> = vec![
        (vec![], 100, Ok(None)),
        (q[..4].to_vec(), 100, Ok(None)),
        (q[..8].to_vec(), 100, Ok(None)),
        (
            q.clone(),
            100,
            Ok(Some(Frame {
                tag: b'Q',
                total_len: q.len(),
            })),
        ),
        (
            q.clone(),
            5,
            Err(FrameError::TooLarge {
                tag: b'Q',
                len: 13,
                limit: 5,
            }),
        ),
        (
            vec![b'Q', 0, 0, 0, 3],
            100,
            Err(FrameError::InvalidLength { len: 3 }),
        ),
        (
            vec![b'Q', 0xff, 0xff, 0xff, 0xff],
            100,
            Err(FrameError::InvalidLength { len: -1 }),
        ),
        (
            vec![b'Q', 0x7f, 0xff, 0xff, 0xff],
            100,
            Err(FrameError::TooLarge {
                tag: b'Q',
                len: i32::MAX as usize,
                limit: 100,
            }),
        ),
    ];
    for (input, max, expected) in cases {
        assert_eq!(next_frame(&input, max), expected, "input {input:?}");
    }
}

#[test]
fn walker_reports_wanted_and_streams_the_rest() {
    let mut stream = msg(b'D', &[7u8; 1000]);
    let z = msg(b'Z', b"I");
    stream.extend_from_slice(&z);
    let wants = |t: u8| t == b'Z';

    // Feed in small pieces, as a socket would.
    let mut w = FrameWalker::new();
    let mut buf: Vec<u8> = Vec::new();
    let mut forwarded = Vec::new();
    let mut seen = Vec::new();
    for chunk in stream.chunks(7) {
        buf.extend_from_slice(chunk);
        loop {
            match w.step(&buf, 64, wants).unwrap() {
                Step::NeedMore => break,
                Step::Message { tag, range } => seen.push((tag, buf[range].to_vec())),
            }
        }
        let n = w.position();
        forwarded.extend(buf.drain(..n));
        w.consumed(n);
    }
    assert_eq!(forwarded, stream);
    assert_eq!(seen, vec![(b'Z', z)]);
    assert!(w.at_boundary());
}

#[test]
fn walker_rejects_oversized_wanted_message() {
    let big = msg(b'E', &[1u8; 100]);
    let mut w = FrameWalker::new();
    assert!(matches!(
        w.step(&big, 50, |t| t == b'E'),
        Err(FrameError::TooLarge { tag: b'E', .. })
    ));
}

proptest! {
    /// Whatever bytes arrive and however they are split, the walker never panics and never claims
    /// more bytes than it was given.
    #[test]
    fn walker_never_panics(data in proptest::collection::vec(any::<u8>(), 0..512), split in 1usize..64) {
        let mut w = FrameWalker::new();
        let mut buf = Vec::new();
        for chunk in data.chunks(split) {
            buf.extend_from_slice(chunk);
            loop {
                match w.step(&buf, 128, |t| t.is_ascii_uppercase()) {
                    Ok(Step::NeedMore) | Err(_) => break,
                    Ok(Step::Message { range, .. }) => prop_assert!(range.end <= buf.len()),
                }
            }
            prop_assert!(w.position() <= buf.len());
            let n = w.position();
            buf.drain(..n);
            w.consumed(n);
        }
    }

    #[test]
    fn next_frame_never_panics(data in proptest::collection::vec(any::<u8>(), 0..64), max in 0usize..100) {
        if let Ok(Some(f)) = next_frame(&data, max) {
            prop_assert!(f.total_len <= data.len());
        }
    }
}
