//! Framing: a 4-byte big-endian length, then one postcard-encoded message.
//!
//! Decoding never panics: oversized lengths, truncated frames and malformed bodies are errors.
//! Limits depend on the direction and phase: the controller accepts a small first frame (Hello,
//! before the client is authenticated) and small frames after it, while views from the controller
//! may be large. The buffer grows with the bytes that arrive, never with a declared length.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use serde::{de::DeserializeOwned, Serialize};
use tokio_util::codec::{Decoder, Encoder};

/// The largest frame a proxy accepts from the controller (a view of a Service with tens of
/// thousands of endpoints fits).
pub const MAX_FRAME_LEN: usize = 16 * 1024 * 1024;

/// The largest first frame (Hello) the controller accepts: names and a token fit in a few KiB.
pub const MAX_HELLO_LEN: usize = 8 * 1024;

/// The largest frame the controller accepts after Hello (a CSR, a subscription, an ack).
pub const MAX_CLIENT_FRAME_LEN: usize = 64 * 1024;

const HEADER_LEN: usize = 4;

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge { len: usize, max: usize },
    #[error("malformed message: {0}")]
    Malformed(#[from] postcard::Error),
    #[error("{0} trailing bytes after the message in a frame")]
    Trailing(usize),
    #[error("connection closed in the middle of a frame")]
    Truncated,
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Encodes `msg` as one frame (header included).
pub fn encode<T: Serialize>(msg: &T) -> Result<Bytes, CodecError> {
    let body = postcard::to_stdvec(msg)?;
    if body.len() > MAX_FRAME_LEN {
        return Err(CodecError::TooLarge {
            len: body.len(),
            max: MAX_FRAME_LEN,
        });
    }
    let mut out = BytesMut::with_capacity(HEADER_LEN + body.len());
    out.put_u32(body.len() as u32);
    out.extend_from_slice(&body);
    Ok(out.freeze())
}

/// Decodes one frame from the start of `buf`: the message and the bytes it took, or `None`
/// when `buf` does not hold a whole frame yet.
pub fn decode<T: DeserializeOwned>(
    buf: &[u8],
    max_len: usize,
) -> Result<Option<(T, usize)>, CodecError> {
    let Some(header) = buf.get(..HEADER_LEN) else {
        return Ok(None);
    };
    let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
    if len > max_len {
        return Err(CodecError::TooLarge { len, max: max_len });
    }
    let Some(body) = buf.get(HEADER_LEN..HEADER_LEN + len) else {
        return Ok(None);
    };
    let (msg, rest) = postcard::take_from_bytes(body)?;
    if !rest.is_empty() {
        return Err(CodecError::Trailing(rest.len()));
    }
    Ok(Some((msg, HEADER_LEN + len)))
}

/// A tokio codec for one direction: decodes `In`, encodes `Out`. The first decoded frame may be
/// held to its own limit (the controller's Hello), later frames to another.
#[derive(Debug)]
pub struct FrameCodec<In, Out> {
    first_max_len: usize,
    max_len: usize,
    decoded: u64,
    _types: std::marker::PhantomData<fn(Out) -> In>,
}

impl<In, Out> FrameCodec<In, Out> {
    /// The same limit for every frame.
    pub fn new(max_len: usize) -> Self {
        Self::with_limits(max_len, max_len)
    }

    /// `first_max_len` for the first frame decoded, `max_len` for every later one.
    pub fn with_limits(first_max_len: usize, max_len: usize) -> Self {
        FrameCodec {
            first_max_len,
            max_len,
            decoded: 0,
            _types: std::marker::PhantomData,
        }
    }

    /// What the controller reads from a proxy: a Hello of at most [`MAX_HELLO_LEN`], then frames
    /// of at most [`MAX_CLIENT_FRAME_LEN`].
    pub fn client_frames() -> Self {
        Self::with_limits(MAX_HELLO_LEN, MAX_CLIENT_FRAME_LEN)
    }

    /// The limit for the next frame.
    fn limit(&self) -> usize {
        if self.decoded == 0 {
            self.first_max_len
        } else {
            self.max_len
        }
    }
}

impl<In, Out> Default for FrameCodec<In, Out> {
    fn default() -> Self {
        Self::new(MAX_FRAME_LEN)
    }
}

impl<In: DeserializeOwned, Out> Decoder for FrameCodec<In, Out> {
    type Item = In;
    type Error = CodecError;

    /// Never reserves the declared length: a peer that declares 16 MiB and sends nothing costs
    /// nothing, and the buffer only grows as bytes arrive (the framed reader's own growth).
    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<In>, CodecError> {
        match decode(src, self.limit())? {
            Some((msg, used)) => {
                src.advance(used);
                self.decoded += 1;
                Ok(Some(msg))
            }
            None => Ok(None),
        }
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<In>, CodecError> {
        match self.decode(src)? {
            Some(msg) => Ok(Some(msg)),
            None if src.is_empty() => Ok(None),
            None => Err(CodecError::Truncated),
        }
    }
}

impl<In, Out: Serialize> Encoder<Out> for FrameCodec<In, Out> {
    type Error = CodecError;

    fn encode(&mut self, item: Out, dst: &mut BytesMut) -> Result<(), CodecError> {
        dst.extend_from_slice(&encode(&item)?);
        Ok(())
    }
}

/// A frame encoded once by [`encode`], to be sent on many connections without encoding it again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Encoded(pub Bytes);

impl<In> Encoder<Encoded> for FrameCodec<In, Encoded> {
    type Error = CodecError;

    fn encode(&mut self, item: Encoded, dst: &mut BytesMut) -> Result<(), CodecError> {
        dst.extend_from_slice(&item.0);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type ServerSide = FrameCodec<Vec<u8>, Encoded>;

    fn frame(body_len: usize) -> BytesMut {
        let body: Vec<u8> = vec![7; body_len];
        // postcard: a varint length, then the bytes.
        let msg = postcard::to_stdvec(&body).expect("encode");
        let mut out = BytesMut::new();
        out.put_u32(msg.len() as u32);
        out.extend_from_slice(&msg);
        out
    }

    #[test]
    fn a_huge_declared_hello_is_refused_without_reserving_it() {
        let mut codec = ServerSide::client_frames();
        let mut buf = BytesMut::with_capacity(64);
        buf.put_u32(16 * 1024 * 1024);
        buf.extend_from_slice(&[0; 16]);
        let e = codec.decode(&mut buf).expect_err("too large");
        assert!(
            matches!(
                e,
                CodecError::TooLarge {
                    len: 16_777_216,
                    max: MAX_HELLO_LEN
                }
            ),
            "{e}"
        );
        assert!(buf.capacity() < 1024, "reserved {} bytes", buf.capacity());
    }

    #[test]
    fn a_partial_frame_reserves_nothing_for_its_declared_length() {
        let mut codec = ServerSide::default();
        let mut buf = BytesMut::with_capacity(64);
        buf.put_u32(1024 * 1024);
        buf.extend_from_slice(&[0; 16]);
        assert!(codec.decode(&mut buf).expect("partial").is_none());
        assert!(buf.capacity() < 1024, "reserved {} bytes", buf.capacity());
    }

    #[test]
    fn after_hello_client_frames_are_held_to_64_kib() {
        let mut codec = ServerSide::client_frames();
        let mut buf = frame(100);
        assert!(codec.decode(&mut buf).expect("hello").is_some());
        // The largest body that fits, then one byte more.
        let fits = MAX_CLIENT_FRAME_LEN - 3;
        let mut buf = frame(fits);
        assert_eq!(buf.len() - HEADER_LEN, MAX_CLIENT_FRAME_LEN);
        assert!(codec.decode(&mut buf).expect("fits").is_some());
        let mut buf = frame(fits + 1);
        let e = codec.decode(&mut buf).expect_err("too large");
        assert!(matches!(e, CodecError::TooLarge { .. }), "{e}");
    }

    #[test]
    fn a_hello_over_8_kib_is_refused() {
        let mut codec = ServerSide::client_frames();
        let mut buf = frame(MAX_HELLO_LEN);
        assert!(matches!(
            codec.decode(&mut buf),
            Err(CodecError::TooLarge { .. })
        ));
    }
}
