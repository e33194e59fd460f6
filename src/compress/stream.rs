//! A body that runs another body through an encoder or decoder as it streams.
//!
//! Output is emitted when 32 KiB have accumulated, and also whenever the source has nothing more
//! for now: then the codec is flushed, so a slow or event-stream response reaches the client as
//! it is produced instead of waiting for a compressor buffer to fill.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame};

use super::codec::Codec;
use crate::body::{BoxError, IncomingBody};

const OUTPUT_CHUNK: usize = 32 * 1024;

/// A body passed through a [`Codec`].
pub struct CodecBody {
    prefix: VecDeque<Bytes>,
    source: Option<IncomingBody>,
    codec: Option<Codec>,
    trailers: Option<HeaderMap>,
    unflushed: bool,
}

impl CodecBody {
    /// Streams `prefix` (bytes already read from the source) and then `source` through `codec`.
    pub fn new(codec: Codec, prefix: Vec<Bytes>, source: Option<IncomingBody>) -> Self {
        CodecBody {
            prefix: prefix.into(),
            source,
            codec: Some(codec),
            trailers: None,
            unflushed: false,
        }
    }

    fn feed(&mut self, data: &[u8]) -> Result<Option<Bytes>, BoxError> {
        let Some(codec) = self.codec.as_mut() else {
            return Ok(None);
        };
        codec.write(data)?;
        self.unflushed = true;
        Ok((codec.pending() >= OUTPUT_CHUNK).then(|| codec.take()))
    }
}

impl Body for CodecBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        loop {
            if this.codec.is_none() {
                return Poll::Ready(this.trailers.take().map(|t| Ok(Frame::trailers(t))));
            }
            if let Some(chunk) = this.prefix.pop_front() {
                match this.feed(&chunk) {
                    Ok(Some(out)) => return Poll::Ready(Some(Ok(Frame::data(out)))),
                    Ok(None) => continue,
                    Err(e) => return Poll::Ready(Some(Err(e))),
                }
            }
            let polled = match this.source.as_mut() {
                Some(source) => Pin::new(source).poll_frame(cx),
                None => Poll::Ready(None),
            };
            match polled {
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => match this.feed(&data) {
                        Ok(Some(out)) => return Poll::Ready(Some(Ok(Frame::data(out)))),
                        Ok(None) => {}
                        Err(e) => return Poll::Ready(Some(Err(e))),
                    },
                    Err(frame) => {
                        if let Ok(trailers) = frame.into_trailers() {
                            this.trailers = Some(trailers);
                        }
                    }
                },
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(None) => {
                    this.source = None;
                    let Some(codec) = this.codec.take() else {
                        continue;
                    };
                    match codec.finish() {
                        Ok(rest) if !rest.is_empty() => {
                            return Poll::Ready(Some(Ok(Frame::data(rest))));
                        }
                        Ok(_) => {}
                        Err(e) => return Poll::Ready(Some(Err(Box::new(e)))),
                    }
                }
                Poll::Pending => {
                    let Some(codec) = this.codec.as_mut() else {
                        return Poll::Pending;
                    };
                    if this.unflushed {
                        this.unflushed = false;
                        if let Err(e) = codec.flush() {
                            return Poll::Ready(Some(Err(Box::new(e))));
                        }
                    }
                    if codec.pending() > 0 {
                        return Poll::Ready(Some(Ok(Frame::data(codec.take()))));
                    }
                    return Poll::Pending;
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.codec.is_none() && self.trailers.is_none()
    }
}
