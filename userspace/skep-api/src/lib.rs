//! Kubernetes-compatible API machinery for skep: the resource registry,
//! request decoding, admission (typed check, pruning, strict field validation,
//! defaulting, validation), label and field selectors, patches, Table printing
//! and `Status` errors. Pure functions: no HTTP and no storage.
#![deny(missing_docs)]

pub mod decode;
pub mod defaults;
pub mod field;
pub mod object;
pub mod registry;
pub mod status;
pub mod typed;

pub use field::{FieldError, FieldErrorType, FieldPath};
pub use registry::{Kind, ResourceInfo};
pub use status::{ApiError, StatusReason};
