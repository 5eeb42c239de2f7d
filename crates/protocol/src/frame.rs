//! Message framing: every message after start-up is `tag: u8, length: i32 (including itself), body`.
//!
//! Two ways to walk frames, both without copying:
//! - [`next_frame`] for input that must be complete before it is acted on (client messages, which
//!   are bounded by a configured maximum size);
//! - [`FrameWalker`] for relayed server output, which may be arbitrarily large (a 100 MB result) and
//!   is forwarded as it arrives: only the messages the caller asks about are held until complete.

use std::ops::Range;

/// Size of a tagged message header: one tag byte and a four-byte length.
pub const HEADER_LEN: usize = 5;

/// A framing error: the peer sent something that cannot be a valid message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The length field is smaller than the length field itself.
    #[error("invalid message length {len}")]
    InvalidLength {
        /// The length the peer declared.
        len: i32,
    },
    /// The declared length exceeds the configured maximum.
    #[error("message of type '{tag}' with length {len} exceeds the maximum of {limit} bytes", tag = char::from(*.tag))]
    TooLarge {
        /// The message tag.
        tag: u8,
        /// The declared length.
        len: usize,
        /// The configured limit.
        limit: usize,
    },
}

/// A complete frame found at the start of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame {
    /// The message tag.
    pub tag: u8,
    /// Total length of the frame including the tag byte.
    pub total_len: usize,
}

/// Reads a frame header, validating the length against `max_len` (the declared length, which
/// counts itself but not the tag).
pub fn parse_header(buf: &[u8], max_len: usize) -> Result<Option<(u8, usize)>, FrameError> {
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    let tag = buf[0];
    let len = i32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]);
    if len < 4 {
        return Err(FrameError::InvalidLength { len });
    }
    let len = len as usize;
    if len > max_len {
        return Err(FrameError::TooLarge {
            tag,
            len,
            limit: max_len,
        });
    }
    Ok(Some((tag, len)))
}

/// Returns the complete frame at the start of `buf`, `Ok(None)` if more bytes are needed.
///
/// An incomplete frame is not an error: it is the normal state of a stream between reads.
pub fn next_frame(buf: &[u8], max_len: usize) -> Result<Option<Frame>, FrameError> {
    let Some((tag, len)) = parse_header(buf, max_len)? else {
        return Ok(None);
    };
    let total_len = len + 1;
    if buf.len() < total_len {
        return Ok(None);
    }
    Ok(Some(Frame { tag, total_len }))
}

/// What [`FrameWalker::step`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Nothing more can be decided with the bytes at hand; everything before the walker's position
    /// may be forwarded.
    NeedMore,
    /// A complete message the caller asked to see. Its bytes lie at `range` within the buffer (tag
    /// included) and are before the walker's position.
    Message {
        /// The message tag.
        tag: u8,
        /// Where the whole message sits in the buffer.
        range: Range<usize>,
    },
}

/// Streaming walker over relayed bytes.
///
/// Messages the caller is not interested in are passed without waiting for their bodies, so a huge
/// `DataRow` or `CopyData` streams through with bounded memory. Interesting messages (decided by the
/// `wants` predicate) are reported only once complete and must not exceed `max_len`.
#[derive(Debug, Default, Clone)]
pub struct FrameWalker {
    /// Body bytes of a passed-through message that have not arrived yet.
    pending_body: usize,
    /// How far into the current buffer the walker has consumed.
    pos: usize,
}

impl FrameWalker {
    /// A walker at the start of a stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// Bytes at the front of the buffer that have been walked and may be forwarded.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// Tells the walker that the first `n` bytes (at most [`position`](Self::position)) were
    /// removed from the front of the buffer.
    pub fn consumed(&mut self, n: usize) {
        debug_assert!(n <= self.pos);
        self.pos -= n.min(self.pos);
    }

    /// True when the walker is between messages (not inside a passed-through body).
    pub fn at_boundary(&self) -> bool {
        self.pending_body == 0
    }

    /// Advances over `buf` (the whole buffer, from its start) until an interesting complete message
    /// is found or more bytes are needed.
    pub fn step(
        &mut self,
        buf: &[u8],
        max_len: usize,
        wants: impl Fn(u8) -> bool,
    ) -> Result<Step, FrameError> {
        loop {
            if self.pending_body > 0 {
                let available = buf.len() - self.pos;
                let take = available.min(self.pending_body);
                self.pos += take;
                self.pending_body -= take;
                if self.pending_body > 0 {
                    return Ok(Step::NeedMore);
                }
            }
            let rest = &buf[self.pos..];
            if rest.len() < HEADER_LEN {
                return Ok(Step::NeedMore);
            }
            let tag = rest[0];
            if wants(tag) {
                let Some(frame) = next_frame(rest, max_len)? else {
                    return Ok(Step::NeedMore);
                };
                let start = self.pos;
                self.pos += frame.total_len;
                return Ok(Step::Message {
                    tag,
                    range: start..self.pos,
                });
            }
            // Uninteresting: only the length's sanity matters, the body streams through.
            let Some((_, len)) = parse_header(rest, usize::MAX)? else {
                return Ok(Step::NeedMore);
            };
            self.pos += HEADER_LEN;
            self.pending_body = len - 4;
        }
    }
}

#[cfg(test)]
mod tests;
