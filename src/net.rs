//! Listening sockets as nats-server opens them.

use tokio::net::TcpListener;

/// Binds a listener. The host `0.0.0.0` means every address, IPv6 as well as IPv4, as it does
/// for nats-server: one dual-stack socket where the system has IPv6, else IPv4 only.
pub(crate) async fn bind(host: &str, port: u16) -> std::io::Result<TcpListener> {
    if host == "0.0.0.0" {
        match bind_dual_stack(port) {
            Ok(l) => return Ok(l),
            Err(e) => tracing::debug!("no IPv6 listener ({e}); listening on IPv4 only"),
        }
    }
    TcpListener::bind((host, port)).await
}

fn bind_dual_stack(port: u16) -> std::io::Result<TcpListener> {
    let socket = tokio::net::TcpSocket::new_v6()?;
    #[cfg(unix)]
    {
        use std::os::fd::AsRawFd;
        let off: libc::c_int = 0;
        // SAFETY: setsockopt on a socket this function owns, with a c_int option value.
        let rc = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::IPPROTO_IPV6,
                libc::IPV6_V6ONLY,
                &off as *const libc::c_int as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    socket.set_reuseaddr(true)?;
    socket.bind(std::net::SocketAddr::from((
        std::net::Ipv6Addr::UNSPECIFIED,
        port,
    )))?;
    socket.listen(1024)
}

/// How a bound listener is shown: `host:port` as configured (`0.0.0.0:4222` for every address,
/// as nats-server logs it), with the port it got.
pub(crate) fn shown(host: &str, addr: std::net::SocketAddr) -> String {
    if host == "0.0.0.0" {
        format!("0.0.0.0:{}", addr.port())
    } else {
        addr.to_string()
    }
}
