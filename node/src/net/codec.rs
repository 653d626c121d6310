//! Wire framing for the `/breakwater/sync/1` request-response protocol: opaque byte frames
//! (a `u32` big-endian length, then the bytes) between the sync logic of two nodes.
//!
//! The codec knows nothing about what the bytes mean; the anti-entropy code encodes and
//! decodes the sync messages. It only guarantees that a peer can never make this node allocate
//! more than [`MAX_SYNC_FRAME`] bytes for one frame, and that malformed input is an
//! [`io::Error`], never a panic.

use std::io;

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::{StreamProtocol, request_response};

/// The stream protocol name of anti-entropy sync.
pub const SYNC_PROTOCOL: StreamProtocol = StreamProtocol::new("/breakwater/sync/1");

/// The largest sync frame (request or response body) accepted or sent, in bytes: 4 MiB.
pub const MAX_SYNC_FRAME: usize = 4 * 1024 * 1024;

/// Length-prefixed framing of opaque sync requests and responses.
///
/// Both directions carry a `Vec<u8>` framed as a `u32` big-endian length followed by that many
/// bytes. A declared length above the codec's cap is rejected before any buffer is allocated,
/// and the body is read incrementally, so a peer that announces a large frame and then stalls
/// or hangs up costs no more memory than the bytes it actually sent.
#[derive(Debug, Clone, Copy)]
pub struct SyncCodec {
    max_frame: usize,
}

impl SyncCodec {
    /// A codec that accepts and sends frames of at most `max_frame` bytes (clamped to
    /// [`MAX_SYNC_FRAME`] and to what a `u32` length can express).
    pub fn with_max_frame(max_frame: usize) -> Self {
        let max_frame = max_frame
            .min(MAX_SYNC_FRAME)
            .min(usize::try_from(u32::MAX).unwrap_or(usize::MAX));
        Self { max_frame }
    }

    /// The largest frame this codec reads or writes, in bytes.
    pub fn max_frame(&self) -> usize {
        self.max_frame
    }
}

impl Default for SyncCodec {
    fn default() -> Self {
        Self::with_max_frame(MAX_SYNC_FRAME)
    }
}

/// Reads one length-prefixed frame of at most `max_frame` bytes.
pub(crate) async fn read_frame<T>(io: &mut T, max_frame: usize) -> io::Result<Vec<u8>>
where
    T: AsyncRead + Unpin + Send,
{
    let mut header = [0u8; 4];
    io.read_exact(&mut header).await?;
    let declared = u32::from_be_bytes(header);
    let len = usize::try_from(declared).map_err(|_| oversize(u64::from(declared), max_frame))?;
    if len > max_frame {
        return Err(oversize(u64::from(declared), max_frame));
    }
    let mut body = Vec::new();
    let read = io.take(u64::from(declared)).read_to_end(&mut body).await?;
    if read != len {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("sync frame truncated: declared {len} bytes, got {read}"),
        ));
    }
    Ok(body)
}

/// Writes one length-prefixed frame, refusing bodies above `max_frame` bytes.
pub(crate) async fn write_frame<T>(io: &mut T, body: &[u8], max_frame: usize) -> io::Result<()>
where
    T: AsyncWrite + Unpin + Send,
{
    let len = u32::try_from(body.len())
        .ok()
        .filter(|_| body.len() <= max_frame)
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "sync frame of {} bytes exceeds the {max_frame}-byte cap",
                    body.len()
                ),
            )
        })?;
    io.write_all(&len.to_be_bytes()).await?;
    io.write_all(body).await?;
    io.flush().await
}

fn oversize(declared: u64, max_frame: usize) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("sync frame of {declared} bytes exceeds the {max_frame}-byte cap"),
    )
}

impl request_response::Codec for SyncCodec {
    type Protocol = StreamProtocol;
    type Request = Vec<u8>;
    type Response = Vec<u8>;

    async fn read_request<T>(&mut self, _: &Self::Protocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_frame(io, self.max_frame).await
    }

    async fn read_response<T>(&mut self, _: &Self::Protocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_frame(io, self.max_frame).await
    }

    async fn write_request<T>(
        &mut self,
        _: &Self::Protocol,
        io: &mut T,
        request: Vec<u8>,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, &request, self.max_frame).await
    }

    async fn write_response<T>(
        &mut self,
        _: &Self::Protocol,
        io: &mut T,
        response: Vec<u8>,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, &response, self.max_frame).await
    }
}
