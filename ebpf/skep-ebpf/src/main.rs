//! The skep eBPF programs. Each program is a thin entry point that calls a
//! `try_*` function returning `Result<i32, i32>`; the logic lives in modules
//! shared by programs.
#![no_std]
#![no_main]
#![allow(
    clippy::needless_pass_by_value,
    reason = "aya-ebpf's entry-point macros hand the context over by value"
)]
#![allow(
    clippy::inline_always,
    reason = "helpers are inlined into each program: fewer BPF-to-BPF calls, simpler verification"
)]

mod conntrack;
mod metrics;
mod nodeport;
mod packet;
mod policy;
mod route;
mod sock_lb;

use aya_ebpf::{
    bindings::TC_ACT_OK,
    macros::{cgroup_sock_addr, classifier},
    programs::{SockAddrContext, TcContext},
};
use skep_ebpf_common::Direction;

/// Counts every packet entering the interface it is attached to; never drops.
#[classifier]
pub fn skep_metrics_ingress(ctx: TcContext) -> i32 {
    metrics::count(&ctx, Direction::Ingress);
    TC_ACT_OK
}

/// Counts every packet leaving the interface it is attached to; never drops.
#[classifier]
pub fn skep_metrics_egress(ctx: TcContext) -> i32 {
    metrics::count(&ctx, Direction::Egress);
    TC_ACT_OK
}

/// Routes a packet a pod sends (TC ingress on its host-side veth): a local
/// `NodePort` backend's reply translated back, else straight into a pod on
/// this node, or out by the node's routes, or to the stack.
#[classifier]
pub fn skep_pod_ingress(mut ctx: TcContext) -> i32 {
    route::pod_ingress(&mut ctx)
}

/// A packet arriving on the node's underlay device: `NodePort`/`externalIPs`
/// DNAT (+ SNAT for backends elsewhere) and tracked replies, else straight
/// into a pod on this node, else the stack.
#[classifier]
pub fn skep_underlay_ingress(mut ctx: TcContext) -> i32 {
    route::underlay_ingress(&mut ctx)
}

/// Sends a connection to a service address to one of its backends instead.
#[cgroup_sock_addr(connect4)]
pub fn skep_sock_connect4(ctx: SockAddrContext) -> i32 {
    sock_lb::try_forward(&ctx).unwrap_or_else(|ret| ret)
}

/// Sends an unconnected UDP datagram to a service address to a backend instead.
#[cgroup_sock_addr(sendmsg4)]
pub fn skep_sock_sendmsg4(ctx: SockAddrContext) -> i32 {
    sock_lb::try_forward(&ctx).unwrap_or_else(|ret| ret)
}

/// Shows the service address as the source of a backend's UDP reply.
#[cgroup_sock_addr(recvmsg4)]
pub fn skep_sock_recvmsg4(ctx: SockAddrContext) -> i32 {
    sock_lb::try_reverse(&ctx).unwrap_or(sock_lb::SOCK_ALLOW)
}

/// Shows the service address as the peer of a socket connected to a backend.
#[cgroup_sock_addr(getpeername4)]
pub fn skep_sock_getpeername4(ctx: SockAddrContext) -> i32 {
    sock_lb::try_reverse(&ctx).unwrap_or(sock_lb::SOCK_ALLOW)
}

/// The kernel requires a GPL-compatible license for several helpers
/// (`bpf_redirect_peer`, `bpf_fib_lookup`, …) the datapath uses.
#[no_mangle]
#[link_section = "license"]
pub static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // SAFETY: the verifier rejects any program in which a panic is reachable,
    // so this can never run.
    unsafe { core::hint::unreachable_unchecked() }
}
