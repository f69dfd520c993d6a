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

mod metrics;
mod packet;

use aya_ebpf::{bindings::TC_ACT_OK, macros::classifier, programs::TcContext};
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
