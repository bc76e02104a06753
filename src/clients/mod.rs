//! Connections to MongoDB and Kafka built from the configuration. Every pipeline and every
//! integration test builds its clients here, so they all see the same settings.

pub mod error;
pub mod kafka;
pub mod mongo;

pub use self::error::ClientError;
