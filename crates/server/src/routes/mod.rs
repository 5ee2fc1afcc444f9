//! The v1 routes, one module per resource. Each handler is annotated for the
//! OpenAPI document, which is built from the same registrations as the router
//! (see `crate::app`), so the document and the routes cannot drift apart.

pub mod admin;
pub mod alerts;
pub mod events;
pub mod keys;
pub mod keyspaces;
pub mod lifecycle;
pub mod ops;
