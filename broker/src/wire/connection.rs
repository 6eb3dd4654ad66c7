//! One client connection: read whole frames, hand them to `dispatch`, write whole
//! responses in order. Framing is all this module knows.

use std::io;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;

use super::budget::{MemoryBudget, Reservation};
use super::dispatch::{self, Outcome};
use super::response::{Chunk, ResponseFrame};
use super::Context;

/// Bytes read ahead of the frame being parsed: headers and small requests arrive whole
/// in it, so they cost one read and need no budget (every connection may hold this
/// much anyway). An idle connection holds none of it.
const READ_AHEAD: usize = 16 * 1024;
/// The smallest step a large frame's buffer grows by; it doubles from there, never past
/// the frame's size nor far ahead of the bytes that arrived.
const MIN_STEP: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    #[error("i/o: {0}")]
    Io(#[from] io::Error),
    #[error("frame of {size} bytes is outside 0..={max} (socket.request.max.bytes)")]
    FrameSize { size: i64, max: usize },
    #[error("peer closed the connection in the middle of a frame")]
    Truncated,
    #[error("no request for {0:?} (connections.max.idle.ms)")]
    Idle(Duration),
    #[error("request not complete {0:?} after its first byte (connections.max.idle.ms)")]
    RequestDeadline(Duration),
}

/// What a connection may hold, and for how long.
#[derive(Clone)]
pub struct Limits {
    /// `socket.request.max.bytes`
    pub max_frame: usize,
    /// `connections.max.idle.ms`; `None` never times out.
    pub max_idle: Option<Duration>,
    /// `queued.max.request.bytes`, shared by all connections.
    pub budget: Arc<MemoryBudget>,
}

/// One request's bytes and the budget they hold until the request has been handled.
pub struct Frame {
    pub bytes: Bytes,
    pub reservation: Option<Reservation>,
}

/// Reads length-prefixed frames with memory that grows only with the bytes that came.
pub struct FrameReader {
    pending: BytesMut,
    limits: Limits,
}

impl FrameReader {
    pub fn new(limits: Limits) -> Self {
        FrameReader {
            pending: BytesMut::new(),
            limits,
        }
    }

