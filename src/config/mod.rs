//! The typed configuration: one TOML file plus `MKB__` environment overrides.
//!
//! Every field's doc comment is the reference for that key (the configuration reference,
//! `docs/configuration.md`, is written from them). Defaults live in the `default_*`
//! functions of the section's file and nowhere else; checks that serde cannot express live in
//! [`validate`].

mod diff;
mod env;
mod format;
pub mod import_connect;
mod load;
pub mod namespace_map;
mod registry;
mod root;
mod secrets;
mod sink;
mod source;
mod validate;
mod violation;

pub use diff::{pipeline_names, ConfigDiff};
pub use format::{OutputFormat, SubjectNameStrategy};
pub use load::{load, load_str, ConfigError};
pub use registry::{
    ca_certificates, client_identity, json_schema_validator, RegistryAddress, SchemaRegistryConfig,
};
pub use root::*;
pub use secrets::masked;
pub use sink::*;
pub use source::*;
pub use validate::{validate, warnings};
pub use violation::Violation;
