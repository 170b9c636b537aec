//! The node's media port: one UDP port shared by every shard, and batched
//! I/O on it.
//!
//! Each shard has a socket of its own bound to the same address with
//! `SO_REUSEPORT`; the kernel hands every datagram of one remote address to
//! the same socket. A shard reads a batch per system call (`recvmmsg`, with
//! GRO where the kernel offers it: quinn-udp) and writes a batch per system
//! call (`sendmmsg`): a packet fanned out to N subscribers costs one call,
//! not N. Sending from any of the group's sockets leaves from the shared
//! port, so a shard answers every peer from its own socket.
//!
//! What cannot be written yet (the socket's buffer is full) waits in a
//! queue bounded in bytes ([`SEND_QUEUE_BYTES`]); past it the oldest
//! datagrams are dropped and counted: UDP media would rather lose a packet
//! than deliver it late.

use bytes::BytesMut;
use std::collections::VecDeque;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;

/// Datagrams per `sendmmsg` (the kernel caps a call at 1024).
pub const SEND_BATCH: usize = 64;

/// Bytes waiting to be sent, per shard.
pub const SEND_QUEUE_BYTES: usize = 4 << 20;

/// Socket buffers asked of the kernel (it may give less: `net.core.rmem_max`).
const SOCKET_BUFFER: usize = 4 << 20;

/// The largest datagram read; WebRTC keeps under ~1200-1500 bytes.
const MAX_DATAGRAM: usize = 2048;

/// `count` sockets sharing `address` (port 0: one the kernel picks, the
/// same for all).
pub fn bind(address: SocketAddr, count: usize) -> io::Result<Vec<std::net::UdpSocket>> {
    let mut sockets = Vec::with_capacity(count);
    let mut address = address;
    for _ in 0..count.max(1) {
        let socket = socket2::Socket::new(socket2::Domain::for_address(address), socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
        socket.set_reuse_port(true)?;
        socket.set_nonblocking(true)?;
        // Best effort: the kernel's limits apply.
        let _ = socket.set_recv_buffer_size(SOCKET_BUFFER);
        let _ = socket.set_send_buffer_size(SOCKET_BUFFER);
        socket.bind(&address.into())?;
        let socket: std::net::UdpSocket = socket.into();
        // The rest of the group binds to the port the first one got.
        address = socket.local_addr()?;
        sockets.push(socket);
    }
    Ok(sockets)
}

/// One shard's socket.
pub struct MediaSocket {
    pub socket: mio::net::UdpSocket,
    state: quinn_udp::UdpSocketState,
    pub local: SocketAddr,
    buffers: Vec<Vec<u8>>,
    metas: Vec<quinn_udp::RecvMeta>,
}

impl MediaSocket {
    pub fn new(socket: std::net::UdpSocket) -> io::Result<MediaSocket> {
        let local = socket.local_addr()?;
        let state = quinn_udp::UdpSocketState::new((&socket).into())?;
        let gro = state.gro_segments();
        let batch = quinn_udp::BATCH_SIZE;
        Ok(MediaSocket {
            socket: mio::net::UdpSocket::from_std(socket),
            state,
            local,
            buffers: (0..batch).map(|_| vec![0; MAX_DATAGRAM * gro]).collect(),
            metas: vec![quinn_udp::RecvMeta::default(); batch],
        })
    }

    /// Reads one batch; `each` gets every datagram (GRO runs split). Ok(0)
    /// when nothing is waiting.
    pub fn recv(&mut self, mut each: impl FnMut(SocketAddr, &[u8])) -> io::Result<usize> {
        let mut slices: Vec<IoSliceMut<'_>> = self.buffers.iter_mut().map(|b| IoSliceMut::new(b)).collect();
        let n = match self.state.recv((&self.socket).into(), &mut slices, &mut self.metas) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(0),
            Err(e) => return Err(e),
        };
        let mut datagrams = 0;
        for (meta, buffer) in self.metas.iter().zip(&self.buffers).take(n) {
            let stride = meta.stride.max(1);
            for datagram in buffer[..meta.len.min(buffer.len())].chunks(stride) {
                each(meta.addr, datagram);
                datagrams += 1;
            }
        }
        Ok(datagrams)
    }

    /// Sends what `queue` holds, a batch per call, until it is empty or the
    /// socket is full (the rest stays queued).
    pub fn flush(&self, queue: &mut SendQueue) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        let fd = self.socket.as_raw_fd();
        while !queue.datagrams.is_empty() {
            let batch = queue.datagrams.len().min(SEND_BATCH);
            let addresses: Vec<socket2::SockAddr> = queue.datagrams.iter().take(batch).map(|(to, _)| (*to).into()).collect();
            let mut iovecs: Vec<libc::iovec> = queue
                .datagrams
                .iter()
                .take(batch)
                .map(|(_, d)| libc::iovec { iov_base: d.as_ptr() as *mut libc::c_void, iov_len: d.len() })
                .collect();
            // SAFETY: mmsghdr is plain data; all-zero is a valid empty header.
            let mut headers: Vec<libc::mmsghdr> = (0..batch).map(|_| unsafe { std::mem::zeroed() }).collect();
            for ((header, address), iovec) in headers.iter_mut().zip(&addresses).zip(iovecs.iter_mut()) {
                header.msg_hdr.msg_name = address.as_ptr() as *mut libc::c_void;
                header.msg_hdr.msg_namelen = address.len();
                header.msg_hdr.msg_iov = iovec;
                header.msg_hdr.msg_iovlen = 1;
            }
            // SAFETY: `headers` points into `addresses`, `iovecs` and the
            // queued datagrams, all alive and unmoved until the call returns.
            let sent = unsafe { libc::sendmmsg(fd, headers.as_mut_ptr(), batch as libc::c_uint, 0) };
            if sent < 0 {
                let e = io::Error::last_os_error();
                return match e.kind() {
                    io::ErrorKind::WouldBlock => Ok(()),
                    io::ErrorKind::Interrupted => continue,
                    // One bad destination (unreachable, refused) must not
                    // stall the rest: it goes, counted.
                    _ => {
                        queue.drop_front(1);
                        queue.failed += 1;
                        continue;
                    }
                };
            }
            queue.sent += sent as u64;
            queue.drop_front(sent as usize);
        }
        Ok(())
    }
}