    /// Whether bytes of a next frame are already here.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// The next frame, `None` at a clean end of stream. With `connections.max.idle.ms`
    /// set, the first byte must come within it of `idle_since` and the whole frame
    /// within it of its first byte, waits for budget included (so frames stalled while
    /// holding budget give it back in bounded time).
    pub async fn read_frame<R: AsyncRead + Unpin>(
        &mut self,
        io: &mut R,
        idle_since: Instant,
    ) -> Result<Option<Frame>, ConnectionError> {
        let max_idle = self.limits.max_idle;
        let max = self.limits.max_frame;
        let mut started = self.has_pending().then(Instant::now);
        // Read into the read-ahead until the header is here, and a small frame whole.
        let size = loop {
            let mut want = READ_AHEAD;
            if self.pending.len() >= 4 {
                let size = i32::from_be_bytes([
                    self.pending[0],
                    self.pending[1],
                    self.pending[2],
                    self.pending[3],
                ]) as i64;
                // Refuse before buffering: a bogus size must not make us allocate it.
                let size = usize::try_from(size)
                    .ok()
                    .filter(|s| *s <= max)
                    .ok_or(ConnectionError::FrameSize { size, max })?;
                if self.pending.len() >= 4 + size {
                    // Whole within the read-ahead: no budget, no copy.
                    self.pending.advance(4);
                    let bytes = self.pending.split_to(size).freeze();
                    if self.pending.is_empty() {
                        // Let the frame own the allocation; idle connections keep none.
                        self.pending = BytesMut::new();
                    }
                    return Ok(Some(Frame {
                        bytes,
                        reservation: None,
                    }));
                }
                if 4 + size > READ_AHEAD {
                    break size;
                }
                want = 4 + size;
            }
            if self.pending.capacity() < want {
                self.pending.reserve(want - self.pending.len());
            }
            let read = io.read_buf(&mut self.pending);
            let n = match started {
                None => within(max_idle, idle_since, ConnectionError::Idle, read).await??,
                Some(s) => within(max_idle, s, ConnectionError::RequestDeadline, read).await??,
            };
            if n == 0 {
                return if self.pending.is_empty() {
                    Ok(None)
                } else {
                    Err(ConnectionError::Truncated)
                };
            }
            started.get_or_insert_with(Instant::now);
        };
        let started = started.unwrap_or_else(Instant::now);
        self.pending.advance(4);
        let deadline = ConnectionError::RequestDeadline;
        let mut reservation = self.limits.budget.reservation();
        let mut capacity = size.min(MIN_STEP.max(self.pending.len()));
        within(max_idle, started, deadline, reservation.grow(capacity)).await?;
        let mut body = Vec::with_capacity(capacity);
        body.extend_from_slice(&self.pending);
        self.pending = BytesMut::new();
        while body.len() < size {
            if body.len() == capacity {
                let next = size.min(capacity.saturating_mul(2).max(capacity + MIN_STEP));
                // Backpressure: while the budget is spent nothing more is read.
                within(
                    max_idle,
                    started,
                    deadline,
                    reservation.grow(next - capacity),
                )
                .await?;
                body.reserve_exact(next - body.len());
                capacity = next;
            }
            let room = capacity - body.len();
            let mut room = (&mut body).limit(room);
            let n = within(max_idle, started, deadline, io.read_buf(&mut room)).await??;
            if n == 0 {
                return Err(ConnectionError::Truncated);
            }
        }
        Ok(Some(Frame {
            bytes: Bytes::from(body),
            reservation: Some(reservation),
        }))
    }
}

/// `future`, or `expired(limit)` once `limit` has passed since `since`.
async fn within<T>(
    limit: Option<Duration>,
    since: Instant,
    expired: fn(Duration) -> ConnectionError,
    future: impl std::future::Future<Output = T>,
) -> Result<T, ConnectionError> {
    // A limit too far out to be an Instant never expires.
    match limit.and_then(|l| Some((l, since.checked_add(l)?))) {
        None => Ok(future.await),
        Some((limit, deadline)) => tokio::time::timeout_at(deadline, future)
            .await
            .map_err(|_| expired(limit)),
    }
}

pub struct Connection {
    stream: TcpStream,
    reader: FrameReader,
}

impl Connection {
    pub fn new(stream: TcpStream, limits: Limits) -> Self {
        let _ = stream.set_nodelay(true);
        Connection {
            stream,
            reader: FrameReader::new(limits),
        }
    }

    /// Serves requests until the peer leaves, breaks the protocol, overstays a limit or
    /// the broker shuts down. Shutdown interrupts only the wait for a request: one being
    /// handled is finished and answered first.
    pub async fn run(
        mut self,
        ctx: Context,
        mut shutdown: watch::Receiver<bool>,
    ) -> Result<(), ConnectionError> {
        let max_idle = self.reader.limits.max_idle;
        let mut idle_since = Instant::now();
        while !*shutdown.borrow_and_update() {
            let next = async {
                if !self.reader.has_pending() {
                    // Wait for bytes before taking any buffer for them.
                    let readable = self.stream.readable();
                    within(max_idle, idle_since, ConnectionError::Idle, readable).await??;
                }
                self.reader.read_frame(&mut self.stream, idle_since).await
            };
            let frame = tokio::select! {
                frame = next => frame?,
                _ = shutdown.changed() => return Ok(()),
            };
            let Some(frame) = frame else {
                return Ok(());
            };
            let outcome = dispatch::handle(&ctx, frame.bytes).await;
            // The request is done: its bytes go back to the budget.
            drop(frame.reservation);
            match outcome {
                Outcome::Respond(response) => self.write_response(response).await?,
                Outcome::NoResponse => {}
                Outcome::Close(reason) => {
                    tracing::warn!(peer = ?self.stream.peer_addr().ok(), %reason, "closing connection");
                    return Ok(());
                }
            }
            idle_since = Instant::now();
        }
        Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncWriteExt, DuplexStream};

