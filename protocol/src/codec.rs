//! Framing: a 4-byte big-endian length, then one postcard-encoded message.
//!
//! Decoding never panics: oversized lengths, truncated frames and malformed bodies are errors.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use serde::{de::DeserializeOwned, Serialize};
use tokio_util::codec::{Decoder, Encoder};

/// The largest frame either side accepts (a view of a Service with tens of thousands of endpoints fits).
pub const MAX_FRAME_LEN: usize = 16 * 1024 * 1024;

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

/// A tokio codec for one direction: decodes `In`, encodes `Out`.
#[derive(Debug)]
pub struct FrameCodec<In, Out> {
    max_len: usize,
    _types: std::marker::PhantomData<fn(Out) -> In>,
}

impl<In, Out> FrameCodec<In, Out> {
    pub fn new(max_len: usize) -> Self {
        FrameCodec {
            max_len,
            _types: std::marker::PhantomData,
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

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<In>, CodecError> {
        match decode(src, self.max_len)? {
            Some((msg, used)) => {
                src.advance(used);
                Ok(Some(msg))
            }
            None => {
                if src.len() >= HEADER_LEN {
                    let want = u32::from_be_bytes([src[0], src[1], src[2], src[3]]) as usize;
                    src.reserve(HEADER_LEN + want - src.len());
                }
                Ok(None)
            }
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