/// Datagrams a shard has to send, bounded in bytes.
#[derive(Default)]
pub struct SendQueue {
    datagrams: VecDeque<(SocketAddr, BytesMut)>,
    bytes: usize,
    /// Dropped because the queue was full (the socket could not keep up).
    pub dropped: u64,
    /// Refused by the kernel (an unreachable destination).
    pub failed: u64,
    pub sent: u64,
}

impl SendQueue {
    pub fn push(&mut self, to: SocketAddr, datagram: BytesMut) {
        self.bytes += datagram.len();
        self.datagrams.push_back((to, datagram));
        while self.bytes > SEND_QUEUE_BYTES {
            self.drop_front(1);
            self.dropped += 1;
        }
    }

    pub fn is_empty(&self) -> bool {
        self.datagrams.is_empty()
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    fn drop_front(&mut self, n: usize) {
        for (_, d) in self.datagrams.drain(..n.min(self.datagrams.len())) {
            self.bytes -= d.len();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_shares_one_port_and_sends_a_batch_per_call() {
        let sockets = bind("127.0.0.1:0".parse().unwrap(), 2).unwrap();
        let port = sockets[0].local_addr().unwrap().port();
        assert_eq!(sockets[1].local_addr().unwrap().port(), port);
        let sender = MediaSocket::new(sockets.into_iter().next().unwrap()).unwrap();
        let receivers: Vec<std::net::UdpSocket> = (0..3).map(|_| std::net::UdpSocket::bind("127.0.0.1:0").unwrap()).collect();
        let mut queue = SendQueue::default();
        for (i, r) in receivers.iter().enumerate() {
            queue.push(r.local_addr().unwrap(), BytesMut::from(&[i as u8; 100][..]));
        }
        sender.flush(&mut queue).unwrap();
        assert!(queue.is_empty());
        assert_eq!(queue.sent, 3);
        for (i, r) in receivers.iter().enumerate() {
            let mut buf = [0u8; 200];
            let (n, from) = r.recv_from(&mut buf).unwrap();
            assert_eq!((n, buf[0], from.port()), (100, i as u8, port));
        }
    }

    #[test]
    fn a_full_queue_drops_its_oldest() {
        let mut queue = SendQueue::default();
        let to: SocketAddr = "127.0.0.1:9".parse().unwrap();
        for _ in 0..(SEND_QUEUE_BYTES / 1000 + 10) {
            queue.push(to, BytesMut::from(&[0u8; 1000][..]));
        }
        assert!(queue.bytes() <= SEND_QUEUE_BYTES);
        assert_eq!(queue.dropped, 10);
    }
}
