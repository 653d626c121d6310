//! The `/breakwater/clock/1` request-response protocol: a node asks a
//! connected peer for its wall clock, so that each side can estimate the
//! offset between their clocks (`breakwater doctor` reports it, since the
//! mesh refuses envelopes dated more than five minutes ahead).
//!
//! A request is the asker's clock and a response the answerer's, each 8
//! bytes: unix milliseconds, big-endian. Nothing else is read or written.

use std::io;

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::{StreamProtocol, request_response};

/// The stream protocol name of the clock exchange.
pub const CLOCK_PROTOCOL: StreamProtocol = StreamProtocol::new("/breakwater/clock/1");

/// A node's wall clock, unix milliseconds: the body of a clock request
/// (the asker's) and of a response (the answerer's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockTime(pub u64);

/// Fixed 8-byte frames for [`ClockTime`] requests and responses.
#[derive(Debug, Clone, Copy, Default)]
pub struct ClockCodec;

async fn read_time<T: AsyncRead + Unpin + Send>(io: &mut T) -> io::Result<ClockTime> {
    let mut bytes = [0u8; 8];
    io.read_exact(&mut bytes).await?;
    Ok(ClockTime(u64::from_be_bytes(bytes)))
}

async fn write_time<T: AsyncWrite + Unpin + Send>(io: &mut T, time: ClockTime) -> io::Result<()> {
    io.write_all(&time.0.to_be_bytes()).await?;
    io.close().await
}

impl request_response::Codec for ClockCodec {
    type Protocol = StreamProtocol;
    type Request = ClockTime;
    type Response = ClockTime;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<ClockTime>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_time(io).await
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<ClockTime>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_time(io).await
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        request: ClockTime,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_time(io, request).await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        response: ClockTime,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_time(io, response).await
    }
}

/// The peer's clock minus ours, in milliseconds, from one exchange: we
/// asked at `sent` and had its answer `peer` at `received` (our clock); the
/// answer is taken to be read half-way through the round trip, as NTP does.
pub fn offset_ms(sent: u64, peer: u64, received: u64) -> i64 {
    let midpoint = sent / 2 + received / 2 + (sent % 2 + received % 2) / 2;
    let difference = i128::from(peer) - i128::from(midpoint);
    difference.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_is_measured_from_the_round_trip_midpoint() {
        // Peer 2 minutes ahead, 40 ms round trip.
        assert_eq!(offset_ms(1_000_000, 1_120_020, 1_000_040), 120_000);
        // Peer behind.
        assert_eq!(offset_ms(1_000_000, 990_010, 1_000_020), -10_000);
        // Extremes do not overflow.
        assert_eq!(offset_ms(0, u64::MAX, 0), i64::MAX);
        assert_eq!(offset_ms(u64::MAX, 0, u64::MAX), i64::MIN);
    }
}
