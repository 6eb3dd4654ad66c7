//! One client connection: read whole frames, hand them to `dispatch`, write whole
//! responses in order. Framing is all this module knows.

use std::io;
use std::os::fd::AsRawFd;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::TcpStream;

use super::dispatch::{self, Outcome};
use super::response::{Chunk, ResponseFrame};
use super::Context;

#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    #[error("i/o: {0}")]
    Io(#[from] io::Error),
    #[error("frame of {size} bytes is outside 0..={max} (socket.request.max.bytes)")]
    FrameSize { size: i64, max: usize },
    #[error("peer closed the connection in the middle of a frame")]
    Truncated,
}

pub struct Connection {
    stream: TcpStream,
    buffer: BytesMut,
    max_frame: usize,
}

impl Connection {
    pub fn new(stream: TcpStream, max_frame: usize) -> Self {
        let _ = stream.set_nodelay(true);
        Connection {
            stream,
            buffer: BytesMut::with_capacity(64 * 1024),
            max_frame,
        }
    }

    /// Serves requests until the peer leaves or breaks the protocol.
    pub async fn run(mut self, ctx: Context) -> Result<(), ConnectionError> {
        while let Some(frame) = self.read_frame().await? {
            match dispatch::handle(&ctx, frame).await {
                Outcome::Respond(response) => self.write_response(response).await?,
                Outcome::NoResponse => {}
                Outcome::Close(reason) => {
                    tracing::warn!(peer = ?self.stream.peer_addr().ok(), %reason, "closing connection");
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    async fn read_frame(&mut self) -> Result<Option<Bytes>, ConnectionError> {
        loop {
            if self.buffer.len() >= 4 {
                let size = i32::from_be_bytes([
                    self.buffer[0],
                    self.buffer[1],
                    self.buffer[2],
                    self.buffer[3],
                ]) as i64;
                // Refuse before buffering: a bogus size must not make us allocate it.
                if size < 0 || size as usize > self.max_frame {
                    return Err(ConnectionError::FrameSize {
                        size,
                        max: self.max_frame,
                    });
                }
                let size = size as usize;
                if self.buffer.len() >= 4 + size {
                    self.buffer.advance(4);
                    return Ok(Some(self.buffer.split_to(size).freeze()));
                }
                self.buffer.reserve(4 + size - self.buffer.len());
            }
            if self.stream.read_buf(&mut self.buffer).await? == 0 {
                return if self.buffer.is_empty() {
                    Ok(None)
                } else {
                    Err(ConnectionError::Truncated)
                };
            }
        }
    }

    async fn write_response(&mut self, response: ResponseFrame) -> Result<(), ConnectionError> {
        let spliced = response.chunks.len() > 1;
        // Cork while a response goes out in several writes, so the kernel sends full
        // segments instead of one small packet per header piece.
        if spliced {
            set_cork(&self.stream, true);
        }
        let mut result = Ok(());
        for chunk in response.chunks {
            result = match chunk {
                Chunk::Bytes(b) => self.stream.write_all(&b).await,
                Chunk::File(slice) => {
                    send_file(&self.stream, &slice.file, slice.position, slice.len).await
                }
            };
            if result.is_err() {
                break;
            }
        }
        if spliced {
            set_cork(&self.stream, false);
        }
        Ok(result?)
    }
}

/// sendfile(2) from a segment file to the socket, waiting for writability as needed.
async fn send_file(
    stream: &TcpStream,
    file: &std::fs::File,
    position: u64,
    len: u64,
) -> io::Result<()> {
    let mut offset = position as libc::off_t;
    let end = (position + len) as libc::off_t;
    while offset < end {
        stream.writable().await?;
        let remaining = (end - offset) as usize;
        let sent = stream.try_io(Interest::WRITABLE, || {
            // SAFETY: both descriptors are open for the duration of the call and
            // `offset` is a valid pointer to an off_t we own.
            let n = unsafe {
                libc::sendfile(stream.as_raw_fd(), file.as_raw_fd(), &mut offset, remaining)
            };
            if n < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(n as usize)
            }
        });
        match sent {
            Ok(0) => {
                // The file is shorter than the index promised: never send a short frame.
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "segment file ended before the requested range",
                ));
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn set_cork(stream: &TcpStream, on: bool) {
    let value: libc::c_int = on.into();
    // SAFETY: setsockopt on an open socket with a pointer to a live c_int.
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_CORK,
            &value as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}