    fn limits(budget: Option<usize>, max_idle_ms: Option<u64>) -> Limits {
        Limits {
            max_frame: 100 * 1024 * 1024,
            max_idle: max_idle_ms.map(Duration::from_millis),
            budget: MemoryBudget::new(
                budget,
                prometheus::IntGauge::new("test_queued", "test").unwrap(),
            ),
        }
    }

    fn frame(payload: &[u8]) -> Vec<u8> {
        let mut out = (payload.len() as i32).to_be_bytes().to_vec();
        out.extend_from_slice(payload);
        out
    }

    fn pattern(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 31 % 251) as u8).collect()
    }

    /// A reader task on one end of a pipe; the test writes to the other end.
    fn spawn_reader(
        limits: Limits,
    ) -> (
        DuplexStream,
        tokio::task::JoinHandle<Result<Vec<Frame>, ConnectionError>>,
    ) {
        let (client, mut server) = tokio::io::duplex(64 * 1024);
        let handle = tokio::spawn(async move {
            let mut reader = FrameReader::new(limits);
            let mut frames = Vec::new();
            while let Some(f) = reader.read_frame(&mut server, Instant::now()).await? {
                frames.push(f);
            }
            Ok(frames)
        });
        (client, handle)
    }

    async fn settle() {
        tokio::time::sleep(Duration::from_millis(30)).await;
    }

    #[tokio::test]
    async fn announced_size_is_not_allocated_before_its_bytes() {
        let l = limits(Some(256 << 20), None);
        let budget = l.budget.clone();
        let (mut client, reader) = spawn_reader(l);
        // 100 MB announced, 1 KB sent: one minimum step is held, not 100 MB.
        client
            .write_all(&(100i32 << 20).to_be_bytes())
            .await
            .unwrap();
        client.write_all(&[7u8; 1024]).await.unwrap();
        settle().await;
        assert_eq!(budget.in_use(), MIN_STEP);
        // The buffer doubles with what arrives, never far ahead of it.
        let mut sent = 1024;
        for _ in 0..8 {
            client.write_all(&[7u8; 100 * 1024]).await.unwrap();
            sent += 100 * 1024;
            settle().await;
            let held = budget.in_use();
            assert!(
                held >= sent && held <= 2 * sent + MIN_STEP,
                "{held} for {sent}"
            );
        }
        reader.abort();
        let _ = reader.await;
        assert_eq!(
            budget.in_use(),
            0,
            "an abandoned frame gives its budget back"
        );
    }

    #[tokio::test]
    async fn large_frame_arrives_whole_and_returns_its_budget() {
        let l = limits(Some(1 << 20), None);
        let budget = l.budget.clone();
        let (mut client, reader) = spawn_reader(l);
        let big = pattern(700 * 1024);
        let bytes = frame(&big);
        for piece in bytes.chunks(5000) {
            client.write_all(piece).await.unwrap();
        }
        client.write_all(&frame(b"after")).await.unwrap();
        drop(client);
        let frames = reader.await.unwrap().unwrap();
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[0].bytes, big);
        assert_eq!(frames[0].reservation.as_ref().unwrap().bytes(), big.len());
        assert_eq!(&frames[1].bytes[..], b"after");
        drop(frames);
        assert_eq!(budget.in_use(), 0);
    }

    #[tokio::test]
    async fn small_pipelined_frames_need_no_budget() {
        let l = limits(Some(1 << 20), None);
        let budget = l.budget.clone();
        // The budget is spent and its overdraft taken: small requests are still read.
        let mut spent = budget.reservation();
        spent.grow(1 << 20).await;
        let mut overdraft = budget.reservation();
        overdraft.grow(1).await;
        let (mut client, reader) = spawn_reader(l);
        let mut bytes = frame(b"one");
        bytes.extend(frame(&pattern(3000)));
        bytes.extend(frame(b""));
        client.write_all(&bytes).await.unwrap();
        drop(client);
        let frames = reader.await.unwrap().unwrap();
        let sizes: Vec<_> = frames.iter().map(|f| f.bytes.len()).collect();
        assert_eq!(sizes, [3, 3000, 0]);
        assert!(frames.iter().all(|f| f.reservation.is_none()));
        assert_eq!(budget.in_use(), (1 << 20) + 1);
    }

    #[tokio::test]
    async fn spent_budget_stops_reading_until_released() {
        let l = limits(Some(256 * 1024), None);
        let budget = l.budget.clone();
        let mut spent = budget.reservation();
        spent.grow(256 * 1024).await;
        let mut overdraft = budget.reservation();
        overdraft.grow(1).await;
        let (mut client, reader) = spawn_reader(l);
        let big = pattern(200 * 1024);
        let writer = tokio::spawn(async move {
            client.write_all(&frame(&big)).await.unwrap();
            client
        });
        settle().await;
        // Nothing taken, and the writer is stuck behind a full pipe.
        assert_eq!(budget.in_use(), 256 * 1024 + 1);
        assert!(!writer.is_finished());
        drop(spent);
        let client = writer.await.unwrap();
        drop(client);
        let frames = reader.await.unwrap().unwrap();
        assert_eq!(frames[0].bytes.len(), 200 * 1024);
        drop(frames);
        assert_eq!(budget.in_use(), 1);
    }

    #[tokio::test]
    async fn idle_connection_times_out() {
        let (_client, reader) = spawn_reader(limits(None, Some(100)));
        let started = std::time::Instant::now();
        let err = reader.await.unwrap().err().unwrap();
        assert!(matches!(err, ConnectionError::Idle(_)), "{err}");
        assert!(started.elapsed() >= Duration::from_millis(100));
    }

    #[tokio::test]
    async fn trickled_frame_hits_its_deadline() {
        let (mut client, reader) = spawn_reader(limits(None, Some(200)));
        client.write_all(&frame(b"whole")).await.unwrap();
        client.write_all(&1000i32.to_be_bytes()).await.unwrap();
        let started = std::time::Instant::now();
        // A byte every 20 ms: the connection is never silent, the frame never ends.
        let trickle = tokio::spawn(async move {
            for _ in 0..100 {
                if client.write_all(b"x").await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        let err = reader.await.unwrap().err().unwrap();
        assert!(matches!(err, ConnectionError::RequestDeadline(_)), "{err}");
        let elapsed = started.elapsed();
        assert!(
            elapsed >= Duration::from_millis(150) && elapsed < Duration::from_secs(1),
            "{elapsed:?}"
        );
        trickle.abort();
    }

    #[tokio::test]
    async fn limit_beyond_any_instant_never_expires() {
        let l = limits(None, Some(i64::MAX as u64));
        let (mut client, reader) = spawn_reader(l);
        client.write_all(&frame(b"ok")).await.unwrap();
        drop(client);
        let frames = reader.await.unwrap().unwrap();
        assert_eq!(&frames[0].bytes[..], b"ok");
    }

    #[tokio::test]
    async fn bad_sizes_are_refused_before_allocating() {
        for size in [-1i32, (100 << 20) + 1, i32::MAX] {
            let l = limits(Some(256 << 20), None);
            let budget = l.budget.clone();
            let (mut client, reader) = spawn_reader(l);
            client.write_all(&size.to_be_bytes()).await.unwrap();
            let err = reader.await.unwrap().err().unwrap();
            assert!(matches!(err, ConnectionError::FrameSize { .. }), "{err}");
            assert_eq!(budget.in_use(), 0);
        }
    }
}
