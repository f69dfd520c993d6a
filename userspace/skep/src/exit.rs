//! The exit codes `skep` documents, and which error maps to which.

use skep_datapath::{DatapathError, preflight::PreflightError};

/// `skep`'s exit codes. 2 is clap's for a bad command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum ExitCode {
    /// Success.
    Ok = 0,
    /// Anything else went wrong at run time.
    Failure = 1,
    /// This host cannot run skep as it is (not root, no BTF, no bpffs, no
    /// cgroup v2, a kernel without the hooks).
    HostNotReady = 3,
}

impl ExitCode {
    /// The exit code for an error that reached `main`.
    pub fn of(err: &anyhow::Error) -> Self {
        let host_not_ready = err.chain().any(|cause| {
            cause.is::<PreflightError>()
                || matches!(
                    cause.downcast_ref::<DatapathError>(),
                    Some(DatapathError::Preflight(_) | DatapathError::ProgramLoad { .. })
                )
        });
        if host_not_ready {
            Self::HostNotReady
        } else {
            Self::Failure
        }
    }
}

impl From<ExitCode> for std::process::ExitCode {
    fn from(code: ExitCode) -> Self {
        Self::from(code as u8)
    }
}
