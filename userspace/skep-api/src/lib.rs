//! Kubernetes-compatible API machinery for skep: the resource registry,
//! request decoding, admission (typed check, pruning, strict field validation,
//! defaulting, validation), label and field selectors, patches, Table printing
//! and `Status` errors. Pure functions: no HTTP and no storage.
//!
//! Every per-kind rule (defaults, validation, printer columns, field
//! selectors, patch merge keys, delete rules) lives in one module per kind
//! under [`kinds`], behind the [`Strategy`] trait; the generic code below
//! drives from the [`ResourceInfo`] a request resolves to.
//!
//! How the API server uses it, per request:
//! - route: [`registry::by_plural`] (URL) / [`registry::by_kind`] (body);
//!   discovery documents from [`registry`];
//! - create (`POST`): [`decode::decode`] (JSON, YAML, or protobuf via
//!   [`protobuf::decode`]) → [`admission::admit_create`] →
//!   [`apply::record_update`] (managedFields) → store;
//! - update (`PUT`): decode → [`admission::admit_update`] (or
//!   `admit_status_update` / `admit_scale_update`) → `record_update` → store,
//!   compare-and-swap on [`admission::Admitted::precondition`];
//! - patch: [`patch::apply_patch`] on the stored object, then `admit_update`
//!   with the result; server-side apply: decode the YAML, [`apply::apply`],
//!   then `admit_create`/`admit_update`;
//! - read: [`object::set_resource_version`], [`object::wrap_list`],
//!   [`selector::LabelSelector`]/[`selector::FieldSelector`] to filter, and
//!   [`table::table`] for `Accept: …;as=Table`;
//! - delete: [`delete::prepare_delete`] (Remove / Update with deletionTimestamp /
//!   Unchanged), and after updates [`delete::ready_to_remove`];
//! - errors: every failure is an [`ApiError`]; answer with
//!   [`ApiError::code`] and [`ApiError::to_status`].
#![deny(missing_docs)]
#![expect(
    clippy::doc_markdown,
    reason = "Kubernetes kind names (ConfigMap, ReplicaSet, …) are plain words in these docs"
)]

pub mod admission;
pub mod apply;
pub mod decode;
pub mod defaults;
pub mod delete;
pub mod field;
pub mod fieldcheck;
pub mod kinds;
pub mod object;
pub mod patch;
pub mod protobuf;
pub mod query;
pub mod registry;
pub mod selector;
pub mod service_alloc;
pub mod status;
pub mod table;
pub mod typed;
pub mod validation;

pub use field::{FieldError, FieldErrorType, FieldPath};
pub use kinds::Strategy;
pub use registry::{Registry, ResourceInfo};
pub use status::{ApiError, StatusReason};
