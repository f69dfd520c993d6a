//! Kubernetes-compatible API machinery for skep: the resource registry,
//! request decoding, admission (typed check, pruning, strict field validation,
//! defaulting, validation), label and field selectors, patches, Table printing
//! and `Status` errors. Pure functions: no HTTP and no storage.
#![deny(missing_docs)]
#![expect(
    clippy::doc_markdown,
    reason = "Kubernetes kind names (ConfigMap, ReplicaSet, …) are plain words in these docs"
)]

pub mod admission;
pub mod apply;
pub mod decode;
pub mod defaults;
pub mod field;
pub mod fieldcheck;
pub mod object;
pub mod patch;
pub mod registry;
pub mod selector;
pub mod status;
pub mod table;
pub mod typed;
pub mod validation;

pub use field::{FieldError, FieldErrorType, FieldPath};
pub use registry::{Kind, ResourceInfo};
pub use status::{ApiError, StatusReason};
