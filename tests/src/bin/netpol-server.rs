//! The `NetworkPolicy` e2e suite's pod server (upstream runs `agnhost
//! serve-hostname` for this): serves one port over TCP or UDP and answers
//! every connection or datagram with the name it was given, so a probe knows
//! which pod it reached.
//!
//! `netpol-server tcp|udp PORT NAME`. Standard library only: the lab image
//! carries this binary plus the shared libraries `ldd` lists for it.

use std::io::Write as _;
use std::net::{Ipv4Addr, TcpListener, UdpSocket};
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [proto, port, name] = args.as_slice() else {
        eprintln!("usage: netpol-server tcp|udp PORT NAME");
        return ExitCode::from(2);
    };
    let Ok(port) = port.parse::<u16>() else {
        eprintln!("netpol-server: invalid port {port:?}");
        return ExitCode::from(2);
    };
    let answer = format!("{name}\n");
    let result = match proto.as_str() {
        "tcp" => serve_tcp(port, &answer),
        "udp" => serve_udp(port, &answer),
        other => {
            eprintln!("netpol-server: unknown protocol {other:?} (tcp or udp)");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("netpol-server: failed to serve {proto} port {port}: {err}");
            ExitCode::FAILURE
        }
    }
}

/// Accepts forever; each connection gets the answer and is closed.
fn serve_tcp(port: u16, answer: &str) -> std::io::Result<()> {
    let listener = TcpListener::bind((Ipv4Addr::UNSPECIFIED, port))?;
    // A client that went away before the answer is not the server's error.
    for mut conn in listener.incoming().flatten() {
        let _ = conn.write_all(answer.as_bytes());
    }
    Ok(())
}

/// Answers each datagram to its sender.
fn serve_udp(port: u16, answer: &str) -> std::io::Result<()> {
    let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, port))?;
    let mut buf = [0u8; 512];
    loop {
        let (_, peer) = socket.recv_from(&mut buf)?;
        let _ = socket.send_to(answer.as_bytes(), peer);
    }
}
